"""The shared send schedule (issue 14): the stores' contract, and the meter the pacer uses.

Local and SQLite stores take their clock from the test (moved by hand); Redis reads its own
(`TIME`), so its checks use only what one reservation says about the next.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from scanctl.clock import FakeClock
from scanctl.pacestore import (
    MEMBER_TTL,
    Grant,
    LocalPacingStore,
    PacingStore,
    PacingStoreError,
    SqlitePacingStore,
    open_pacing_store,
    scope_key,
)
from scanctl.pacing import (
    LEADER_WAIT,
    NO_LIMIT_PROOF,
    Feedback,
    Following,
    Pacer,
    UpstreamBanned,
)
from scanctl.ratecontrol import BLOCK_AFTER, PAUSE_FIRST, LearnedPace
from scanctl.resilience import CircuitBreaker
from scanctl.sharedpace import SharedMeter


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """(store, clock or None): each backend, empty; Redis keeps its own clock."""
    clock = HandClock()
    if request.param == "local":
        yield LocalPacingStore(now=clock), clock
    elif request.param == "sqlite":
        opened = SqlitePacingStore(tmp_path / "pacing.sqlite3", now=clock)
        yield opened, clock
        opened.close()
    else:
        url = request.getfixturevalue("redis_url")
        import redis

        redis.Redis.from_url(url).flushdb()
        from scanctl.pacestore_redis import RedisPacingStore

        opened = RedisPacingStore(url)
        yield opened, None
        opened.close()


def test_slots_follow_one_schedule_whoever_reserves(store: Any) -> None:
    """Two members reserving from one scope get consecutive slots at the rate in force."""
    shared, _ = store
    first = shared.reserve("s", "a", 3, 50.0)
    assert (first.count, first.interval, first.rate, first.processes) == (3, 0.02, 50.0, 1)
    assert first.wait == pytest.approx(0.0, abs=0.002)
    second = shared.reserve("s", "b", 2, 50.0)
    assert second.processes == 2
    # b's first slot is after a's three: 3 x 20 ms (less what passed in between, for Redis).
    assert second.wait == pytest.approx(0.06, abs=0.003)
    other = shared.reserve("t", "a", 1, 10.0)  # another scope has its own schedule
    assert other.wait == pytest.approx(0.0, abs=0.002) and other.processes == 1


def test_the_leader_decides_the_rate_in_force(store: Any) -> None:
    """The member that joined first leads: its view is the rate in force, whatever the others
    say; with no view of its own (just taken over, or still discovering) the others' mean."""
    shared, _ = store
    assert shared.reserve("s", "a", 0, None) == Grant(0.0, 0.0, 0, None, 1)
    assert shared.reserve("s", "a", 1, None).count == 0  # no view: nothing to pace at
    shared.reserve("s", "a", 0, 40.0)
    grant = shared.reserve("s", "b", 1, 60.0)
    assert grant.rate == pytest.approx(40.0) and grant.interval == pytest.approx(0.025)
    assert not grant.leads and shared.reserve("s", "a", 0, 40.0).leads
    shared.reserve("s", "c", 0, 50.0)
    grant = shared.reserve("s", "a", 0, None)
    assert grant.leads and grant.rate == pytest.approx(55.0)  # (60 + 50) / 2


def test_the_answers_members_report_add_up_per_scope(store: Any) -> None:
    """Each member tells the 429s and admitted answers it had since its last word; every
    grant carries the scope's totals, for the leader to take in what it has not yet."""
    shared, _ = store
    assert (
        shared.reserve("s", "a", 0, 50.0).refused,
        shared.reserve("s", "a", 0, 50.0).admitted,
    ) == (0, 0)
    shared.reserve("s", "b", 0, None, refused=2, admitted=5)
    shared.reserve("s", "c", 1, None, refused=1, admitted=3)
    told = shared.reserve("s", "a", 0, 50.0)
    assert (told.refused, told.admitted) == (3, 8)
    other = shared.reserve("t", "a", 0, 50.0)  # (another scope counts its own)
    assert (other.refused, other.admitted) == (0, 0)


