"""One circuit breaker per backend model: skip a backend that keeps failing, try it again
after a cool-down with a single request.

closed -> (``failures`` failures in a row) -> open until ``cooldown_s`` has passed (or the
backend's ``Retry-After``) -> half-open: one request is let through; its success closes the
breaker, its failure opens it again. Pure state over an injected clock; no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0  # 0: closed
    probing: bool = False  # half-open: the one trial request is out


class Breakers:
    def __init__(self, failures: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_open: Callable[[str], None] | None = None) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_open = on_open
        self._states: dict[str, _State] = {}

    def is_open(self, model: str) -> bool:
        """True while ``model`` is to be skipped. Past the cool-down the first caller gets
        False (its request is the trial) and later ones True until the trial ends."""
        s = self._states.get(model)
        if s is None or not s.open_until:
            return False
        if self.clock() < s.open_until or s.probing:
            return True
        s.probing = True
        return False

    def success(self, model: str) -> None:
        self._states.pop(model, None)

    def failure(self, model: str, retry_after_s: float | None = None) -> None:
        """A failed call. ``retry_after_s`` (a 429's or 503's ``Retry-After``) opens the
        breaker at once for that long."""
        s = self._states.setdefault(model, _State())
        s.failures += 1
        if retry_after_s is not None or s.probing or s.failures >= self.failures:
            wait = self.cooldown_s if retry_after_s is None else max(0.0, retry_after_s)
            s.open_until = self.clock() + wait
            s.probing = False
            if self.on_open is not None:
                self.on_open(model)
