"""``pii_action: mask``: numbered placeholders out, the client's values back in the answer,
JSON and streamed (a placeholder split across chunks at every position). Pure functions and
the pipeline with a scripted classifier: no Triton."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from router_svc.classify.pii import PiiEntity
from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config, parse_config
from router_svc.core.mask import Mask, Numbering, StreamRestorer, taken_placeholders
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Router
from router_svc.core.selection import select_model
from tests.fakes import FakeClassifier

CARD = "4111 1111 1111 1111"
CARD2 = "5500 0000 0000 0004"
MASK = Mask({"<PERSON_1>": "Ann Lee", "<PERSON_2>": 'Bo "B" Stone\\', "<EMAIL_ADDRESS_1>":
             "ann@example.com", "<PERSON_10>": "Ten Ten"})


def entity(text: str, value: str, kind: str = "PERSON", score: float = 0.9,
           start: int = 0) -> PiiEntity:
    at = text.index(value, start)
    return PiiEntity(kind, at, at + len(value), value, score)


# ---------------------------------------------------------------- numbering


def test_the_same_value_gets_the_same_placeholder_and_others_the_next_number() -> None:
    n = Numbering()
    text = "Ann Lee wrote to Bo Stone; Ann Lee again, at ann@example.com"
    out = n.mask(text, [entity(text, "Ann Lee"), entity(text, "Bo Stone"),
                        entity(text, "Ann Lee", start=10),
                        entity(text, "ann@example.com", "EMAIL_ADDRESS")])
    assert out == "<PERSON_1> wrote to <PERSON_2>; <PERSON_1> again, at <EMAIL_ADDRESS_1>"
    second = "Bo Stone, then Cy Park"
    assert n.mask(second, [entity(second, "Bo Stone"), entity(second, "Cy Park")]) == \
        "<PERSON_2>, then <PERSON_3>"
    assert n.result().values == {"<PERSON_1>": "Ann Lee", "<PERSON_2>": "Bo Stone",
                                 "<EMAIL_ADDRESS_1>": "ann@example.com",
                                 "<PERSON_3>": "Cy Park"}


def test_overlapping_spans_are_one_placeholder_of_the_best_scoring_type() -> None:
    text = "call Ann Lee Ltd now"
    ents = [PiiEntity("PERSON", 5, 12, "Ann Lee", 0.6),
            PiiEntity("ORGANIZATION", 9, 16, "Lee Ltd", 0.9)]
    n = Numbering()
    assert n.mask(text, ents) == "call <ORGANIZATION_1> now"
    assert n.result().values == {"<ORGANIZATION_1>": "Ann Lee Ltd"}


def test_a_placeholder_the_client_wrote_is_never_handed_out() -> None:
    texts = ["fill in <PERSON_1> and <PERSON_3>", "<person_2> is not one"]
    taken = taken_placeholders(texts)
    assert taken == {"<PERSON_1>", "<PERSON_3>"}
    n = Numbering(taken)
    assert [n.placeholder("PERSON", v) for v in ("a", "b", "c")] == \
        ["<PERSON_2>", "<PERSON_4>", "<PERSON_5>"]
    # what the client wrote comes back as it was: it is not in the mapping
    assert n.result().restore("<PERSON_1> <PERSON_2>") == "<PERSON_1> a"


def test_the_mapping_is_never_in_a_repr() -> None:
    assert "Ann" not in repr(MASK) and "example" not in repr(MASK)
    assert repr(MASK) == "Mask(4 placeholders)"


# ---------------------------------------------------------------- restoring a JSON answer


def test_known_placeholders_are_restored_and_invented_ones_left() -> None:
    assert MASK.restore("Hi <PERSON_1>, <PERSON_7> and <PERSON_10>; <PERSON_1>.") == \
        "Hi Ann Lee, <PERSON_7> and Ten Ten; Ann Lee."
    assert MASK.restore("no placeholder <here>") == "no placeholder <here>"


def test_a_chat_answer_gets_its_values_back_everywhere_the_model_writes() -> None:
    args = json.dumps({"to": "<EMAIL_ADDRESS_1>", "name": "<PERSON_2>"})
    body = {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
            "role": "assistant", "content": "Dear <PERSON_1>",
            "reasoning_content": "<PERSON_2> asked",
            "tool_calls": [{"id": "call_<PERSON_1>", "type": "function",
                            "function": {"name": "send", "arguments": args}}]}},
        {"index": 1, "message": {"role": "assistant", "content": [
            {"type": "text", "text": "<PERSON_1>!"}]}}],
        "usage": {"total_tokens": 3}}
    before = copy.deepcopy(body)
    out = MASK.restore_answer(body)
    assert body == before  # the backend's body is not changed
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Dear Ann Lee"
    assert msg["reasoning_content"] == 'Bo "B" Stone\\ asked'
    # arguments stay JSON, with the value as it was
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {
        "to": "ann@example.com", "name": 'Bo "B" Stone\\'}
    assert out["choices"][1]["message"]["content"][0]["text"] == "Ann Lee!"
    assert out["usage"] == body["usage"] and out["id"] == "x"


def test_a_completion_answer_gets_its_values_back() -> None:
    body = {"object": "text_completion", "choices": [{"index": 0, "text": "<PERSON_1> ok"}]}
    assert MASK.restore_answer(body)["choices"][0]["text"] == "Ann Lee ok"
    assert MASK.restore_answer({"error": "x"}) == {"error": "x"}
    assert MASK.restore_answer(None) is None


# ---------------------------------------------------------------- restoring a stream


def chat_chunk(content: str | None = None, finish: str | None = None, index: int = 0,
               **delta: Any) -> dict[str, Any]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": d, "finish_reason": finish}]}


def streamed(mask: Mask, pieces: list[str], *, finish: bool = True) -> str:
    """What the client reads of ``pieces`` streamed as content, with a last chunk that
    says stop (``finish``) or none (the stream just ends)."""
    r = mask.stream()
    out = []
    chunks = [chat_chunk(p) for p in pieces] + ([chat_chunk(finish="stop")] if finish else [])
    for c in chunks:
        got = r.chunk(c)
        out.append(got["choices"][0]["delta"].get("content", ""))
    tail = r.flush()
    if tail is not None:
        out.append(tail["choices"][0]["delta"]["content"])
    assert not r.holding
    return "".join(out)


ANSWER = "Dear <PERSON_1>, <PERSON_10> and <PERSON_7> wrote <EMAIL_ADDRESS_1>. x<y <PERSON_1"


@pytest.mark.parametrize("finish", [True, False])
def test_a_placeholder_split_at_every_position_is_restored(finish: bool) -> None:
    want = MASK.restore(ANSWER)
    assert want.startswith("Dear Ann Lee, Ten Ten and <PERSON_7> wrote ann@example.com.")
    assert want.endswith("x<y <PERSON_1")  # an unfinished placeholder is left as written
    for i in range(len(ANSWER) + 1):
        assert streamed(MASK, [ANSWER[:i], ANSWER[i:]], finish=finish) == want, i
    for i in range(len(ANSWER) + 1):
        for j in range(i, min(len(ANSWER), i + 12) + 1):  # a placeholder cut twice
            assert streamed(MASK, [ANSWER[:i], ANSWER[i:j], ANSWER[j:]],
                            finish=finish) == want, (i, j)
    assert streamed(MASK, list(ANSWER), finish=finish) == want  # a character a chunk


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<PERSON_1>", "<PERSON_10>", "<PERSON_2>", "<PERSON_7>",
                                 "<EMAIL_ADDRESS_1>", "<", ">", "<PER", "PERSON_", "_1>",
                                 " ", "a", "é", "<<", "\n"]), max_size=20),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8),
       st.booleans())
def test_any_split_of_any_answer_reads_as_the_whole_restored(parts: list[str],
                                                             cuts: list[int],
                                                             finish: bool) -> None:
    text = "".join(parts)
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    assert streamed(MASK, pieces, finish=finish) == MASK.restore(text)


def test_tool_call_arguments_are_restored_per_call_and_stay_json() -> None:
    r = StreamRestorer(MASK)
    args = {0: json.dumps({"name": "<PERSON_2>"}), 1: json.dumps({"mail": "<EMAIL_ADDRESS_1>"})}
    got: dict[int, str] = {0: "", 1: ""}
    cut = {0: args[0].index("PERSON"), 1: args[1].index("ADDRESS")}
    # call 0's first half, call 1's first half, then the rest of each: held per call
    for k, piece in [(0, args[0][:cut[0]]), (1, args[1][:cut[1]]),
                     (0, args[0][cut[0]:]), (1, args[1][cut[1]:])]:
        c = r.chunk(chat_chunk(tool_calls=[{"index": k, "function": {"arguments": piece}}]))
        got[k] += c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(got[0]) == {"name": 'Bo "B" Stone\\'}
    assert json.loads(got[1]) == {"mail": "ann@example.com"}


def test_a_held_end_goes_out_with_its_choice_s_last_chunk() -> None:
    r = StreamRestorer(MASK)
    c = r.chunk(chat_chunk("Hi <PERS", index=1))
    assert c["choices"][0]["delta"]["content"] == "Hi "
    args = r.chunk(chat_chunk(tool_calls=[{"index": 2, "function": {"arguments": '{"a":"<'}}],
                              index=1))
    assert args["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"a":"'
    last = chat_chunk(finish="stop", index=1)
    before = copy.deepcopy(last)
    out = r.chunk(last)
    assert last == before  # the backend's chunk is not changed in place
    delta = out["choices"][0]["delta"]
    assert delta == {"content": "<PERS",
                     "tool_calls": [{"index": 2, "function": {"arguments": "<"}}]}
    assert not r.holding and r.flush() is None


def test_what_a_stream_holds_at_its_end_is_one_more_chunk() -> None:
    r = StreamRestorer(MASK)
    r.chunk({"id": "c", "object": "text_completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "text": "bye <PERSON_", "finish_reason": None}]})
    r.chunk({"id": "c", "choices": [], "usage": {"total_tokens": 1}})  # usage: untouched
    assert r.flush() == {"id": "c", "object": "text_completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "text": "<PERSON_", "finish_reason": None}]}


def test_a_chunk_with_nothing_to_restore_is_the_same_object() -> None:
    r = StreamRestorer(MASK)
    c = chat_chunk("plain text", role="assistant")
    assert r.chunk(c) is c
    assert r.chunk(b"not a chunk") == b"not a chunk"


# ---------------------------------------------------------------- config and pipeline


def mask_config(**changes: Any) -> Config:
    return dataclasses.replace(load_config(EXAMPLE_CONFIG), pii_action="mask", **changes)


def test_mask_is_a_pii_action_globally_and_per_model() -> None:
    base = load_config(EXAMPLE_CONFIG)
    d = select_model(mask_config(), "mistral-small3.1", "other", 0.9, {"CREDIT_CARD"})
    assert (d.action, d.reason, d.model) == ("mask", "pii_redact", "mistral-small3.1")
    # per model: model_config.<m>.pii_policy.action overrides the global pii_action
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["model_config"]["phi4"]["pii_policy"]["action"] = "mask"
    data["model_config"]["mistral-small3.1"]["pii_policy"]["action"] = "reject"
    data["pii_action"] = "redact"
    cfg = parse_config(data)
    assert cfg.model_config["phi4"].pii_policy.action == "mask"
    assert cfg.model_config["gemma3:27b"].pii_policy.action is None
    assert select_model(cfg, "phi4", "x", 0.9, {"CREDIT_CARD"}).action == "mask"
    assert select_model(cfg, "mistral-small3.1", "x", 0.9, {"CREDIT_CARD"}).action == "reject"
    assert select_model(cfg, "gemma3:27b", "x", 0.9, {"CREDIT_CARD"}).action == "redact"
    assert select_model(base, "gemma3:27b", "x", 0.9, {"CREDIT_CARD"}).action == "reject"
    data["model_config"]["phi4"]["pii_policy"]["action"] = "hide"
    with pytest.raises(ValueError, match=r"pii_policy\.action.*reject, redact, mask"):
        parse_config(data)


def router(cfg: Config) -> Router:
    return Router(cfg, FakeClassifier(), Metrics.create(models=list(cfg.model_config)),
                  environ={})


async def test_the_pipeline_masks_every_place_with_one_numbering() -> None:
    args = json.dumps({"card": CARD2, "again": CARD})
    body = {"model": "auto", "messages": [
        {"role": "system", "content": f"Cards on file: {CARD} and {CARD2}."},
        {"role": "user", "content": [{"type": "text", "text": f"Is {CARD} valid?"},
                                     {"type": "text", "text": "and a@b.io"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": args}}]},
        {"role": "user", "content": f"derivative of {CARD2}? (not <CREDIT_CARD_2>)"}]}
    r = await router(mask_config()).route("chat", body)
    assert r.decision.action == "mask" and r.headers()["x-router-pii-action"] == "mask"
    sent = r.body["messages"]
    assert sent[0]["content"] == "Cards on file: <CREDIT_CARD_1> and <CREDIT_CARD_3>."
    assert sent[1]["content"][0]["text"] == "Is <CREDIT_CARD_1> valid?"
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {
        "card": "<CREDIT_CARD_3>", "again": "<CREDIT_CARD_1>"}
    assert sent[3]["content"] == "derivative of <CREDIT_CARD_3>? (not <CREDIT_CARD_2>)"
    assert sent[1]["content"][1]["text"] == "and a@b.io"  # phi4 may see e-mail addresses
    assert CARD not in json.dumps(r.body) and CARD2 not in json.dumps(r.body)
    assert r.mask is not None and r.mask.values == {"<CREDIT_CARD_1>": CARD,
                                                    "<CREDIT_CARD_3>": CARD2}
    assert "mask=" not in repr(r) and "4111" not in repr(r.mask)  # no repr shows the mapping
    assert body["messages"][0]["content"] == f"Cards on file: {CARD} and {CARD2}."  # untouched


async def test_redact_and_route_carry_no_mask() -> None:
    red = await router(dataclasses.replace(mask_config(), pii_action="redact")).route(
        "chat", {"model": "auto", "messages": [{"role": "user", "content": f"card {CARD}"}]})
    assert red.mask is None and red.body["messages"][0]["content"] == "card <CREDIT_CARD>"
    plain = await router(mask_config()).route(
        "chat", {"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
    assert plain.mask is None and plain.decision.action == "route"
