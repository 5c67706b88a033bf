"""The rate-limit headers the simulated upstream sends, honest or not.

Real servers get their hint headers from libraries with habits of their own, and a client that
believes every figure is paced by those habits, not by the limit. So besides the exact forms, a
`HintStyle` can reproduce what widely used server-side limiters do:

- `reset_offset`: every advertised reset (the X-RateLimit / IETF reset, and Retry-After) is this
  many seconds late (a second, for a library that adds one "to be safe", or rounds up twice);
- `retry_after_always`: `Retry-After` on every answer, 200s included, as the seconds left in
  the window (a client must ignore it on a 2xx);
- `fractional_epoch`: an epoch reset written with its fraction (`1764435600.734`).

Exact values are rounded up to whole seconds (what most servers send); a style with a
`reset_offset` truncates instead, like the library it imitates (`int(reset - now)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scanctl.demo.limiters import Decision

HINT_KINDS = ("none", "retry-after", "x-ratelimit", "x-ratelimit-epoch", "ietf", "used-weight")


@dataclass(frozen=True, slots=True)
class HintStyle:
    """Which hint headers to send, and how truthfully (see the module docstring)."""

    kinds: frozenset[str] = frozenset({"retry-after"})
    reset_offset: float = 0.0
    retry_after_always: bool = False
    fractional_epoch: bool = False

    def _seconds(self, value: float) -> int:
        """A delay in whole seconds as this style writes it."""
        if self.reset_offset:
            return max(0, int(value + self.reset_offset))
        return max(0, math.ceil(value))


def hint_headers(
    decision: Decision,
    style: HintStyle,
    *,
    throttled: bool,
    wall_now: float,
    policy: tuple[int, int] | None = None,
) -> dict[str, str]:
    """The headers of one answer. `policy`: the IETF (quota, window) to announce, when known
    better than the limiter's own figures (a bucket's window is often under a second)."""
    kinds, headers = style.kinds, {}
    reset = style._seconds(decision.reset)
    if "retry-after" in kinds and (throttled or style.retry_after_always):
        wait = decision.retry_after if throttled else decision.reset
        headers["Retry-After"] = str(max(1 if throttled else 0, style._seconds(wait)))
    if "x-ratelimit" in kinds or "x-ratelimit-epoch" in kinds:
        headers["X-RateLimit-Limit"] = str(decision.limit)
        headers["X-RateLimit-Remaining"] = str(decision.remaining)
        if "x-ratelimit-epoch" in kinds:
            at = wall_now + decision.reset + style.reset_offset
            headers["X-RateLimit-Reset"] = (
                f"{at:.3f}" if style.fractional_epoch else str(math.ceil(at))
            )
        else:
            headers["X-RateLimit-Reset"] = str(reset)
    if "ietf" in kinds:
        q, w = policy or (decision.limit, max(1, math.ceil(decision.window)))
        headers["RateLimit-Policy"] = f'"default";q={q};w={w}'
        headers["RateLimit"] = f'"default";r={decision.remaining};t={reset}'
    if "used-weight" in kinds:
        headers["X-MBX-USED-WEIGHT-1M"] = str(decision.limit - decision.remaining)
    return headers
