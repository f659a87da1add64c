"""The HTTP door's own API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built, not hand-written: the generation paths come from the endpoint table
(``core.endpoints.ENDPOINTS``) and the standard parameters' types and ranges from the rules
the router enforces (``core.params.PARAMS``), so the document cannot drift from what the
router checks. The other routes are listed here; ``tests/doors/http/test_openapi.py`` checks
that every route of ``create_app`` is described.

Only what the router itself checks is constrained; anything else in a body is the backend's
business and passes through (``additionalProperties`` stays open).
"""

from __future__ import annotations

import functools
import json
from importlib import metadata
from typing import Any

from router_svc.core.endpoints import ENDPOINTS, Endpoint
from router_svc.core.messages import ALLOWED_ROLES
from router_svc.core.params import PARAMS, Param

OPENAPI_PATH = "/openapi.json"
JSON = "application/json"
SSE = "text/event-stream"

Schema = dict[str, Any]


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _nullable(*types: str) -> list[str]:
    return [*types, "null"]  # null means "the default", as for OpenAI


# ---------------------------------------------------------------- standard parameters

# Kinds of ``core.params`` whose schema does not depend on the endpoint.
_KIND_SCHEMAS: dict[str, Schema] = {
    "boolean": {"type": _nullable("boolean")},
    "string": {"type": _nullable("string")},
    "object": {"type": _nullable("object")},
    "array": {"type": _nullable("array")},
    "string_or_object": {"type": _nullable("string", "object")},
    "stop": {"anyOf": [{"type": "string"},
                       {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                       {"type": "null"}]},
}


def _number_schema(kind: str, rule: Param) -> Schema:
    schema: Schema = {"type": _nullable(kind)}
    if kind == "integer":  # the JSON reader turns a larger integer into a float (refused)
        schema["format"] = "int64"
    if rule.lo is not None:
        schema["minimum"] = rule.lo
    if rule.hi is not None:
        schema["maximum"] = rule.hi
    return schema


def param_schema(name: str, rule: Param, *, completion: bool) -> Schema:
    """The JSON Schema of one standard parameter, as ``params.check`` enforces it."""
    if rule.kind == "logprobs":  # chat: a boolean; completions: how many, 0..5
        return (_number_schema("integer", Param("integer", 0, 5)) if completion
                else {"type": _nullable("boolean")})
    if rule.kind in ("number", "integer"):
        schema = _number_schema(rule.kind, rule)
    else:
        schema = dict(_KIND_SCHEMAS[rule.kind])
    if name == "logit_bias":  # each bias is checked too
        schema["additionalProperties"] = {"type": "number", "minimum": -100, "maximum": 100}
    return schema


def _common_properties(*, completion: bool) -> dict[str, Schema]:
    props: dict[str, Schema] = {
        "model": {"type": "string", "minLength": 1,
                  "description": "A configured model, or the routing alias (e.g. `auto`)."},
        "stream": {"type": _nullable("boolean")},
        "stream_options": {"type": _nullable("object"),
                           "properties": {"include_usage": {"type": "boolean"}}},
    }
    for name, rule in PARAMS.items():
        props[name] = param_schema(name, rule, completion=completion)
    return props


# ---------------------------------------------------------------- schemas

def _error_schemas() -> dict[str, Schema]:
    return {
        "Error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string",
                         "description": "invalid_request_error (4xx), rate_limit_error (429), "
                                        "server_error (5xx), or a backend's own type."},
                "param": {"type": ["string", "null"],
                          "description": "The offending field, e.g. `messages[0].content`."},
                "code": {"type": ["string", "integer", "null"]},
            },
        },
        "ErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _schema("Error")},
            "additionalProperties": False,
        },
    }


def _message_schemas() -> dict[str, Schema]:
    return {
        "ContentPart": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string"},
                           "text": {"type": "string",
                                    "description": "Required when `type` is `text`."}},
        },
        "Content": {"anyOf": [{"type": "string"},
                              {"type": "array", "items": _schema("ContentPart")},
                              {"type": "null", "description": "Assistant turns only."}]},
        "Message": {
            "type": "object",
            "required": ["role"],
            "description": "`content` is required except on assistant turns (tool calls).",
            "properties": {"role": {"type": "string", "enum": list(ALLOWED_ROLES)},
                           "content": _schema("Content"),
                           "name": {"type": "string"},
                           "tool_calls": {"type": "array"},
                           "tool_call_id": {"type": "string"}},
        },
    }