def test_a_discovering_leader_is_told_to_the_others(store: Any) -> None:
    shared, _ = store
    assert shared.reserve("s", "a", 0, None, discovering=True).leads
    assert shared.reserve("s", "b", 0, None).discovering
    shared.reserve("s", "a", 0, 45.0, discovering=False)
    grant = shared.reserve("s", "b", 0, None)
    assert not grant.discovering and grant.rate == pytest.approx(45.0)


def test_the_oldest_member_leads_when_the_leader_leaves(store: Any) -> None:
    shared, clock = store
    shared.reserve("s", "a", 0, 40.0)
    if clock is not None:
        clock.now += 0.001
    shared.reserve("s", "b", 0, 40.0)
    if clock is not None:
        clock.now += 0.001
    shared.reserve("s", "c", 0, 40.0)
    shared.leave("s", "a")
    grant = shared.reserve("s", "c", 0, 40.0)
    assert not grant.leads and grant.processes == 2 and grant.rate == pytest.approx(40.0)
    assert shared.reserve("s", "b", 0, None).leads


def test_a_member_that_leaves_takes_its_view_not_the_schedule(store: Any) -> None:
    shared, _ = store
    shared.reserve("s", "a", 5, 50.0)
    shared.reserve("s", "b", 0, 30.0)
    shared.leave("s", "b")
    grant = shared.reserve("s", "a", 1, 50.0)
    assert grant.processes == 1 and grant.rate == pytest.approx(50.0)
    assert grant.wait == pytest.approx(0.1, abs=0.003)  # after a's five slots


def test_a_silent_member_expires(store: Any) -> None:
    """A process killed with -9 says nothing more: its row is gone after MEMBER_TTL."""
    shared, clock = store
    if clock is None:
        pytest.skip("Redis keeps its own clock (the process tests kill one for real)")
    shared.reserve("s", "dead", 0, 10.0)
    shared.reserve("s", "alive", 0, 50.0)
    clock.now += MEMBER_TTL + 0.01
    grant = shared.reserve("s", "alive", 1, 50.0)
    assert grant.processes == 1 and grant.rate == pytest.approx(50.0)
    assert [(s.scope, s.processes) for s in shared.states()] == [("s", 1)]


def test_an_idle_schedule_does_not_bank_slots(store: Any) -> None:
    shared, clock = store
    if clock is None:
        pytest.skip("needs a clock moved by hand")
    shared.reserve("s", "a", 10, 50.0)
    clock.now += 60.0
    grant = shared.reserve("s", "a", 2, 50.0)
    assert grant.wait == 0.0  # (not a burst of the slots missed: the schedule starts now)
    assert shared.reserve("s", "a", 1, 50.0).wait == pytest.approx(0.04)


def test_a_hold_stops_every_member_until_it_ends(store: Any) -> None:
    """A ban one member reports holds the scope by the store's clock: every reservation says
    how long it has left, and slots start after it; a shorter hold does not shorten it."""
    shared, clock = store
    shared.reserve("s", "a", 1, 50.0)
    shared.hold("s", 2.0)
    shared.hold("s", 0.5)
    grant = shared.reserve("s", "b", 1, 50.0)
    assert grant.hold == pytest.approx(2.0, abs=0.01)
    assert grant.wait == pytest.approx(2.0, abs=0.01)  # its slot comes after the hold
    assert shared.reserve("t", "b", 1, 50.0).hold == 0.0  # another scope is not held
    if clock is not None:
        clock.now += 2.5
        grant = shared.reserve("s", "a", 1, 50.0)
        assert grant.hold == 0.0 and grant.wait == pytest.approx(0.0)


def test_a_gate_holds_the_members_it_was_not_told_to(store: Any) -> None:
    """A Retry-After told to a: the others hear how long the gate has left; a hears nothing
    (its own gate decides, checks included); a longer one told to b makes the gate b's."""
    shared, clock = store
    shared.close_gate("s", "a", 2.0)
    shared.close_gate("s", "a", 1.0)  # (never shortened)
    assert shared.reserve("s", "b", 0, 50.0).gate == pytest.approx(2.0, abs=0.01)
    assert shared.reserve("s", "a", 1, 50.0).gate == 0.0
    assert shared.reserve("t", "b", 0, 50.0).gate == 0.0
    shared.close_gate("s", "b", 3.0)
    assert shared.reserve("s", "a", 0, 50.0).gate == pytest.approx(3.0, abs=0.01)
    assert shared.reserve("s", "b", 0, 50.0).gate == 0.0
    if clock is not None:
        clock.now += 3.5
        assert shared.reserve("s", "a", 0, 50.0).gate == 0.0


