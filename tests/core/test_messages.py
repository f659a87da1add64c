"""OpenAI request bodies: the bad-input matrix, segments, last user text, redaction write-back."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from router_svc.core.errors import BadRequest
from router_svc.core.messages import (
    ALLOWED_ROLES,
    ChatRequest,
    CompletionRequest,
    Segment,
    apply_redactions,
    last_user_text,
    parse_chat_request,
    parse_completion_request,
    text_segments,
)
from router_svc.core.texts import JOINED


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([], None, "JSON object"),
        ("hello", None, "JSON object"),
        (None, None, "JSON object"),
        ({"messages": [user("hi")]}, "model", "model parameter"),
        ({"model": 3, "messages": [user("hi")]}, "model", "expected a string"),
        ({"model": "", "messages": [user("hi")]}, "model", "empty"),
        ({"model": "auto"}, "messages", "Missing required parameter"),
        ({"model": "auto", "messages": None}, "messages", "Missing required parameter"),
        ({"model": "auto", "messages": []}, "messages", "at least one"),
        ({"model": "auto", "messages": {"role": "user"}}, "messages", "expected an array"),
        (chat("hi"), "messages[0]", "expected an object, but got a string"),
        (chat(user("a"), None), "messages[1]", "expected an object, but got null"),
        (chat({"content": "x"}), "messages[0].role", "Missing required parameter"),
        (chat({"role": 1, "content": "x"}), "messages[0].role", "expected a string"),
        (chat({"role": "robot", "content": "x"}), "messages[0].role", "'robot'"),
        (chat(user(42)), "messages[0].content", "but got an integer"),
        (chat(user({"type": "text"})), "messages[0].content", "but got an object"),
        (chat(user(True)), "messages[0].content", "but got a boolean"),
        (chat(user(None)), "messages[0].content", "but got null"),
        (chat({"role": "user"}), "messages[0].content", "Missing required parameter"),
        (chat({"role": "tool", "tool_call_id": "c1"}), "messages[0].content", "Missing"),
        (chat(user(["just a string"])), "messages[0].content[0]", "expected an object"),
        (chat(user([{"type": "text", "text": "a"}, 7])), "messages[0].content[1]", "an integer"),
        (chat(user([{"text": "no type"}])), "messages[0].content[0].type", "expected a string"),
        (chat(user([{"type": "text"}])), "messages[0].content[0].text", "but got null"),
        (chat(user([{"type": "text", "text": 5}])), "messages[0].content[0].text", "integer"),
        (chat(user("hi"), stream="yes"), "stream", "expected a boolean"),
        (chat(user("hi"), stream=1), "stream", "expected a boolean"),
        (chat(user("hi"), stream=True, stream_options="usage"), "stream_options", "an object"),
    ],
)
def test_chat_bad_input(body: Any, param: str | None, words: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_chat_request(body)
    err = ei.value
    assert err.status == 400 and err.param == param
    assert words in err.message, err.message
    assert err.to_openai()["error"]["param"] == param
    assert err.to_openai()["error"]["type"] == "invalid_request_error"


def test_unknown_role_lists_the_allowed_ones() -> None:
    with pytest.raises(BadRequest) as ei:
        parse_chat_request(chat({"role": "robot", "content": "x"}))
    for r in ALLOWED_ROLES:
        assert f"'{r}'" in ei.value.message


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "x"}, "model", "model parameter"),
        ({"model": "auto"}, "prompt", "Missing required parameter"),
        ({"model": "auto", "prompt": 12}, "prompt", "expected a string or an array of strings"),
        ({"model": "auto", "prompt": {"a": 1}}, "prompt", "but got an object"),
        ({"model": "auto", "prompt": ["ok", None]}, "prompt[1]", "expected a string"),
        ({"model": "auto", "prompt": [1, 2, 3]}, "prompt", "Token-id prompts"),
        ({"model": "auto", "prompt": [[1, 2], [3]]}, "prompt", "Token-id prompts"),
        ({"model": "auto", "prompt": "x", "stream": "true"}, "stream", "boolean"),
    ],
)
def test_completion_bad_input(body: Any, param: str, words: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_completion_request(body)
    assert ei.value.param == param and words in ei.value.message, ei.value.message


# --------------------------------------------------------------------------- good input


def test_all_roles_and_segments_with_locations() -> None:
    body = chat(
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        user([{"type": "text", "text": "What is on"}, IMAGE, {"type": "text", "text": "this?"}]),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Card 4111 1111 1111 1111 on file"},
        {"role": "assistant", "content": "Your card is on file."},
        {"role": "function", "name": "f", "content": "legacy result"},
        {"role": "assistant", "tool_calls": []},  # content missing altogether
        user([AUDIO]),
        stream=True,
    )
    req = parse_chat_request(body)
    assert isinstance(req, ChatRequest) and req.model == "auto" and req.stream is True
    assert text_segments(req) == [
        Segment("You are terse.", "system", ("messages", 0, "content")),
        Segment("Answer in English.", "developer", ("messages", 1, "content", 0, "text")),
        Segment("What is on", "user", ("messages", 2, "content", 0, "text")),
        Segment("this?", "user", ("messages", 2, "content", 2, "text")),
        Segment("What is on\nthis?", "user", ("messages", 2, "content", JOINED),
                ((("messages", 2, "content", 0, "text"), 0),
                 (("messages", 2, "content", 2, "text"), 11))),
        Segment("f", "assistant", ("messages", 3, "tool_calls", 0, "function", "name")),
        Segment("Card 4111 1111 1111 1111 on file", "tool", ("messages", 4, "content")),
        Segment("Your card is on file.", "assistant", ("messages", 5, "content")),
        Segment("f", "function", ("messages", 6, "name")),
        Segment("legacy result", "function", ("messages", 6, "content")),
    ]
    assert req.unscannable == ("messages[2].content[1] (image_url)",
                               "messages[8].content[0] (input_audio)")
    assert req.body is body  # nothing copied, nothing changed


def test_stream_defaults_false_and_null_allowed() -> None:
    assert parse_chat_request(chat(user("hi"))).stream is False
    assert parse_chat_request(chat(user("hi"), stream=None)).stream is False


def test_empty_texts_are_not_segments() -> None:
    req = parse_chat_request(chat(user(""), user([{"type": "text", "text": ""}])))
    assert text_segments(req) == []
    assert last_user_text(req) == ""


def test_last_user_text_is_the_last_user_turn() -> None:
    req = parse_chat_request(
        chat(
            {"role": "system", "content": "sys"},
            user("first question"),
            {"role": "assistant", "content": "answer"},
            user([{"type": "text", "text": "second"}, IMAGE, {"type": "text", "text": "part"}]),
            {"role": "assistant", "content": "trailing assistant turn"},
        )
    )
    assert last_user_text(req) == "second\npart"
    no_user = parse_chat_request(chat({"role": "system", "content": "only a system prompt"}))
    assert last_user_text(no_user) == ""
    image_only = parse_chat_request(chat(user("earlier"), user([IMAGE])))
    assert last_user_text(image_only) == ""


def test_completion_prompts() -> None:
    req = parse_completion_request({"model": "phi4", "prompt": "Say hi"})
    assert isinstance(req, CompletionRequest) and req.stream is False
    assert text_segments(req) == [Segment("Say hi", "prompt", ("prompt",))]
    assert last_user_text(req) == "Say hi"
    req = parse_completion_request({"model": "phi4", "prompt": ["a", "", "c"], "stream": True})
    assert [s.path for s in text_segments(req)] == [("prompt", 0), ("prompt", 2)]
    assert last_user_text(req) == "a\nc" and req.stream


# --------------------------------------------------------------------------- redaction


def test_redaction_write_back_keeps_everything_else() -> None:
    body = chat(
        {"role": "system", "content": "Mail john@example.com if stuck."},
        user(
            [
                {"type": "text", "text": "My card is 4111 1111 1111 1111", "cache_control": "x"},
                IMAGE,
                {"type": "text", "text": "thanks"},
            ]
        ),
        {"role": "tool", "tool_call_id": "c1", "content": "SSN 078-05-1120"},
        temperature=0.2,
        metadata={"k": "v"},
    )
    before = copy.deepcopy(body)
    out = apply_redactions(
        body,
        {
            ("messages", 0, "content"): "Mail <EMAIL_ADDRESS> if stuck.",
            ("messages", 1, "content", 0, "text"): "My card is <CREDIT_CARD>",
            ("messages", 2, "content"): "SSN <US_SSN>",
        },
    )
    assert body == before  # the input is untouched
    assert out["messages"][0]["content"] == "Mail <EMAIL_ADDRESS> if stuck."
    assert out["messages"][1]["content"][0] == {
        "type": "text",
        "text": "My card is <CREDIT_CARD>",
        "cache_control": "x",
    }
    assert out["messages"][1]["content"][1] == IMAGE
    assert out["messages"][1]["content"][2] == {"type": "text", "text": "thanks"}
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "SSN <US_SSN>"}
    assert out["temperature"] == 0.2 and out["metadata"] == {"k": "v"}
    assert out["metadata"] is not body["metadata"]  # deep copy


def test_redaction_of_completion_prompts() -> None:
    assert (
        apply_redactions({"model": "m", "prompt": "a@b.c"}, {("prompt",): "<E>"})["prompt"]
        == "<E>"
    )
    out = apply_redactions({"model": "m", "prompt": ["x", "a@b.c"]}, {("prompt", 1): "<E>"})
    assert out["prompt"] == ["x", "<E>"]


def test_redaction_rejects_locations_that_are_not_text() -> None:
    body = chat(user([IMAGE]))
    with pytest.raises(ValueError, match="no text"):
        apply_redactions(body, {("messages", 0, "content", 0): "x"})
    with pytest.raises(ValueError):
        apply_redactions({"model": "m", "prompt": "p"}, {("prompt", 1): "x"})


def test_redaction_round_trip_through_segments() -> None:
    body = chat(user([{"type": "text", "text": "call 555-0100"}, IMAGE]), user("ok"))
    req = parse_chat_request(body)
    repl = {s.path: s.text.replace("555-0100", "<PHONE_NUMBER>") for s in text_segments(req)}
    out = parse_chat_request(apply_redactions(req.body, repl))
    assert [s.text for s in text_segments(out)] == ["call <PHONE_NUMBER>", "ok"]
    assert out.body["messages"][0]["content"][1] == IMAGE


# --------------------------------------------------------------------------- odd text


ODD_TEXTS = [
    "tab\there\r\nnull\x00byte\x07bell\x1b[31mansi\x7f",
    "emoji 👩‍👩‍👧‍👦 🇫🇷 👍🏽 and a lone surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "RTL: مرحبا بالعالم ‏ שלום עולם \u202eoverride\u202c",
    "combining e\u0301 vs é, NFC/NFD and ZWJ\u200d, BOM \ufeff, NBSP\u00a0",
    "日本語のテキストと한국어 텍스트",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_unicode_and_control_characters_pass_through(text: str) -> None:
    wire = json.dumps(chat(user([{"type": "text", "text": text}, IMAGE]), user(text)))
    body = json.loads(wire)
    req = parse_chat_request(body)
    assert [s.text for s in text_segments(req)] == [text, text]
    assert last_user_text(req) == text
    # untouched through a (no-op) redaction and back to JSON
    out = apply_redactions(req.body, {("messages", 1, "content"): text})
    assert json.loads(json.dumps(out)) == body
