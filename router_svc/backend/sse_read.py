"""Reading a backend's answer: usage, server-sent events, and ``EventScan``, the small state
machine the flow's ``Relay`` runs over a stream. No I/O. (Writing events: ``core.sse_write``.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def extract_usage(body: Any) -> Usage | None:
    """``Usage`` from an OpenAI response or chunk, or None when absent or malformed."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = usage.get("total_tokens")
    if not isinstance(total, int):
        total = prompt + completion
    return Usage(prompt, completion, total)


_EVENT_END = re.compile(rb"\r?\n\r?\n")
# One server-sent event larger than this is a broken backend, not an answer: a stream that
# never ends an event must not grow a buffer without bound.
MAX_EVENT_BYTES = 1 << 20


def parse_sse_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split ``buffer`` into complete SSE events (each with its blank-line terminator,
    so joining them gives the input back) and the incomplete remainder."""
    events: list[bytes] = []
    start = 0
    while (match := _EVENT_END.search(buffer, start)) is not None:
        events.append(buffer[start : match.end()])
        start = match.end()
    return events, buffer[start:]


def sse_data(event: bytes) -> bytes | None:
    """The joined ``data:`` field of one event, or None when it has none (comments...)."""
    lines = [line.rstrip(b"\r") for line in event.split(b"\n")]
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def ask_for_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a streaming request body that asks for the final usage chunk
    (``stream_options.include_usage``), so tokens can be counted for every stream."""
    sent = dict(body)
    options = sent.get("stream_options")
    sent["stream_options"] = {**(options if isinstance(options, dict) else {}),
                              "include_usage": True}
    return sent


@dataclass
class EventScan:
    """What a streamed answer says, one SSE event at a time, without I/O: ``[DONE]``, the
    first generated output, the usage; and whether to pass each event on (the usage-only
    chunk asked for on the client's behalf is dropped unless the client asked for it).
    """

    client_wants_usage: bool = False
    usage: Usage | None = None
    completed: bool = False  # saw ``data: [DONE]``
    saw_output: bool = False  # an event carrying generated output went by
    stripped_usage_chunk: bool = False

    def keep(self, event: bytes) -> bool:
        data = sse_data(event)
        if data is None:
            return True
        if data.strip() == b"[DONE]":
            self.completed = True
            return True
        if self.saw_output and b'"usage"' not in data:
            return True  # the common case: no JSON parsing per chunk
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):  # not ours to judge: passed on as it came
            return True
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        if (not self.saw_output and isinstance(choices, list)
                and any(_has_output(c) for c in choices)):
            self.saw_output = True
        usage = extract_usage(chunk)
        if usage is not None:
            self.usage = usage
            if choices == [] and not self.client_wants_usage:
                self.stripped_usage_chunk = True
                return False
        return True


def _has_output(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict) and (
        delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content")
    ):
        return True
    return bool(choice.get("text"))
