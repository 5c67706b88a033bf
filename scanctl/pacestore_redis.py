"""The shared send schedule in Redis: one budget for every machine that points at it.

Machines' clocks differ (by seconds, on hosts without NTP), so no client clock ever enters the
schedule: one Lua script reads Redis's own `TIME`, refreshes this member's row, drops members
whose rows expired, finds the rate in force (the leader's view: `pacestore.in_force`), and
reserves `count` slots of GCRA at that rate. It answers with how long from now the first slot
is: a caller waits for its slot rather than being refused and retrying (a refusing limiter's
callers poll, and polling callers arrive in bursts). One round trip per reservation; the script
is cached by its SHA.

Keys (per scope; `scope_key` hashes the credential, so no key appears in Redis):
`scanctl:pace:<scope>:tat` (the theoretical arrival time, µs of Redis time), `...:members` (a
hash: member -> "expiry_µs joined_µs discovering view"), `...:gate` ("µs member": when the gate
opens, and whose it is), `...:hold` (the end of a hold, µs of Redis time), `...:refused` and
`...:admitted` (429s and admitted answers the members that follow reported), and
`scanctl:pace:learned:<scope type>`. All expire on their own when no process uses them."""

from __future__ import annotations

import json
from typing import Any

from scanctl.cache import mask_url
from scanctl.pacestore import (
    MAX_AHEAD,
    MEMBER_TTL,
    Grant,
    Member,
    PacingStoreError,
    ScopeState,
    _states,
    in_force,
)

PREFIX = "scanctl:pace:"
LEARNED_TTL = 30 * 86400  # seconds a learned rate is kept without a run refreshing it
SOCKET_TIMEOUT = 1.0  # a store slower than this is down: the run paces itself

# KEYS: tat, members, hold, gate, refused, admitted. ARGV: member, count, ttl (µs), max_ahead
# (µs), view ('' for none), discovering ('1' or '0'), refused and admitted (answers since it last
# said). Returns {wait µs, interval µs, count, rate ('' for none), live, hold µs, gate µs (0 when
# the gate is the member's own), leads, discovering, refused in all, admitted in all} as strings
# (a Lua number becomes a Redis integer, losing its fraction). Members: member -> "expiry_µs
# joined_µs discovering view"; the leader is the live member that joined first
# (`pacestore.in_force`).
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local refused = tostring(redis.call('INCRBY', KEYS[5], ARGV[7]))
redis.call('PEXPIRE', KEYS[5], 3600000)
local admitted = tostring(redis.call('INCRBY', KEYS[6], ARGV[8]))
redis.call('PEXPIRE', KEYS[6], 3600000)
local joined = now
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if mine then
  local since = string.match(mine, '^%S+ (%S+) %S+')
  if since then joined = tonumber(since) end
end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f %.0f %s %s',
  now + tonumber(ARGV[3]), joined, ARGV[6], ARGV[5]))
local all = redis.call('HGETALL', KEYS[2])
local live, views, sum = 0, 0, 0
local lead, lead_joined, lead_view, lead_finding = nil, 0, '', '0'
for i = 1, #all, 2 do
  local exp, since, finding, view = string.match(all[i + 1], '^(%S+) (%S+) (%S+) ?(%S*)$')
  if not exp or tonumber(exp) <= now then
    redis.call('HDEL', KEYS[2], all[i])
  else
    live = live + 1
    if view ~= '' then views = views + 1; sum = sum + tonumber(view) end
    local j = tonumber(since)
    if lead == nil or j < lead_joined or (j == lead_joined and all[i] < lead) then
      lead, lead_joined, lead_view, lead_finding = all[i], j, view, finding
    end
  end
end
redis.call('PEXPIRE', KEYS[2], 60000)
local leads = '0'
if lead == ARGV[1] then leads = '1' end
local opens = tonumber(redis.call('GET', KEYS[3]) or '0')
local hold = string.format('%.0f', math.max(0, opens - now))
local gate = '0'
local closed = redis.call('GET', KEYS[4])
if closed then
  local ends, by = string.match(closed, '^(%S+) (.*)$')
  if by ~= ARGV[1] then gate = string.format('%.0f', math.max(0, tonumber(ends) - now)) end
end
local count = tonumber(ARGV[2])
local rate
if lead_view ~= '' then rate = tonumber(lead_view) elseif views > 0 then rate = sum / views end
if rate == nil then
  return {'0', '0', '0', '', tostring(live), hold, gate, leads, lead_finding, refused, admitted}
end
if count <= 0 then
  return {'0', '0', '0', string.format('%.17g', rate), tostring(live), hold, gate, leads,
    lead_finding, refused, admitted}
end
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now or tat > now + tonumber(ARGV[4]) then tat = now end
if tat < opens then tat = math.min(opens, now + tonumber(ARGV[4])) end
local after = tat + count * interval
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX',
  math.floor((after - now) / 1000) + 60000)
return {string.format('%.3f', tat - now), string.format('%.3f', interval), tostring(count),
  string.format('%.17g', rate), tostring(live), hold, gate, leads, lead_finding, refused,
  admitted}