def _request_schemas() -> dict[str, Schema]:
    chat = _common_properties(completion=False)
    chat["messages"] = {"type": "array", "minItems": 1, "items": _schema("Message")}
    completion = _common_properties(completion=True)
    completion["prompt"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "Text only: token-id prompts are refused (the router must read them).",
    }
    return {
        "ChatCompletionRequest": {"type": "object", "required": ["model", "messages"],
                                  "properties": chat},
        "CompletionRequest": {"type": "object", "required": ["model", "prompt"],
                              "properties": completion},
        "ClassifyRequest": {
            "description": "A chat or completion body; `model` defaults to the routing alias.",
            "anyOf": [
                {"type": "object", "required": ["messages"], "properties": chat},
                {"type": "object", "required": ["prompt"], "properties": completion},
            ],
        },
        "InvalidateRequest": {
            "type": "object", "required": ["partition"],
            "properties": {"partition": {
                "type": "string", "pattern": "^[0-9a-f]{64}$",
                "description": "As sent in the `x-router-cache-partition` header."}},
        },
    }


def _answer_schemas() -> dict[str, Schema]:
    return {
        "ChatCompletion": {
            "type": "object", "required": ["id", "object", "choices"],
            "properties": {"id": {"type": "string"},
                           "object": {"const": "chat.completion"},
                           "created": {"type": "integer"},
                           "model": {"type": "string"},
                           "choices": {"type": "array", "items": {"type": "object"}},
                           "usage": {"type": ["object", "null"]}},
        },
        "Completion": {
            "type": "object", "required": ["id", "object", "choices"],
            "properties": {"id": {"type": "string"},
                           "object": {"const": "text_completion"},
                           "created": {"type": "integer"},
                           "model": {"type": "string"},
                           "choices": {"type": "array", "items": {"type": "object"}},
                           "usage": {"type": ["object", "null"]}},
        },
        "Model": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "created": {"type": "integer"}, "owned_by": {"type": "string"}},
        },
        "ModelList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"const": "list"},
                           "data": {"type": "array", "items": _schema("Model")}},
        },
        "ClassifyReport": {
            "type": "object", "required": ["category", "pii", "pii_check", "decision"],
            "properties": {"category": {"type": "object"},
                           "pii": {"type": "array", "items": {"type": "object"}},
                           "pii_check": {"type": ["string", "null"]},
                           "decision": {"type": "object"},
                           "cache": {"type": "object"}},
        },
        "CacheStats": {
            "type": "object",
            "required": ["entries", "lookups", "hits", "misses", "stores", "hit_rate"],
            "additionalProperties": {"type": "number"},
        },
    }


# ---------------------------------------------------------------- responses and headers

ROUTER_HEADERS: dict[str, str] = {
    "x-router-model": "The model that answered.",
    "x-router-category": "The top category, or `none`.",
    "x-router-confidence": "The category's calibrated probability.",
    "x-router-reason": "Why that model: category, low_confidence, explicit, pii_fallback, ...",
    "x-router-pii": "The PII types found, comma-separated, or `none`.",
    "x-router-pii-action": "`reject` or `redact`, when one was taken.",
    "x-router-pii-check": "`skipped`, `unchecked` or `partial` when PII was not fully checked.",
    "x-router-cache": "`hit`, `miss` or `off`.",
    "x-router-cache-similarity": "On a hit: the similarity of the matched entry.",
    "x-router-cache-partition": "The cache partition key (for POST /admin/cache/invalidate).",
    "x-router-cache-repeat": "`1` on a byte-for-byte repeat of a cached request.",
}

