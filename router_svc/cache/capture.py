"""Rebuild the complete answer from a streamed response as its events pass, for the cache.

The front door feeds every SSE event it forwards to the client; once the stream is over,
``response()`` gives the whole answer as a ``chat.completion`` / ``text_completion`` body, or
None when it must not be cached: no ``data: [DONE]``, an error event, a choice without a
``finish_reason``, a delta this module cannot put back together (logprobs, unknown structured
fields) or more than ``max_bytes`` of events. No HTTP here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from router_svc.cache.store import CachedResponse, Kind


@dataclass
class _Choice:
    role: str | None = None
    strings: dict[str, list[str]] = field(default_factory=dict)  # content, refusal, text, ...
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


def _data(event: bytes) -> bytes | None:
    lines = [ln[5:].lstrip(b" ") for ln in event.splitlines() if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class StreamCapture:
    def __init__(self, kind: Kind, max_bytes: int = 1 << 20) -> None:
        self.kind = kind
        self.max_bytes = max_bytes
        self.done = False  # saw data: [DONE]
        self.failed: str | None = None  # why the answer cannot be cached
        self._bytes = 0
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None

    def fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why

    def feed(self, event: bytes) -> None:
        """One SSE event as forwarded (``data: {...}`` with or without its blank line)."""
        if self.failed:
            return
        self._bytes += len(event)
        if self._bytes > self.max_bytes:
            self.fail("too large")
            return
        data = _data(event)
        if data is None:
            return  # comments, keep-alives
        if data.strip() == b"[DONE]":
            self.done = True
            return
        if self.done:
            self.fail("data after [DONE]")
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            self.fail("unparsable event")
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.fail("error event")
            return
        self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        for k in ("id", "created", "model", "system_fingerprint"):
            if k not in self._head and chunk.get(k) is not None:
                self._head[k] = chunk[k]
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            self.fail("bad choices")
            return
        for c in choices:
            if not isinstance(c, dict) or not isinstance(c.get("index", 0), int):
                self.fail("bad choice")
                return
            st = self._choices.setdefault(c.get("index", 0), _Choice())
            if c.get("logprobs") is not None:
                self.fail("logprobs are not reassembled")
                return
            if self.kind == "chat":
                self._delta(st, c.get("delta") or {})
            elif isinstance(c.get("text"), str):
                st.strings.setdefault("text", []).append(c["text"])
            if c.get("finish_reason"):
                st.finish_reason = c["finish_reason"]

    def _delta(self, st: _Choice, delta: Any) -> None:
        if not isinstance(delta, dict):
            self.fail("bad delta")
            return
        for k, v in delta.items():
            if v is None:
                continue
            if k == "role" and isinstance(v, str):
                st.role = v
            elif k == "tool_calls" and isinstance(v, list):
                for tc in v:
                    self._tool_call(st, tc)
            elif isinstance(v, str):
                st.strings.setdefault(k, []).append(v)
            else:
                self.fail(f"delta field {k!r} is not reassembled")
                return

    def _tool_call(self, st: _Choice, tc: Any) -> None:
        if not isinstance(tc, dict) or not isinstance(tc.get("index", 0), int):
            self.fail("bad tool call")
            return
        t = st.tool_calls.setdefault(
            tc.get("index", 0), {"id": None, "type": "function",
                                 "function": {"name": "", "arguments": ""}})
        if tc.get("id"):
            t["id"] = tc["id"]
        if tc.get("type"):
            t["type"] = tc["type"]
        fn = tc.get("function") or {}
        for k in ("name", "arguments"):
            if isinstance(fn.get(k), str):
                t["function"][k] += fn[k]

    def response(self, usage: Any = None) -> CachedResponse | None:
        """The complete answer, or None (see the module docstring). ``usage`` (a mapping or a
        dataclass such as ``proxy.Usage``) fills in usage the client did not ask to stream."""
        if self.failed or not self.done or not self._choices or "id" not in self._head:
            return None
        if usage is not None and dataclasses.is_dataclass(usage) and not isinstance(usage, type):
            usage = dataclasses.asdict(usage)
        choices = []
        for idx in sorted(self._choices):
            st = self._choices[idx]
            joined = {k: "".join(v) for k, v in st.strings.items()}
            if self.kind == "chat":
                msg: dict[str, Any] = {"role": st.role or "assistant"}
                msg["content"] = joined.pop("content", None if st.tool_calls else "")
                msg.update(joined)
                if st.tool_calls:
                    msg["tool_calls"] = [st.tool_calls[i] for i in sorted(st.tool_calls)]
                choices.append({"index": idx, "message": msg, "logprobs": None,
                                "finish_reason": st.finish_reason})
            else:
                choices.append({"index": idx, "text": joined.get("text", ""), "logprobs": None,
                                "finish_reason": st.finish_reason})
        body = {
            "id": self._head["id"],
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
            "usage": self._usage if self._usage is not None else usage,
        }
        if "system_fingerprint" in self._head:
            body["system_fingerprint"] = self._head["system_fingerprint"]
        return CachedResponse.from_body(self.kind, body)
