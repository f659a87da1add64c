"""The PII guard cannot be walked around: every place a request can carry text, with a card
number at the start, in the middle and at the end of a long text, through both doors (the
HTTP door and the real Envoy with the ext_proc door). With the default policy no model may
see a card: each request is refused and no backend receives anything. With ``redact`` the
backend receives the request with the number replaced, never the number.

The outcome of every cell is collected and printed as a table; the test fails on any cell
that was forwarded with the number in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from router_svc.ops.demo_backends import RECEIVED
from tests.conftest import BACKEND_NAMES

pytestmark = pytest.mark.integration

MODELS = tuple(BACKEND_NAMES)
CARD = "4111 1111 1111 1111"
DIGITS = "4111111111111111"
FILLER = ("The committee reviewed the quarterly plan and agreed to revisit the schedule after "
          "the holidays, noting that several teams still need more time to finish. ") * 6


def long_text(position: str, pii: str = CARD) -> str:
    """About 200 tokens of filler with ``pii`` at its start, in its middle or at its end."""
    half = len(FILLER) // 2
    return {"start": f"My card is {pii}. {FILLER}",
            "middle": f"{FILLER[:half]} My card is {pii}. {FILLER[half:]}",
            "end": f"{FILLER} My card is {pii}."}[position]


def chat_body(*messages: dict, **extra) -> tuple[str, dict]:
    return "/v1/chat/completions", {"model": "auto", "messages": list(messages), **extra}


def user(content) -> dict:
    return {"role": "user", "content": content}


def tool_call(arguments: str, name: str = "lookup") -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}]}


# place -> body builder for a text
PLACES: dict[str, Callable[[str], tuple[str, dict]]] = {
    "user content": lambda t: chat_body(user(t)),
    "system message": lambda t: chat_body({"role": "system", "content": t}, user("Hello")),
    "part text": lambda t: chat_body(user([{"type": "text", "text": t}])),
    "part input_text": lambda t: chat_body(user([{"type": "input_text", "text": t}])),
    "part output_text": lambda t: chat_body(
        {"role": "assistant", "content": [{"type": "output_text", "text": t}]}, user("ok")),
    "part refusal": lambda t: chat_body(
        {"role": "assistant", "content": [{"type": "refusal", "refusal": t}]}, user("ok")),
    "unknown part type": lambda t: chat_body(user([{"type": "x_new", "text": t}])),
    "message name": lambda t: chat_body({"role": "user", "name": t, "content": "Hello"}),
    "tool_calls arguments": lambda t: chat_body(
        user("Hello"), tool_call(json.dumps({"note": t})),
        {"role": "tool", "tool_call_id": "c1", "content": "done"}),
    "tool_calls name": lambda t: chat_body(user("Hello"), tool_call("{}", name=t),
                                           {"role": "tool", "tool_call_id": "c1",
                                            "content": "done"}),
    "function_call": lambda t: chat_body(
        user("Hello"), {"role": "assistant", "content": None,
                        "function_call": {"name": "f", "arguments": json.dumps({"n": t})}},
        {"role": "function", "name": "f", "content": "done"}),
    "tool result": lambda t: chat_body(
        user("Hello"), tool_call("{}"), {"role": "tool", "tool_call_id": "c1", "content": t}),
    "tools description": lambda t: chat_body(user("Hello"), tools=[{"type": "function",
                                             "function": {"name": "f", "description": t,
                                                          "parameters": {"type": "object"}}}]),
    "prediction": lambda t: chat_body(user("Hello"),
                                      prediction={"type": "content", "content": t}),
    "completion prompt": lambda t: ("/v1/completions", {"model": "auto", "prompt": t}),
    "completion prompt list": lambda t: ("/v1/completions",
                                         {"model": "auto", "prompt": ["Hello", t]}),
    "completion suffix": lambda t: ("/v1/completions",
                                    {"model": "auto", "prompt": "Hello", "suffix": t}),
}
# spellings of the number the guard must read as the number
VARIANTS = {
    "full-width digits": "４１１１ １１１１ １１１１ １１１１",
    "zero-width joined": "4111\u200b1111\u200b1111\u200b1111",
    "math digits": "𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏",
}


def received(backends) -> list:
    return [r for m in MODELS for r in backends[BACKEND_NAMES[m]].app[RECEIVED]]


def clear(backends) -> None:
    for m in MODELS:
        backends[BACKEND_NAMES[m]].app[RECEIVED].clear()


async def send(url: str, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body) as r:
        return r.status, await r.json(content_type=None)


def leaked(req, original: str) -> bool:
    """Whether what the backend received carries the number in any spelling."""
    raw = json.dumps(req.body, ensure_ascii=False)
    squashed = "".join(ch for ch in raw if ch.isdigit() or ch.isalpha())
    return DIGITS in squashed or original in raw


def cases() -> list[tuple[str, str, str]]:
    out = [(place, pos, CARD) for place in PLACES for pos in ("start", "middle", "end")]
    out += [("user content", f"middle, {name}", pii) for name, pii in VARIANTS.items()]
    return out


def split_parts_body() -> tuple[str, dict]:
    return chat_body(user([{"type": "text", "text": f"{FILLER} My card is 4111 1111"},
                           {"type": "text", "text": "1111 1111 and that is all."}]))


async def run_matrix(url: str, backends, mode: str) -> list[tuple[str, str, str]]:
    """Every cell through ``url``; (place, position, outcome) with outcome one of refused,
    redacted, or LEAKED / an unexpected answer."""
    rows = []
    todo = [(place, pos, PLACES[place](long_text(pos.split(",")[0], pii)), pii)
            for place, pos, pii in cases()]
    todo.append(("text parts", "split across two parts", split_parts_body(), "4111 1111"))
    for place, pos, (path, body), pii in todo:
        clear(backends)
        status, answer = await send(url, path, body)
        got = received(backends)
        if any(leaked(r, pii) for r in got):
            outcome = "LEAKED"
        elif status == 200 and answer.get("choices") and \
                answer["choices"][0].get("finish_reason") == "content_filter" and not got:
            outcome = "refused"
        elif status == 200 and got and mode == "redact":
            outcome = "redacted"
        else:
            outcome = f"unexpected {status}: {json.dumps(answer)[:120]}"
        rows.append((place, pos, outcome))
    return rows


def check(rows: list[tuple[str, str, str]], door: str, expected: str) -> None:
    print(f"\n{door}, expected {expected}:")
    for place, pos, outcome in rows:
        print(f"  {place:24} {pos:28} {outcome}")
    bad = [r for r in rows if r[2] != expected]
    assert not bad, bad


@pytest.mark.parametrize("mode", ["reject", "redact"])
async def test_matrix_through_the_http_door(router_factory, backends, clean_backends, mode):
    url = await router_factory(pii_action=mode)
    rows = await run_matrix(url, backends, mode)
    check(rows, "HTTP door", "refused" if mode == "reject" else "redacted")


@pytest.mark.parametrize("mode", ["reject", "redact"])
async def test_matrix_through_envoy(envoy_stack, backends, clean_backends, mode):
    stack = await envoy_stack(pii_action=mode)
    rows = await run_matrix(stack.url, backends, mode)
    check(rows, "Envoy + ext_proc door", "refused" if mode == "reject" else "redacted")