# name -> (status, description, extra headers)
_ERRORS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "BadRequest": (400, "The body is not JSON, not an object, or a field has a wrong type or "
                        "range (`param` names it).", ()),
    "Unauthorized": (401, "Missing or wrong key: a client key where `auth` is configured, "
                          "the admin token on /admin.", ("WWW-Authenticate",)),
    "Forbidden": (403, "The client key may not use this model (`model_not_allowed`).", ()),
    "NotFound": (404, "Unknown model (`model_not_found`), or a path not served.", ()),
    "PayloadTooLarge": (413, "The body is over `proxy.max_body_bytes`.", ()),
    "UnsupportedMediaType": (415, "The Content-Type is not JSON.", ()),
    "Overloaded": (429, "A bounded queue is full; retry after `Retry-After` seconds.",
                   ("Retry-After",)),
    "BadGateway": (502, "The backend is unreachable or answered malformed.", ()),
    "ServiceUnavailable": (503, "The router cannot decide safely (classifier down and "
                                "fail-closed), or every backend connection is busy.", ()),
    "GatewayTimeout": (504, "The backend timed out.", ()),
    "BackendError": (0, "Any other error status, relayed from the backend in OpenAI's "
                        "shape.", ()),
}


def _responses() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for name, (_, description, headers) in _ERRORS.items():
        resp: Schema = {"description": description,
                        "content": {JSON: {"schema": _schema("ErrorResponse")}}}
        if headers:
            resp["headers"] = {h: _ref("headers", h) for h in headers}
        out[name] = resp
    return out


def _headers() -> dict[str, Schema]:
    out = {name: {"description": text, "schema": {"type": "string"}}
           for name, text in ROUTER_HEADERS.items()}
    out["Retry-After"] = {"description": "Seconds to wait.", "schema": {"type": "string"}}
    out["WWW-Authenticate"] = {"description": "`Bearer`.", "schema": {"type": "string"}}
    return out


def _errors(*names: str) -> dict[str, Schema]:
    """Operation responses for these errors, keyed by status (``default`` for the relay)."""
    out: dict[str, Schema] = {}
    for name in names:
        status = _ERRORS[name][0]
        out[str(status) if status else "default"] = _ref("responses", name)
    return out


def _ok(description: str, schema: Schema, media: str = JSON) -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


def _body(schema: Schema) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema}}}


# ---------------------------------------------------------------- operations

# A client key only where ``auth`` is configured: no security requirement is also fine.
_CLIENT_AUTH: list[dict[str, list[str]]] = [{}, {"clientKey": []}]

_GENERATION = {  # kind -> (operationId, request, answer, summary)
    "chat": ("createChatCompletion", "ChatCompletionRequest", "ChatCompletion",
             "Chat completion: routed (`model: auto`) or passed through."),
    "completion": ("createCompletion", "CompletionRequest", "Completion",
                   "Text completion: routed (`model: auto`) or passed through."),
}


def generation_operation(endpoint: Endpoint) -> Schema:
    op_id, request, answer, summary = _GENERATION[endpoint.kind]
    ok = {"description": "The backend's answer (or the router's own: a cache hit, a PII "
                         "refusal); server-sent events when `stream` is true.",
          "headers": {h: _ref("headers", h) for h in ROUTER_HEADERS},
          "content": {JSON: {"schema": _schema(answer)},
                      SSE: {"schema": {"type": "string"}}}}
    return {
        "operationId": op_id, "summary": summary, "tags": ["generation"],
        "requestBody": _body(_schema(request)),
        "security": _CLIENT_AUTH,
        "responses": {"200": ok, **_errors(
            "BadRequest", "Unauthorized", "Forbidden", "NotFound", "PayloadTooLarge",
            "UnsupportedMediaType", "Overloaded", "BadGateway", "ServiceUnavailable",
            "GatewayTimeout", "BackendError")},
    }


def _admin(op_id: str, summary: str, ok: Schema, **extra: Any) -> Schema:
    errors = _errors("Unauthorized", "NotFound")
    if "requestBody" in extra:
        errors.update(_errors("BadRequest", "PayloadTooLarge", "UnsupportedMediaType"))
    return {"operationId": op_id, "summary": summary, "tags": ["cache admin"],
            "security": [{"adminToken": []}], **extra,
            "responses": {"200": ok, **errors}}


def _cache_stats() -> Schema:
    return _admin("cacheStats", "Cache statistics (404 when admin is disabled).",
                  _ok("The statistics.", _schema("CacheStats")))


