"""Circuit breakers per backend (router_svc.core.breaker)."""

from __future__ import annotations

from router_svc.core.breaker import Breakers


def make(failures: int = 3, cooldown: float = 10.0):
    now = [0.0]
    opened: list[str] = []
    return Breakers(failures, cooldown, clock=lambda: now[0], on_open=opened.append), now, opened


def test_opens_after_failures_in_a_row_and_a_success_resets() -> None:
    b, _, opened = make()
    b.failure("phi4")
    b.failure("phi4")
    b.success("phi4")  # not in a row any more
    b.failure("phi4")
    b.failure("phi4")
    assert not b.is_open("phi4")
    b.failure("phi4")
    assert b.is_open("phi4") and opened == ["phi4"]
    assert not b.is_open("gemma")  # one breaker per backend


def test_after_the_cool_down_one_trial_request_goes_through() -> None:
    b, now, opened = make(failures=1, cooldown=10)
    b.failure("phi4")
    now[0] = 9.9
    assert b.is_open("phi4")
    now[0] = 10.0
    assert not b.is_open("phi4")  # the trial
    assert b.is_open("phi4")  # everyone else waits for it
    b.failure("phi4")  # the trial failed: open again for a whole cool-down
    now[0] = 19.9
    assert b.is_open("phi4") and opened == ["phi4", "phi4"]
    now[0] = 20.0
    assert not b.is_open("phi4")
    b.success("phi4")
    assert not b.is_open("phi4") and not b.is_open("phi4")


def test_retry_after_opens_at_once_for_that_long() -> None:
    b, now, _ = make(failures=5)
    b.failure("phi4", retry_after_s=2.0)
    assert b.is_open("phi4")
    now[0] = 2.0
    assert not b.is_open("phi4")
