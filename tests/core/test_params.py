"""Standard OpenAI parameters with a wrong type or range are a 400 at the router."""

from __future__ import annotations

import pytest

from router_svc.core.errors import BadRequest
from router_svc.core.messages import parse_chat_request, parse_completion_request


def chat(**extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("temperature", "hot", "expected a number, but got a string"),
    ("temperature", 2.5, "Expected a value <= 2"),
    ("temperature", -0.1, "Expected a value >= 0"),
    ("top_p", 1.5, "<= 1"),
    ("n", 0, ">= 1"),
    ("n", 1.5, "expected an integer"),
    ("n", True, "expected an integer, but got a boolean"),
    ("max_tokens", "100", "expected an integer"),
    ("max_tokens", 0, ">= 1"),
    ("seed", 1.0, "expected an integer"),
    ("stop", 3, "a string or an array"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4"),
    ("stop", ["a", 1], "at most 4 strings"),
    ("presence_penalty", 3, "<= 2"),
    ("logprobs", 1, "expected a boolean"),
    ("top_logprobs", 21, "<= 20"),
    ("logit_bias", {"50256": 101}, "-100 to 100"),
    ("logit_bias", [1], "expected an object"),
    ("user", 42, "expected a string"),
    ("tools", {}, "expected an array"),
    ("tool_choice", 1, "a string or an object"),
    ("response_format", "json", "expected an object"),
])
def test_wrong_type_or_range_is_a_400_naming_the_field(field, value, words) -> None:
    with pytest.raises(BadRequest) as e:
        parse_chat_request(chat(**{field: value}))
    assert e.value.param == field and words in e.value.message, e.value.message


@pytest.mark.parametrize("extra", [
    {"temperature": 0}, {"temperature": 2}, {"top_p": 0.5}, {"n": 2}, {"seed": -3},
    {"stop": "END"}, {"stop": ["a", "b"]}, {"logprobs": True, "top_logprobs": 5},
    {"logit_bias": {"1": -100}}, {"temperature": None, "max_tokens": None},
    {"tool_choice": "auto"}, {"some_backend_extension": "anything"},
])
def test_valid_values_and_nulls_pass(extra) -> None:
    assert parse_chat_request(chat(**extra)).model == "auto"


def test_completions_logprobs_is_a_count() -> None:
    body = {"model": "auto", "prompt": "hi", "logprobs": 3}
    assert parse_completion_request(body).model == "auto"
    with pytest.raises(BadRequest, match="<= 5"):
        parse_completion_request({**body, "logprobs": 6})