def other_paths() -> dict[str, dict[str, Schema]]:
    """Every route of ``create_app`` but the generation endpoints: path -> method -> op."""
    removed = {"type": "object", "required": ["removed"],
               "properties": {"removed": {"type": "integer"}}}
    invalidated = {"type": "object", "required": ["partition", "removed"],
                   "properties": {"partition": {"type": "string"},
                                  "removed": {"type": "integer"}}}
    ready = {"type": "object", "required": ["ready", "triton"],
             "properties": {"ready": {"type": "boolean"}, "triton": {"type": "string"}}}
    return {
        "/v1/models": {"get": {
            "operationId": "listModels", "summary": "The routing alias and configured models.",
            "tags": ["generation"], "security": _CLIENT_AUTH,
            "responses": {"200": _ok("The models.", _schema("ModelList")),
                          **_errors("Unauthorized")}}},
        "/v1/responses": {"post": {
            "operationId": "createResponse", "tags": ["generation"],
            "summary": "Not supported yet (any method): a 404 naming /v1/chat/completions.",
            "responses": _errors("NotFound")}},
        "/api/v1/classify": {"post": {
            "operationId": "classify", "tags": ["routing"],
            "summary": "The routing decision without proxying: category, PII, model.",
            "requestBody": _body(_schema("ClassifyRequest")), "security": _CLIENT_AUTH,
            "responses": {"200": _ok("The decision.", _schema("ClassifyReport")), **_errors(
                "BadRequest", "Unauthorized", "Forbidden", "NotFound", "PayloadTooLarge",
                "UnsupportedMediaType", "Overloaded", "ServiceUnavailable")}}},
        "/health": {"get": {
            "operationId": "health", "summary": "The process is alive.", "tags": ["ops"],
            "responses": {"200": _ok("Alive.", {"type": "object", "properties": {
                "status": {"const": "ok"}}})}}},
        "/ready": {"get": {
            "operationId": "ready", "summary": "Triton is ready and the model loaded.",
            "tags": ["ops"],
            "responses": {"200": _ok("Ready.", ready), "503": _ok("Not ready.", ready)}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (`router_*`).",
            "tags": ["ops"],
            "responses": {"200": {"description": "Prometheus text, or OpenMetrics if "
                                                 "`Accept` asks for it.",
                                  "content": {"text/plain": {"schema": {"type": "string"}},
                                              "application/openmetrics-text": {
                                                  "schema": {"type": "string"}}}}}}},
        "/admin/cache": {"get": _cache_stats()},
        "/admin/cache/stats": {"get": {**_cache_stats(), "operationId": "cacheStatsAlias"}},
        "/admin/cache/flush": {"post": _admin(
            "cacheFlush", "Remove every cache entry.", _ok("Entries removed.", removed))},
        "/admin/cache/invalidate": {"post": _admin(
            "cacheInvalidate", "Remove one partition's entries.",
            _ok("Entries removed.", invalidated),
            requestBody=_body(_schema("InvalidateRequest")))},
        OPENAPI_PATH: {"get": {
            "operationId": "openapi", "summary": "This document.", "tags": ["ops"],
            "responses": {"200": _ok("OpenAPI 3.1.", {"type": "object"})}}},
    }


def _version() -> str:
    try:
        return metadata.version("router-svc")
    except metadata.PackageNotFoundError:  # running from a source tree not installed
        return "0.0.0"


def openapi_document() -> dict[str, Any]:
    """The whole document, freshly built (callers may mutate it)."""
    paths: dict[str, dict[str, Schema]] = {
        e.path: {"post": generation_operation(e)} for e in ENDPOINTS.values()}
    paths.update(other_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "router-svc", "version": _version(),
                 "description": "A semantic router with an OpenAI-compatible API. Every "
                                "error is OpenAI's `{\"error\": {message, type, param, "
                                "code}}`."},
        "paths": paths,
        "components": {
            "schemas": {**_error_schemas(), **_message_schemas(), **_request_schemas(),
                        **_answer_schemas()},
            "responses": _responses(),
            "headers": _headers(),
            "securitySchemes": {"clientKey": {
                "type": "http", "scheme": "bearer",
                "description": "A client key, where `auth` is configured."}, "adminToken": {
                "type": "http", "scheme": "bearer",
                "description": "The token in the environment variable named by "
                               "`cache.admin_token_env`."}},
        },
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served: built once per process (it depends on the code only)."""
    return json.dumps(openapi_document()).encode("utf-8")
