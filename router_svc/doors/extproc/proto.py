"""Envoy ext_proc messages, built and read without a server: pure functions over the protos.

What the ext_proc door tells Envoy is decided here, so it is unit-tested without Envoy: the
request edit for a forwarded request (body, ``content-length``, routing and credential
headers), local answers as ``ImmediateResponse``, and the processing-mode overrides. The
stubs come from the PyPI package ``xds-protos`` (``envoy.service.ext_proc.v3``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from multidict import CIMultiDict

from router_svc.core.selection import BackendTarget
from router_svc.flow.answers import LocalAnswer

# The headers Envoy routes on (deploy/envoy/envoy.yaml): a route per model matches the first,
# an original-destination cluster connects to the second (host:port; it must be an IP there).
SELECTED_MODEL = "x-router-selected-model"
DESTINATION = "x-router-destination-endpoint"
ROUTING_HEADERS = (SELECTED_MODEL, DESTINATION)

# Credentials the HTTP proxy never passes to a backend unless the model's config says so
# (proxy.FORWARDED_HEADERS is an allowlist there; Envoy forwards everything, so remove these).
CREDENTIALS = ("authorization", "proxy-authorization", "cookie", "x-api-key")
WITH_CLIENT_AUTH = ("openai-organization", "openai-project")

Mode = processing_mode_pb2.ProcessingMode
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# ---------------------------------------------------------------- reading


def header_map(headers: pb.HttpHeaders) -> CIMultiDict[str]:
    """Envoy's header map, case-insensitive, a repeated name kept as several values (so a
    repeated tenant or key header is seen, and refused, rather than merged).

    Envoy 1.40 sends values in ``raw_value`` (bytes); older versions in ``value``.
    """
    out: CIMultiDict[str] = CIMultiDict()
    for h in headers.headers.headers:
        out.add(h.key.lower(), h.raw_value.decode("latin-1") if h.raw_value else h.value)
    return out


# ---------------------------------------------------------------- building blocks


def header_mutation(set_headers: Mapping[str, str] | None = None,
                    remove: Iterable[str] = ()) -> pb.HeaderMutation:
    m = pb.HeaderMutation()
    for k, v in (set_headers or {}).items():
        m.set_headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k.lower(), raw_value=v.encode("latin-1",
                                                                          "replace")),
            append_action=_OVERWRITE))
    m.remove_headers.extend(h.lower() for h in remove)
    return m


def common(set_headers: Mapping[str, str] | None = None, remove: Iterable[str] = (),
           body: bytes | None = None, clear_route_cache: bool = False) -> pb.CommonResponse:
    """A CONTINUE with optional header and body changes. ``body=b""`` clears the chunk."""
    c = pb.CommonResponse(clear_route_cache=clear_route_cache)
    remove = list(remove)
    if set_headers or remove:
        c.header_mutation.CopyFrom(header_mutation(set_headers, remove))
    if body is not None:
        if body:
            c.body_mutation.body = body
        else:
            c.body_mutation.clear_body = True
    return c


def request_headers_reply(c: pb.CommonResponse | None = None,
                          mode: Mode | None = None) -> pb.ProcessingResponse:
    r = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=c or pb.CommonResponse()))
    if mode is not None:
        r.mode_override.CopyFrom(mode)
    return r


def request_body_reply(c: pb.CommonResponse | None = None) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=c or pb.CommonResponse()))


def response_headers_reply(c: pb.CommonResponse | None = None) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(response=c or pb.CommonResponse()))


def response_body_reply(c: pb.CommonResponse | None = None) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=c or pb.CommonResponse()))


def trailers_reply(request: bool) -> pb.ProcessingResponse:
    t = pb.TrailersResponse()
    return (pb.ProcessingResponse(request_trailers=t) if request
            else pb.ProcessingResponse(response_trailers=t))


def immediate(answer: LocalAnswer, details: str) -> pb.ProcessingResponse:
    """A local answer sent by Envoy itself: status, every header (content type included: the
    default would be text/plain) and the exact body the HTTP proxy sends."""
    body = answer.body()  # JSON or SSE: always UTF-8
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=answer.status),  # type: ignore[arg-type]
        headers=header_mutation(answer.all_headers()),
        body=body,
        details=details))


def immediate_body(r: pb.ImmediateResponse) -> bytes:
    """The body of an immediate response. ``ImmediateResponse.body`` was a proto ``string``
    before it became ``bytes`` (same wire format); every xds-protos for protobuf 6 (>=1.72.1,
    pyproject.toml) has ``bytes``."""
    return r.body


# ---------------------------------------------------------------- processing modes


def llm_mode() -> Mode:
    """An OpenAI generation request: the whole request body at once (it is parsed and routed
    as one JSON document), the response body as it streams (SSE must not wait for the end;
    a JSON answer is gathered here)."""
    return Mode(request_header_mode=Mode.SEND, response_header_mode=Mode.SEND,
                request_body_mode=Mode.BUFFERED, response_body_mode=Mode.STREAMED,
                request_trailer_mode=Mode.SKIP, response_trailer_mode=Mode.SKIP)


def pass_through_mode() -> Mode:
    """Anything else (``/v1/models``, health checks): nothing more is sent to the server."""
    return Mode(request_header_mode=Mode.SEND, response_header_mode=Mode.SKIP,
                request_body_mode=Mode.NONE, response_body_mode=Mode.NONE,
                request_trailer_mode=Mode.SKIP, response_trailer_mode=Mode.SKIP)


# ---------------------------------------------------------------- the routed request


def destination(base_url: str) -> str:
    """``host:port`` of a backend base URL (the port from the scheme when not given)."""
    u = urlsplit(base_url)
    port = u.port or (443 if u.scheme == "https" else 80)
    host = u.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def upstream_path(base_url: str, endpoint: str, client_path: str) -> str | None:
    """The ``:path`` the backend needs, or None when the client's path already fits: Envoy
    keeps the client's path, which is right for backends whose base URL ends in ``/v1``."""
    prefix = urlsplit(base_url).path.rstrip("/")
    path, _, query = client_path.partition("?")
    want = prefix + endpoint
    if want == path:
        return None
    return want + (f"?{query}" if query else "")