def test_learned_rates_and_states(store: Any) -> None:
    shared, _ = store
    assert shared.learned("s mss") is None
    shared.remember("s mss", {"rate": 47.5, "burst": 1})
    assert shared.learned("s mss") == {"rate": 47.5, "burst": 1}
    shared.reserve("s", "a", 2, 50.0)
    (state,) = shared.states()
    assert (state.scope, state.processes, state.rate) == ("s", 1, pytest.approx(50.0))
    assert state.learned == {"mss": {"rate": 47.5, "burst": 1}}
    assert state.ahead == pytest.approx(0.04, abs=0.003)


def test_a_store_file_of_the_previous_version_opens_and_counts(tmp_path: Path) -> None:
    """A `pacing.sqlite3` from before the admitted answers (version 2, a table `refusals`):
    its ephemeral tables are dropped, what was learned stays, and the answers count afresh."""
    path = tmp_path / "pacing.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE members (scope TEXT NOT NULL, member TEXT NOT NULL, view REAL,
                expires REAL NOT NULL, joined REAL NOT NULL,
                discovering INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (scope, member));
            CREATE TABLE refusals (scope TEXT PRIMARY KEY, count INTEGER NOT NULL);
            CREATE TABLE learned (key TEXT PRIMARY KEY, pace TEXT NOT NULL, updated REAL);
            INSERT INTO refusals VALUES ('s', 7);
            INSERT INTO learned VALUES ('s signals', '{"rate": 40.0}', 0);
            PRAGMA user_version = 2;
            """
        )
    store = SqlitePacingStore(path, now=HandClock())
    try:
        told = store.reserve("s", "a", 0, 50.0, refused=1, admitted=2)
        assert (told.refused, told.admitted) == (1, 2)
        assert store.learned("s signals") == {"rate": 40.0}
    finally:
        store.close()


def test_the_scope_names_the_credential_by_a_hash_only() -> None:
    one = scope_key("https://api.example/v1/", {"X-API-Key": "s3cret", "Accept": "json"})
    assert "s3cret" not in one and one.startswith("https://api.example/v1 key:")
    assert one == scope_key("https://api.example/v1", {"x-api-key": "s3cret"})
    assert one != scope_key("https://api.example/v1", {"X-API-Key": "other"})
    assert one != scope_key("https://other.example/v1", {"X-API-Key": "s3cret"})


def test_a_scope_per_endpoint_type_gives_each_type_its_own_budget(store: Any) -> None:
    """[rate_limit] scope = "endpoint": each type its own scope, one type one scope; and a
    learned rate's key ("scope type") still splits into that scope and its type."""
    shared, _ = store
    key = {"X-API-Key": "s3cret"}
    price = scope_key("https://api.example/v1", key, endpoint="price")
    signals = scope_key("https://api.example/v1", key, endpoint="signals")
    assert price == scope_key("https://api.example/v1/", key, endpoint="price")
    assert price != signals
    assert scope_key("https://api.example/v1", key) not in (price, signals)
    assert "s3cret" not in price
    shared.remember(f"{price} price", {"rate": 20.0})
    shared.remember(f"{signals} signals", {"rate": 5.0})
    shared.reserve(price, "a", 1, 20.0)
    found = {state.scope: state.learned for state in shared.states()}
    assert found == {price: {"price": {"rate": 20.0}}, signals: {"signals": {"rate": 5.0}}}


def test_open_pacing_store(tmp_path: Path) -> None:
    assert open_pacing_store("local", tmp_path) is None
    default = open_pacing_store(None, tmp_path)
    assert isinstance(default, SqlitePacingStore)
    assert default.path == tmp_path / "pacing.sqlite3"
    default.close()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PacingStoreError):
        open_pacing_store(str(tmp_path / "file" / "x.sqlite3"), tmp_path / "file")
    with pytest.raises(PacingStoreError, match="cannot reach"):
        open_pacing_store("redis://127.0.0.1:1/0", tmp_path)


