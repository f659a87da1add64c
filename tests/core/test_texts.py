"""Every place a request can carry text is read, and redaction writes back exactly there."""

from __future__ import annotations

import json

import pytest

from router_svc.core.errors import BadRequest
from router_svc.core.texts import IN_JSON, KEY, apply_redactions, param_name, scan_body

SSN = "078-05-1120"


def texts(body: dict) -> dict[str, str]:
    return {s.param: s.text for s in scan_body(body).segments}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "input_text", "text": SSN}]}]},
     "messages[0].content[0].text"),
    ({"messages": [{"role": "assistant", "content": [{"type": "output_text", "text": SSN}]}]},
     "messages[0].content[0].text"),
    ({"messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": SSN}]}]},
     "messages[0].content[0].refusal"),
    ({"messages": [{"role": "user", "content": [{"type": "brand_new", "text": SSN}]}]},
     "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "name": SSN, "content": "hi"}]}, "messages[0].name"),
    ({"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": SSN}}]},
     "messages[0].function_call.arguments"),
    ({"messages": [{"role": "tool", "tool_call_id": "c", "content": [{"type": "text",
                                                                       "text": SSN}]}]},
     "messages[0].content[0].text"),
    ({"messages": [], "tools": [{"type": "function", "function": {
        "name": "f", "description": SSN, "parameters": {"type": "object"}}}]},
     "tools[0].function.description"),
    ({"messages": [], "prediction": {"type": "content", "content": SSN}}, "prediction.content"),
    ({"messages": [], "metadata": {"note": SSN}}, "metadata.note"),
    ({"messages": [], "user": SSN}, "user"),
    ({"messages": [], "stop": ["x", SSN]}, "stop[1]"),
    ({"prompt": "p", "suffix": SSN}, "suffix"),
    ({"prompt": ["a", SSN]}, "prompt[1]"),
])
def test_text_anywhere_is_read(body: dict, param: str) -> None:
    assert texts({"model": "auto", **body})[param] == SSN


def test_tool_call_arguments_are_read_as_json_and_stay_json() -> None:
    args = json.dumps({"card": "4111 1111 1111 1111", "n": 2, "nested": {"ssn": SSN}})
    body = {"model": "auto", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": args}}]}]}
    segs = {s.path: s.text for s in scan_body(body).segments}
    base = ("messages", 0, "tool_calls", 0, "function", "arguments", IN_JSON)
    assert segs[(*base, "card")] == "4111 1111 1111 1111"
    assert segs[(*base, "nested", "ssn")] == SSN
    assert param_name((*base, "card")) == "messages[0].tool_calls[0].function.arguments{card}"
    out = apply_redactions(body, {(*base, "card"): "<CREDIT_CARD>",
                                  (*base, "nested", "ssn"): "<US_SSN>"})
    sent = json.loads(out["messages"][0]["tool_calls"][0]["function"]["arguments"])
    assert sent == {"card": "<CREDIT_CARD>", "n": 2, "nested": {"ssn": "<US_SSN>"}}
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == args  # untouched


def test_arguments_that_are_not_json_are_read_as_text() -> None:
    body = {"model": "auto", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": f"ssn {SSN}"}}]}]}
    assert texts(body)["messages[0].tool_calls[0].function.arguments"] == f"ssn {SSN}"


def test_a_key_that_is_prose_is_read_and_redacted() -> None:
    body = {"model": "auto", "messages": [], "metadata": {SSN: 1, "plain_key": 2}}
    segs = {s.path: s.text for s in scan_body(body).segments}
    assert segs[("metadata", SSN, KEY)] == SSN and ("metadata", "plain_key", KEY) not in segs
    out = apply_redactions(body, {("metadata", SSN, KEY): "<US_SSN>"})
    assert out["metadata"] == {"<US_SSN>": 1, "plain_key": 2}


def test_binary_content_is_unscannable_not_skipped_silently() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "file", "file": {"file_data": "JVBE", "filename": "a.pdf"}}]}]}
    scan = scan_body(body)
    assert [s.text for s in scan.segments] == ["what is this"]
    assert scan.unscannable == ("messages[0].content[1] (image_url)",
                                "messages[0].content[2] (input_audio)",
                                "messages[0].content[3] (file)")


def test_enumerations_and_ids_are_not_read() -> None:
    body = {"model": "gpt", "messages": [{"role": "tool", "tool_call_id": "call_123",
                                          "content": "ok"}],
            "response_format": {"type": "json_object"}, "service_tier": "auto"}
    assert list(texts(body).values()) == ["ok"]


def test_nesting_is_bounded() -> None:
    deep: dict = {"x": "y"}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(BadRequest, match="nested too deeply"):
        scan_body({"model": "m", "messages": [], "metadata": deep})


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "assistant", "function_call": {
        "name": "f", "arguments": json.dumps({"n": SSN, "type": SSN, "id": "JohnSmith"})}}]},
    {"messages": [], "metadata": {"id": SSN, "type": "JohnSmith", "n": SSN}},
])
def test_field_names_of_the_request_mean_nothing_inside_the_clients_own_data(body) -> None:
    found = [s.text for s in scan_body({"model": "auto", **body}).segments]
    assert found.count(SSN) == 2 and "JohnSmith" in found


def test_a_structure_key_holding_something_else_than_an_id_is_read() -> None:
    body = {"model": "auto", "messages": [{"role": "tool", "tool_call_id": SSN,
                                           "content": "x"}]}
    assert SSN in [s.text for s in scan_body(body).segments]