def credential_edit(target: BackendTarget) -> tuple[dict[str, str], list[str]]:
    """As the HTTP proxy: the backend's own key if it has one; else the client's
    Authorization only with ``forward_client_auth``; never both, never stray credentials."""
    set_h: dict[str, str] = {}
    remove = [h for h in CREDENTIALS if h != "authorization"]
    forward_client = target.forward_client_auth and not target.api_key
    if target.api_key:
        set_h["authorization"] = f"Bearer {target.api_key}"
    elif not forward_client:
        remove.append("authorization")
    if not forward_client:
        remove += WITH_CLIENT_AUTH
    return set_h, remove


@dataclass
class RequestEdit:
    """What Envoy changes in a routed request before its router picks the cluster."""

    body: bytes
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)

    def reply(self) -> pb.ProcessingResponse:
        # clear_route_cache: Envoy chose a route on the headers as they came; the routing
        # headers set here must pick it again.
        return request_body_reply(common(self.set_headers, self.remove_headers, self.body,
                                         clear_route_cache=True))


def request_edit(model: str, target: BackendTarget, body: dict[str, Any],
                 router_headers: Mapping[str, str], endpoint: str,
                 client_path: str, trace_headers: Mapping[str, str] | None = None,
                 ) -> RequestEdit:
    """The edit for a request routed to ``model`` (the router's name for it) at ``target``.

    ``body``: what goes upstream (model rewritten, PII redacted, usage asked for on streams);
    ``router_headers``: the ``x-router-*`` headers, also sent to the backend.
    ``content-length`` is set to the new body's: Envoy keeps the client's in buffered mode
    and refuses a body that does not match it. ``trace_headers``: the W3C ``traceparent``
    (and ``tracestate``) of the router's backend-call span, in place of the client's (Envoy
    sends the request, so the upstream learns its parent span from this edit).
    """
    raw = json.dumps(body).encode("utf-8")
    creds, remove = credential_edit(target)
    set_h = {**router_headers, SELECTED_MODEL: model, DESTINATION: destination(target.base_url),
             "content-length": str(len(raw)), **creds}
    path = upstream_path(target.base_url, endpoint, client_path)
    if path is not None:
        set_h[":path"] = path
    if trace_headers:
        set_h.update(trace_headers)
        if "tracestate" not in trace_headers:  # the client's belongs to its own parent span
            remove.append("tracestate")
    return RequestEdit(body=raw, set_headers=set_h, remove_headers=remove)