def meters(count: int, clock: FakeClock, store: PacingStore | None = None) -> list[SharedMeter]:
    shared = store or LocalPacingStore(now=clock.monotonic)
    warned: list[str] = []
    return [
        SharedMeter(shared, "s", clock, warn=warned.append, member=f"m{i}") for i in range(count)
    ]


def pacers_sharing(clock: FakeClock) -> tuple[SharedMeter, SharedMeter, Pacer, Pacer]:
    """Two joined meters on one schedule, and a fixed-rate pacer over each."""
    a, b = meters(2, clock)
    a.join(), b.join()
    pacers = [Pacer(clock, rate=10.0, adaptive=False, meter=m) for m in (a, b)]
    return a, b, pacers[0], pacers[1]


def test_two_meters_share_one_rate() -> None:
    """Two processes each asking for slots get them at the leader's rate *together*."""
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(), b.join()
    a.beat(None)  # (a learns of b, as its heartbeat would)
    # a leads; its first rate is of its own sends (b sent nothing before it): 50 for all.
    waits = [m.reserve(50.0) for m in (a, b, a, b)]
    assert waits == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert a.processes == b.processes == 2 and b.shared_rate == pytest.approx(50.0)
    assert a.leads and not b.leads


def test_a_joining_meter_starts_at_its_share() -> None:
    clock = FakeClock()
    a, b, c = meters(3, clock)
    assert a.join(48.0) == 48.0  # no rate in force: the learned one becomes it
    assert a.reserve(48.0) == 0.0
    assert b.join(10.0) == pytest.approx(24.0)  # its share of 48 between two
    assert b.shared_rate == pytest.approx(48.0)
    assert c.join() == pytest.approx(16.0)


def test_the_leaders_rate_moves_the_rate_for_all_and_a_followers_does_not() -> None:
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(40.0)
    assert b.join() == pytest.approx(20.0)
    assert a.following(40.0, discovering=False) is None  # a leads
    a.beat(None)  # (and hears of b)
    assert a.rescale() == pytest.approx(0.5)  # its rate is its share of two now: 20
    a.beat(22.0)  # up 10 %
    assert a.view == pytest.approx(44.0)
    b.beat(5.0)  # (a follower's own rate says nothing)
    assert b.shared_rate == pytest.approx(44.0)
    b.beat(5.0)
    assert b.view == pytest.approx(44.0)  # (the rate it follows, as of its last word)
    assert b.following(5.0, discovering=False) == Following(22.0)
    a.beat(15.0)  # a cut: 15 x 2 processes
    assert a.view == pytest.approx(30.0)
    b.beat(None)
    assert b.following(22.0, discovering=False) == Following(15.0)


def test_followers_wait_while_the_leader_discovers() -> None:
    clock = FakeClock()
    a, b = meters(2, clock)
    assert a.join(discover=True) is None and a.discovering
    assert b.join(discover=True) is None and not b.leads
    assert b.following(None, discovering=True) == Following(None, waiting=True)
    assert a.following(None, discovering=True) is None
    a.beat(None)
    a.following(60.0, discovering=False)  # its slow start found a rate
    a.beat(None)
    b.beat(None)
    assert b.following(None, discovering=True) == Following(30.0)


def test_a_leaving_meter_leaves_the_rate_to_the_others() -> None:
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(40.0)
    b.join()
    b.close()
    a.beat(40.0)
    assert a.processes == 1 and a.shared_rate == pytest.approx(40.0)


def test_slots_come_in_batches_at_high_rates() -> None:
    clock = FakeClock()
    (a,) = meters(1, clock)
    a.join()
    for _ in range(200):
        a.reserve(2000.0)
        clock.now += 0.0005
    assert a.reservations == 10  # 20 slots (10 ms) per round trip to the store


def test_stale_slots_are_dropped() -> None:
    clock = FakeClock()
    (a,) = meters(1, clock)
    a.join()
    a.reserve(1000.0)  # takes 10 slots, uses one
    clock.now += 1.0
    assert a.delay(1000.0) == 0.0 and a.reservations == 2  # the old nine were not a burst


