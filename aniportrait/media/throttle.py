"""The download gate: how fast a build starts downloads, and when it stops starting them.

One :class:`DownloadGate` serves a whole build (the build runs it in one small Ray actor
that every download worker asks). It is a token bucket holding one token: a download may
start once ``interval_s`` passed since the last start (``60 / rate`` seconds; no rate, no
wait). A bot check or HTTP 429 answer backs everyone off: the interval doubles (from
``first_backoff_s`` when there is no rate) up to ``MAX_INTERVAL_S``, and each normal
answer after it halves it again, down to the rate's own interval. After
``max_bot_checks`` such answers in a row the gate opens its circuit breaker: it lets no
download start any more, and the build stops (a rerun goes on). The clock is injected,
so the logic is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: The first back-off interval when the build has no ``--download-rate``.
DEFAULT_FIRST_BACKOFF_S = 10.0
#: The longest interval back-offs reach.
MAX_INTERVAL_S = 600.0
#: Bot checks or HTTP 429 answers in a row that stop the downloads by default.
DEFAULT_MAX_BOT_CHECKS = 5


class DownloadGate:
    """Rate limit, back-off and circuit breaker of one build's downloads (see the module docstring)."""

    def __init__(self, rate_per_min: float | None = None, max_bot_checks: int = DEFAULT_MAX_BOT_CHECKS, *,
                 first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_min is not None and rate_per_min <= 0:
            raise ValueError(f"--download-rate must be positive, got {rate_per_min}")
        if max_bot_checks < 1:
            raise ValueError(f"--max-bot-checks must be at least 1, got {max_bot_checks}")
        self.base_interval_s = 60.0 / rate_per_min if rate_per_min else 0.0
        self.max_bot_checks = max_bot_checks
        self.first_backoff_s = first_backoff_s
        self.clock = clock
        self._backoff_s = 0.0
        self._next_start = float("-inf")
        self.started = 0
        self.bot_checks = 0
        self.in_a_row = 0
        self.longest_interval_s = self.base_interval_s
        self._stopped = False

    @property
    def interval_s(self) -> float:
        """Seconds between two download starts now: the rate's, or the back-off's when longer."""
        return max(self.base_interval_s, self._backoff_s)

    @property
    def stopped(self) -> bool:
        """Whether the circuit breaker is open: no download starts any more (for good)."""
        return self._stopped

    def ask(self) -> float | None:
        """May a download start now? ``0.0``: yes (the token is taken); a positive number:
        ask again after that many seconds; ``None``: never (the breaker is open)."""
        if self.stopped:
            return None
        now = self.clock()
        if now < self._next_start:
            return self._next_start - now
        self._next_start = now + self.interval_s
        self.started += 1
        return 0.0

    def report(self, bot_check: bool) -> bool:
        """Record how a started download ended (``bot_check``: a bot check or HTTP 429
        answer, else any other answer); return whether the breaker is now open."""
        if bot_check:
            self.bot_checks += 1
            self.in_a_row += 1
            current = self.interval_s
            self._backoff_s = min(MAX_INTERVAL_S, 2 * current if current > 0 else self.first_backoff_s)
            self.longest_interval_s = max(self.longest_interval_s, self.interval_s)
            self._next_start = max(self._next_start, self.clock() + self.interval_s)
            self._stopped = self._stopped or self.in_a_row >= self.max_bot_checks
        else:
            self.in_a_row = 0
            halved = self._backoff_s / 2
            self._backoff_s = halved if halved > self.base_interval_s else 0.0
        return self.stopped

    def stop_message(self) -> str:
        """Why the downloads stopped and what to do (when :attr:`stopped`)."""
        return (f"downloads stopped: {self.max_bot_checks} downloads in a row met a bot check or HTTP 429 (too many "
                "requests), so the site is refusing this machine for now; the sources not downloaded yet are not "
                "marked failed. Wait (such blocks usually last up to an hour), then go on with --cookies, a lower "
                "--download-rate or a --proxy")

    def stats(self) -> dict[str, Any]:
        """What the gate saw: downloads started, bot checks, the longest interval, whether it stopped."""
        return {"started": self.started, "bot_checks": self.bot_checks,
                "longest_interval_s": self.longest_interval_s, "stopped": self.stopped}
