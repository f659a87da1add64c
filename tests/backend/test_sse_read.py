"""stream_events.py: SSE event splitting at every cut, the data field, usage extraction."""

from __future__ import annotations

from router_svc.backend.sse_read import Usage, extract_usage, parse_sse_events, sse_data


def test_parse_sse_events_every_split():
    stream = (b"data: {\"a\": 1}\n\n: comment\n\nevent: x\ndata: two\r\n\r\n"
              b"data: [DONE]\n\n")
    expected = [b"data: {\"a\": 1}\n\n", b": comment\n\n", b"event: x\ndata: two\r\n\r\n",
                b"data: [DONE]\n\n"]
    for cut in range(len(stream) + 1):
        events, rest = parse_sse_events(stream[:cut])
        more, rest = parse_sse_events(rest + stream[cut:])
        assert events + more == expected
        assert rest == b""
    assert parse_sse_events(b"data: partial\n") == ([], b"data: partial\n")
    assert sse_data(b"event: x\ndata: two\r\n\r\n") == b"two"
    assert sse_data(b"data: a\ndata:b\n\n") == b"a\nb"
    assert sse_data(b": ping\n\n") is None


def test_extract_usage():
    assert extract_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                    "total_tokens": 7}}) == Usage(3, 4, 7)
    assert extract_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4, 7)
    assert extract_usage({"usage": None}) is None
    assert extract_usage({"usage": {"prompt_tokens": "3"}}) is None
    assert extract_usage([]) is None