def test_a_ban_in_one_meter_holds_the_others_before_their_next_send() -> None:
    """b reserved a slot before a's ban: once it has slept to it, it asks again (its word
    from the store is older than HOLD_FRESH) and finds the hold, with no heartbeat needed."""
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(10.0), b.join()
    assert b.reserve(5.0) == pytest.approx(0.0)
    clock.now += 0.05
    a.shut(3.0)
    assert a.wait(clock.monotonic()) == pytest.approx(3.0)
    assert b.wait(clock.monotonic()) == pytest.approx(3.0)
    clock.now += 3.0
    assert b.wait(clock.monotonic()) == 0.0


@pytest.mark.anyio
async def test_a_418_stops_every_pacer_sharing_the_schedule() -> None:
    clock = FakeClock()
    _, _, pacer_a, pacer_b = pacers_sharing(clock)
    ticket = pacer_a.acquire_at_once()
    assert ticket is not None
    pacer_a.release(ticket, Feedback(admitted=True, banned=True, retry_after=60.0))
    clock.now += 1.0
    with pytest.raises(UpstreamBanned, match="banned for 59 s more"):
        pacer_b.acquire_at_once()
    assert pacer_b.try_acquire_now() is None  # (a hedge's copy just does not go)


@pytest.mark.anyio
async def test_a_retry_after_closes_the_gate_of_every_pacer_sharing_the_schedule() -> None:
    """a's 429 says Retry-After: 5 (a long one: obeyed, not checked): b sends nothing until
    then, and a's own gate decides for a."""
    clock = FakeClock()
    a, _, pacer_a, pacer_b = pacers_sharing(clock)
    ticket = pacer_a.acquire_at_once()
    assert ticket is not None
    pacer_a.release(ticket, Feedback(admitted=False, throttled=True, retry_after=5.0))
    clock.now += 1.0
    assert pacer_b.acquire_at_once() is None and pacer_a.acquire_at_once() is None
    assert a.gate_wait(clock.monotonic()) == 0.0  # (a waits on its own gate)
    clock.now += 4.0
    assert pacer_b.acquire_at_once() is not None


