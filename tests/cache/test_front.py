"""The cache around one request (no HTTP): the repeat memo's identity and bounds."""

from __future__ import annotations

import numpy as np

from router_svc.cache.front import Remembered, RepeatMemo, replay_mode
from router_svc.cache.keys import CachePlan, request_fingerprint
from router_svc.core.selection import Decision

BODY = {"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}


def remembered(model: str = "phi4") -> Remembered:
    plan = CachePlan("p" * 64, "What is 2+2?", np.ones(4, np.float32), lookup=True, store=True)
    decision = Decision(model, "math", 0.9, "category", "route", frozenset())
    return Remembered(plan, decision, {"x-router-model": model})


def test_fingerprint_ignores_only_the_replay_mode() -> None:
    base = request_fingerprint("chat", BODY, "key:a")
    assert request_fingerprint("chat", {**BODY, "stream": True}, "key:a") == base
    assert request_fingerprint(
        "chat", {**BODY, "stream": True, "stream_options": {"include_usage": True}},
        "key:a") == base
    assert request_fingerprint("chat", dict(reversed(list(BODY.items()))), "key:a") == base
    different = [
        request_fingerprint("chat", BODY, "key:b"),  # another tenant
        request_fingerprint("completion", BODY, "key:a"),
        request_fingerprint("chat", {**BODY, "model": "phi4"}, "key:a"),
        request_fingerprint("chat", {**BODY, "temperature": 0.1}, "key:a"),
        request_fingerprint("chat", {**BODY, "user": "u1"}, "key:a"),
        request_fingerprint("chat", {**BODY, "messages": [
            {"role": "system", "content": "be brief"}, *BODY["messages"]]}, "key:a"),
        request_fingerprint("chat", {**BODY, "messages": [
            {"role": "user", "content": "What is 2+3?"}]}, "key:a"),
    ]
    assert base not in different and len(set(different)) == len(different)


def test_memo_is_lru_bounded() -> None:
    memo = RepeatMemo(2)
    memo.put("a", remembered("a"))
    memo.put("b", remembered("b"))
    got = memo.get("a")  # a is now the most recent
    assert got is not None and got.decision.model == "a"
    memo.put("c", remembered("c"))
    assert memo.get("b") is None
    for key in ("a", "c"):
        got = memo.get(key)
        assert got is not None and got.decision.model == key
    assert len(memo) == 2
    memo.forget("a")
    assert memo.get("a") is None and len(memo) == 1
    memo.clear()
    assert len(memo) == 0


def test_replay_mode() -> None:
    assert replay_mode(BODY) == (False, False)
    assert replay_mode({**BODY, "stream": None}) == (False, False)
    assert replay_mode({**BODY, "stream": True}) == (True, False)
    assert replay_mode({**BODY, "stream": True,
                        "stream_options": {"include_usage": True}}) == (True, True)
    # include_usage as the proxy path reads it (truthy), so a replay ends like a forward would
    assert replay_mode({**BODY, "stream": True,
                        "stream_options": {"include_usage": 1}}) == (True, True)
    assert replay_mode({**BODY, "stream": "yes"}) is None
    assert replay_mode({**BODY, "stream": 1}) is None
    assert replay_mode({**BODY, "stream": True, "stream_options": "usage"}) is None