"""

# KEYS: hold. ARGV: seconds (µs). Extends the hold to Redis's now + seconds, never shortens it.
HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local opens = now + tonumber(ARGV[1])
if opens > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', opens), 'PX',
    math.floor(tonumber(ARGV[1]) / 1000) + 60000)
end
return 1
"""

# KEYS: gate. ARGV: seconds (µs), member. Extends the gate to Redis's now + seconds, as member's.
CLOSE_GATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ends = now + tonumber(ARGV[1])
local closed = redis.call('GET', KEYS[1])
if not closed or ends > tonumber(string.match(closed, '^(%S+)')) then
  redis.call('SET', KEYS[1], string.format('%.0f', ends) .. ' ' .. ARGV[2], 'PX',
    math.floor(tonumber(ARGV[1]) / 1000) + 60000)
end
return 1
"""


class RedisPacingStore:
    """`PacingStore` on a Redis server (`redis://host:port/db`); see the module docstring."""

    kind = "redis"

    def __init__(self, url: str) -> None:
        self.location = mask_url(url)
        try:
            import redis
        except ImportError as exc:
            raise PacingStoreError(
                "--pacing-store redis:// needs the redis extra: pip install 'scanctl[redis]'"
            ) from exc
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
            )
            self._script = self._redis.register_script(RESERVE)
            self._hold = self._redis.register_script(HOLD)
            self._close_gate = self._redis.register_script(CLOSE_GATE)
            self._redis.ping()
        except (*self._errors, ValueError) as exc:
            raise PacingStoreError(f"cannot reach the pacing store {self.location}: {exc}") from exc

    def _fail(self, exc: Exception) -> PacingStoreError:
        return PacingStoreError(f"pacing store {self.location}: {exc}")

    def reserve(
        self,
        scope: str,
        member: str,
        count: int,
        view: float | None,
        discovering: bool = False,
        refused: int = 0,
        admitted: int = 0,
    ) -> Grant:
        names = ("tat", "members", "hold", "gate", "refused", "admitted")
        keys = [f"{PREFIX}{scope}:{name}" for name in names]
        args: list[str | int] = [
            member,
            count,
            int(MEMBER_TTL * 1e6),
            int(MAX_AHEAD * 1e6),
            "" if view is None else repr(view),
            "1" if discovering else "0",
            refused,
            admitted,
        ]
        try:
            answer = self._script(keys=keys, args=args)
            wait, interval, got, rate, live, hold, gate, leads, finding, told, heard = answer
        except self._errors as exc:
            raise self._fail(exc) from exc
        return Grant(
            float(wait) / 1e6,
            float(interval) / 1e6,
            int(got),
            float(rate) if rate else None,
            int(live),
            float(hold) / 1e6,
            float(gate) / 1e6,
            leads == b"1" or leads == "1",
            finding == b"1" or finding == "1",
            int(told),
            int(heard),
        )

    def close_gate(self, scope: str, member: str, seconds: float) -> None:
        try:
            self._close_gate(keys=[f"{PREFIX}{scope}:gate"], args=[int(seconds * 1e6), member])
        except self._errors as exc:
            raise self._fail(exc) from exc

    def hold(self, scope: str, seconds: float) -> None:
        try:
            self._hold(keys=[f"{PREFIX}{scope}:hold"], args=[int(seconds * 1e6)])
        except self._errors as exc:
            raise self._fail(exc) from exc

    def leave(self, scope: str, member: str) -> None:
        try:
            self._redis.hdel(f"{PREFIX}{scope}:members", member)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def learned(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(f"{PREFIX}learned:{key}")
        except self._errors as exc:
            raise self._fail(exc) from exc
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def remember(self, key: str, pace: dict[str, Any]) -> None:
        try:
            self._redis.set(f"{PREFIX}learned:{key}", json.dumps(pace), ex=LEARNED_TTL)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def states(self) -> list[ScopeState]:
        """Live members, schedules and learned rates, read with Redis's clock."""
        try:
            seconds, micros = self._redis.time()
            now = seconds * 1_000_000 + micros
            members: dict[str, tuple[int, float | None]] = {}
            tats: dict[str, float] = {}
            learned: list[tuple[str, str]] = []
            for name in self._redis.scan_iter(match=f"{PREFIX}*", count=500):
                key = _text(name)[len(PREFIX) :]
                if key.startswith("learned:"):
                    raw = self._redis.get(name)
                    if raw is not None:
                        learned.append((key[len("learned:") :], _text(raw)))
                elif key.endswith(":members"):
                    live = [
                        Member(_text(m), float(row[1]), float(row[3]) if len(row) > 3 else None)
                        for m, v in self._redis.hgetall(name).items()
                        if len(row := _text(v).split()) >= 3 and float(row[0]) > now
                    ]
                    members[key[: -len(":members")]] = (len(live), in_force(live)[0])
                elif key.endswith(":tat"):
                    raw = self._redis.get(name)
                    if raw is not None:
                        tats[key[: -len(":tat")]] = float(raw) / 1e6
        except self._errors as exc:
            raise self._fail(exc) from exc
        return _states(now / 1e6, members, tats, learned)

    def close(self) -> None:
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