class Failing(LocalPacingStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(now=clock.monotonic)
        self.fail = False
        self.closed = False

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
        if self.fail:
            raise PacingStoreError("pacing store redis://x: connection refused")
        return super().reserve(scope, member, count, view, discovering, refused, admitted)

    def close(self) -> None:
        self.closed = True


def test_a_store_that_fails_costs_one_warning_and_pacing_goes_on_alone() -> None:
    clock = FakeClock()
    store = Failing(clock)
    warned: list[str] = []
    meter = SharedMeter(store, "s", clock, warn=warned.append)
    meter.join()
    assert meter.reserve(10.0) == 0.0
    store.fail = True
    assert meter.reserve(10.0) == 0.0  # (this process's own schedule starts afresh)
    assert meter.reserve(10.0) == pytest.approx(0.1)
    meter.beat(10.0)
    assert warned == ["pacing store redis://x: connection refused; pacing this process alone"]
    assert not meter.shared and store.closed and meter.processes == 1


@pytest.mark.anyio
async def test_the_pacer_takes_a_shared_meter() -> None:
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(), b.join()
    a.beat(None)
    pacer_a = Pacer(clock, rate=10.0, adaptive=False, meter=a)
    pacer_b = Pacer(clock, rate=10.0, adaptive=False, meter=b)
    assert pacer_a.meter is a
    assert pacer_a.acquire_at_once() is not None
    # a took the slot; b's is 1/10 s away (--rate 10 is for the processes together)
    assert pacer_b.acquire_at_once() is None
    clock.now += 0.05
    assert pacer_b.acquire_at_once() is None
    clock.now += 0.051
    assert pacer_b.acquire_at_once() is not None


def learned_pacers(clock: FakeClock) -> tuple[Pacer, Pacer]:
    """Two pacers sharing a scope with 40 requests/s in force, each starting at its half."""
    a, b = meters(2, clock)
    a.join(40.0), b.join()
    return (
        Pacer(clock, learned=LearnedPace(20.0), meter=a),
        Pacer(clock, learned=LearnedPace(20.0), meter=b),
    )


def adaptive_pacers(clock: FakeClock, concurrency: int = 50) -> tuple[Pacer, Pacer]:
    """Two adaptive pacers (no --rate, nothing learned) over meters of one scope: a first."""
    a, b = meters(2, clock)
    a.join(discover=True), b.join(discover=True)
    return Pacer(clock, concurrency=concurrency, meter=a), Pacer(
        clock, concurrency=concurrency, meter=b
    )


@pytest.mark.anyio
async def test_a_follower_sends_nothing_while_the_leader_discovers_the_rate() -> None:
    """b waits while a slow-starts; once a's 429 gave it a rate, b sends at its share."""
    clock = FakeClock()
    pacer_a, pacer_b = adaptive_pacers(clock)
    tickets = [pacer_a.acquire_at_once() for _ in range(10)]  # a's slow start window
    assert all(tickets) and pacer_b.acquire_at_once() is None
    clock.now += 0.05
    for ticket in tickets[:-1]:
        assert ticket is not None
        pacer_a.release(ticket, Feedback(admitted=True))
    assert pacer_b.acquire_at_once() is None  # (still no rate: still waiting)
    assert tickets[-1] is not None
    pacer_a.release(tickets[-1], Feedback(admitted=False, throttled=True))  # the first 429
    found = pacer_a.rate
    assert found is not None
    clock.now += 1.0  # (past a's measurement)
    pacer_a.acquire_at_once()  # (a tells the store, as its next send does)
    clock.now += 0.02
    assert pacer_b.acquire_at_once() is not None
    assert pacer_b.rate == pytest.approx(pacer_a.rate)  # each half of the rate for all
    assert pacer_a.meter.view == pytest.approx(2 * pacer_b.rate)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_leader_that_found_no_limit_lets_the_others_go() -> None:
    """A slow start whose window reached the ceiling, and sent that way `NO_LIMIT_PROOF`
    without a 429, found no limit: the others stop waiting for one, and start with the whole
    window. (Before then, a limiter with a burst may only not have refused yet.)"""
    clock = FakeClock()
    pacer_a, pacer_b = adaptive_pacers(clock, concurrency=10)  # (the first window is all)
    assert pacer_a.acquire_at_once() is not None
    clock.now += 0.02
    assert pacer_a.acquire_at_once() is not None  # (its next send tells the store)
    assert pacer_b.acquire_at_once() is None
    clock.now += NO_LIMIT_PROOF
    assert pacer_a.acquire_at_once() is not None
    clock.now += 0.02
    assert pacer_a.acquire_at_once() is not None  # (its next word tells it)
    clock.now += 0.02
    assert pacer_b.acquire_at_once() is not None
    assert pacer_b.rate is None and pacer_b.window.total_tokens == 10


@pytest.mark.anyio
async def test_a_429_with_no_rate_in_force_holds_the_follower_and_the_leader_cuts() -> None:
    """No limit found, then a follower draws a 429: it sends nothing more until the leader,
    told of it, has set a rate (measured: three followers retrying their 429s unpaced sent
    1600 requests in a quarter of a second); the leader takes it as its own 429."""
    clock = FakeClock()
    pacer_a, pacer_b = adaptive_pacers(clock, concurrency=10)
    pacer_a.acquire_at_once()
    clock.now += NO_LIMIT_PROOF + 0.02
    pacer_a.acquire_at_once()
    clock.now += 0.02
    pacer_a.acquire_at_once()
    clock.now += 0.02
    ticket = pacer_b.acquire_at_once()
    assert ticket is not None and pacer_b.rate is None
    clock.now += 0.01
    pacer_b.release(ticket, Feedback(admitted=False, throttled=True))
    clock.now += 0.02
    assert pacer_b.acquire_at_once() is None  # (and it tells the store of its 429)
    assert pacer_a.rate is None
    clock.now += 0.02
    pacer_a.acquire_at_once()  # (the leader hears of it with its next word to the store)
    assert pacer_a.rate is not None and pacer_a.control.cuts == 1
    clock.now += 0.02
    assert pacer_b.acquire_at_once() is None  # (still: until a rate is in force for it)


@pytest.mark.anyio
async def test_a_pause_the_others_429s_start_lets_no_send_through_as_its_probe() -> None:
    """The leader's rate control is one 429 short of pausing (429s at any rate after a cut);
    a follower's 429, taken in as the leader looks whether it may send, pauses it: that send
    waits, rather than go as the pause's probe (its 429, a moment later, doubled the first
    pause: measured, four processes on a token bucket counting refusals took 2x its ideal)."""
    clock = FakeClock()
    pacer_a, pacer_b = learned_pacers(clock)
    assert pacer_a.acquire_at_once() is not None
    clock.now += 0.05
    ticket = pacer_b.acquire_at_once()
    assert ticket is not None
    control = pacer_a.control
    cut_at = clock.now
    assert control.on_throttled(clock.now, clock.now, latency=0.05)  # a cut
    clock.now += 0.2
    for _ in range(BLOCK_AFTER - 1):  # sent after it, refused, none admitted
        control.on_send(clock.now)
        assert not control.on_throttled(clock.now, clock.now + 0.002, latency=0.05)
    assert not control.paused
    pacer_b.release(ticket, Feedback(admitted=False, throttled=True))
    clock.now += 0.5  # (the schedule has slots free now)
    pacer_b.acquire_at_once()  # (b tells the store of its 429)
    clock.now += 0.02
    # (a hears of it as it asks whether it may send, and pauses: the answer is to wait)
    assert pacer_a._hold(clock.monotonic()) > 0.2
    # (the probe is due a pause after the cut: the limiter refused everything since)
    assert control.paused and control.pause_wait(clock.now) == pytest.approx(
        cut_at + PAUSE_FIRST - clock.now
    )


@pytest.mark.anyio
async def test_the_leader_counts_what_the_others_were_admitted_as_its_share() -> None:
    """What the upstream admitted over the run (what a pause resumes at, and the floor) is
    counted in the leader's share of it: each answer, its own or a follower's, counts one over
    the processes sharing (measured before: a leader that counted only its own answers, after
    sending alone while the others waited, resumed at a tenth of the limit)."""
    clock = FakeClock()
    pacer_a, pacer_b = learned_pacers(clock)
    assert pacer_a.acquire_at_once() is not None
    clock.now += 0.05
    pacer_a.acquire_at_once()  # (a's first word since b joined: it rescales to its share)
    assert pacer_a.control.unit == pytest.approx(0.5)
    before = pacer_a.control.admitted_total
    for _ in range(3):
        clock.now += 0.05
        ticket = pacer_b.acquire_at_once()
        assert ticket is not None
        pacer_b.release(ticket, Feedback(admitted=True))
    clock.now += 0.05
    pacer_b.acquire_at_once()  # (b tells the store)
    clock.now += 0.05
    pacer_a.acquire_at_once()  # (a hears of them)
    assert pacer_a.control.admitted_total == pytest.approx(before + 3 * 0.5)


@pytest.mark.anyio
async def test_a_follower_takes_the_lead_at_the_same_rate_for_all() -> None:
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(40.0)
    assert b.join() == pytest.approx(20.0)
    pacer_b = Pacer(clock, learned=LearnedPace(20.0), meter=b)
    assert pacer_b.acquire_at_once() is not None
    assert pacer_b.rate == pytest.approx(20.0) and not b.leads
    a.close()  # the leader is done
    clock.now += 0.05
    assert pacer_b.acquire_at_once() is not None
    assert b.leads and pacer_b.rate == pytest.approx(40.0)  # its share is all of it now
    assert b.view == pytest.approx(40.0)
    assert pacer_b.control.history[-1].reason == "leads the processes sharing the budget"


@pytest.mark.anyio
async def test_a_follower_waits_for_a_slow_leader_no_longer_than_leader_wait() -> None:
    """A leader whose slow start finds nothing for seconds (it has little to send: the others,
    waiting, hold the symbols' cache leases) does not hold the others for longer than
    LEADER_WAIT: then they look for the rate themselves."""
    clock = FakeClock()
    pacer_a, pacer_b = adaptive_pacers(clock)
    assert pacer_a.acquire_at_once() is not None
    assert pacer_b.acquire_at_once() is None
    clock.now += LEADER_WAIT - 0.1
    assert pacer_a.acquire_at_once() is not None  # (still in slow start: still discovering)
    assert pacer_b.acquire_at_once() is None
    clock.now += 0.2
    assert pacer_b.acquire_at_once() is not None


@pytest.mark.anyio
async def test_an_outage_one_pacer_found_holds_the_others_while_it_probes() -> None:
    """a's breaker opens (the upstream stopped answering): b sends nothing while a probes,
    until a's next probe has had its answer (probe due in 1 s, answered within another)."""
    clock = FakeClock()
    a, b = meters(2, clock)
    a.join(), b.join()
    pacer_a, pacer_b = (
        Pacer(clock, rate=100.0, adaptive=False, meter=m, breaker=CircuitBreaker()) for m in (a, b)
    )
    assert pacer_b.acquire_at_once() is not None
    clock.now += 0.011  # (the next slot, 10 ms on: a's)
    ticket = pacer_a.acquire_at_once()
    assert ticket is not None
    pacer_a.release(ticket, Feedback(admitted=True))  # (it answered once: an outage, later)
    for _ in range(5):
        clock.now += 0.011
        ticket = pacer_a.acquire_at_once()
        assert ticket is not None
        pacer_a.release(ticket, Feedback(admitted=False, unavailable=True, error="refused"))
    assert pacer_a.breaker is not None and pacer_a.breaker.is_open
    clock.now += 0.05
    assert pacer_b.acquire_at_once() is None  # (b's own breaker saw nothing wrong)
    clock.now += 1.8
    assert pacer_b.acquire_at_once() is None
    clock.now += 0.2
    assert pacer_b.acquire_at_once() is not None


def test_a_process_joining_meanwhile_does_not_lower_the_rate_for_all() -> None:
    """a joins with a learned 20/s (for all) while b registers between a's two words to the
    store: a's share is of the processes it counted (one: 20), and the rescale that follows
    makes it 10 of two, the rate for all still 20 (a share of two with the scale of one was
    10 for all: measured, two processes took twice the ideal)."""
    clock = FakeClock()
    a, b = meters(2, clock)
    store = a.store
    assert store is not None
    original = store.reserve
    calls = 0

    def reserve(*args: Any, **kwargs: Any) -> Grant:
        nonlocal calls
        calls += 1
        if calls == 2:
            b.join()  # (b registers between a's first and second word)
        return original(*args, **kwargs)

    store.reserve = reserve  # type: ignore[method-assign]
    share = a.join(20.0)
    store.reserve = original  # type: ignore[method-assign]
    assert share == pytest.approx(20.0)
    a.beat(share)
    assert a.rescale() == pytest.approx(0.5)
    a.beat(share * 0.5)
    b.beat(None)
    assert b.shared_rate == pytest.approx(20.0)


@pytest.mark.anyio
async def test_a_pause_of_the_leader_holds_the_others_until_it_resumes() -> None:
    """The leader paused (429s at any rate: a window that counts refused requests): the others
    send nothing while it probes, across a refused probe's longer gap too; else they would
    keep the window full, and every probe of the leader's refused, for ever (measured: four
    processes on a counting sliding window never finished)."""
    clock = FakeClock()
    pacer_a, pacer_b = learned_pacers(clock)
    assert pacer_a.acquire_at_once() is not None
    clock.now += 0.06
    assert pacer_b.acquire_at_once() is not None
    pacer_a.control._pause(clock.monotonic())  # (as its 429s would: see test_ratecontrol)
    clock.now += 0.06
    assert pacer_a.acquire_at_once() is None  # (it tells the store as it looks)
    clock.now += 0.06
    assert pacer_b.acquire_at_once() is None
    clock.now += 1.0  # a's probe is due: it goes, and is refused
    probe = pacer_a.acquire_at_once()
    assert probe is not None
    pacer_a.release(probe, Feedback(admitted=False, throttled=True))
    assert pacer_a.acquire_at_once() is None
    for _ in range(19):  # the next probe is 2 s away: b waits all of it
        clock.now += 0.1
        assert pacer_b.acquire_at_once() is None
