"""YAML config into the frozen dataclasses of ``router_svc.config.schema``, validated once.

The router-specific section rules and the entry points ``parse_config`` and ``load_config``;
the generic typed reader is ``router_svc.config.reader``. Re-exports the dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from router_svc.config.reader import (
    Ctx,
    describe_value,
    did_you_mean,
    read_list,
    read_mapping,
    read_scalar,
    read_section,
    report_missing,
)
from router_svc.config.schema import (
    CACHE_THRESHOLD_WARN,
    EXAMPLE_CONFIG,
    AuthConfig,
    BackendConfig,
    BatchingConfig,
    CacheConfig,
    Category,
    CategoryModelConfig,
    ClassifierConfig,
    Config,
    ConfigError,
    ExtProcConfig,
    FailoverConfig,
    LimitsConfig,
    ListenConfig,
    ModelConfig,
    ModelScore,
    OnErrorConfig,
    PiiAction,
    PiiModelConfig,
    PiiOnError,
    PiiPolicy,
    ProxyConfig,
    RoutingConfig,
    RoutingOnError,
    TracingConfig,
    TritonConfig,
    VerifierConfig,
    parse_addresses,
)
from router_svc.labels import CATEGORIES, PII_TYPES

# What callers import from here: the model's names and the loaders below.
__all__ = [
    "CACHE_THRESHOLD_WARN", "EXAMPLE_CONFIG", "AuthConfig", "BackendConfig", "BatchingConfig",
    "CacheConfig",
    "Category", "CategoryModelConfig", "ClassifierConfig", "Config", "ConfigError",
    "ExtProcConfig", "FailoverConfig", "LimitsConfig", "ListenConfig", "ModelConfig",
    "ModelScore",
    "OnErrorConfig", "PiiAction",
    "PiiModelConfig", "PiiOnError", "PiiPolicy", "ProxyConfig", "RoutingConfig",
    "RoutingOnError", "TracingConfig", "TritonConfig", "VerifierConfig", "load_config",
    "parse_config",
]

# --------------------------------------------------------------------------- the sections

# The sections read generically from their dataclass; the rest have hand-written readers.
_SECTIONS: dict[str, type] = {
    "listen": ListenConfig,
    "triton": TritonConfig,
    "routing": RoutingConfig,
    "classifier": ClassifierConfig,
    "batching": BatchingConfig,
    "cache": CacheConfig,
    "proxy": ProxyConfig,
    "extproc": ExtProcConfig,
    "limits": LimitsConfig,
    "auth": AuthConfig,
    "failover": FailoverConfig,
    "tracing": TracingConfig,
}
_TOP_KEYS = (*_SECTIONS, "tokenizer", "pii_action", "default_model", "categories", "model_config")


# --------------------------------------------------------------------------- sections


# An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_cache(ctx: Ctx, c: CacheConfig, environ: Mapping[str, str]) -> None:
    if c.partition_header is not None and not _HEADER_NAME.fullmatch(c.partition_header):
        ctx.error(
            "cache.partition_header",
            f"{c.partition_header!r} is not an HTTP header name; use letters, digits and "
            "dashes, e.g. X-Tenant-Id",
        )
    if c.enabled and c.threshold < CACHE_THRESHOLD_WARN:
        ctx.warn(
            "cache.threshold",
            f"{c.threshold:g} is below {CACHE_THRESHOLD_WARN:g}: measured on paraphrase pairs, "
            "more than one hit in ten would be a wrong answer; `router-svc eval cache` "
            "shows the trade-off",
        )
    if c.enabled and c.admin_token_env and c.admin_token_env not in environ:
        ctx.warn(
            "cache.admin_token_env",
            f"environment variable {c.admin_token_env} is not set; the cache admin endpoints "
            "stay disabled until it is",
        )
    if c.backend == "milvus":
        _check_milvus(ctx, c, environ)


_MILVUS_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_MILVUS_URI = re.compile(r"(https?|tcp|grpc)://[^\s/]+(:\d+)?/?\S*|unix:\S+")


def _check_milvus(ctx: Ctx, c: CacheConfig, environ: Mapping[str, str]) -> None:
    """``cache.backend: milvus``: the address, the collection name, the token, the client."""
    import importlib.util

    m = c.milvus
    if not _MILVUS_URI.fullmatch(m.uri):
        ctx.error("cache.milvus.uri",
                  f"{m.uri!r} is not a Milvus address; use http://HOST:19530 (or https://)")
    if not _MILVUS_COLLECTION.fullmatch(m.collection):
        ctx.error("cache.milvus.collection",
                  f"{m.collection!r} is not a Milvus collection name; use letters, digits and "
                  "underscores, starting with a letter or underscore")
    if c.enabled and m.token_env and m.token_env not in environ:
        ctx.warn("cache.milvus.token_env",
                 f"environment variable {m.token_env} is not set; connecting without a token")
    if c.enabled and c.persistence_dir is not None:
        ctx.warn("cache.persistence_dir",
                 "snapshots are the hnswlib backend's; Milvus persists the shared cache itself, "
                 "so this is ignored with cache.backend: milvus")
    if c.enabled and importlib.util.find_spec("pymilvus") is None:
        ctx.error("cache.backend",
                  "milvus needs the pymilvus client: pip install 'router-svc[milvus]'")


def _model_file(setting: str, base_dir: str | os.PathLike[str]) -> str:
    """A file setting that may also be "auto" or "off": a relative path is the config
    folder's."""
    if setting in ("auto", "off") or Path(setting).is_absolute():
        return setting
    return str(Path(base_dir) / setting)


def _resolve_paths(s: dict[str, Any], base_dir: str | os.PathLike[str]) -> None:
    c = s["cache"]
    if c.persistence_dir is not None and not c.persistence_dir.is_absolute():
        c = s["cache"] = dataclasses.replace(c, persistence_dir=Path(base_dir) / c.persistence_dir)
    v = c.verifier
    s["cache"] = dataclasses.replace(c, verifier=dataclasses.replace(
        v, model=_model_file(v.model, base_dir)))
    cls = s["classifier"]
    s["classifier"] = dataclasses.replace(cls, category_model=dataclasses.replace(
        cls.category_model, exemplars=_model_file(cls.category_model.exemplars, base_dir)))
    a = s["auth"]
    if a.keys_file is not None and not a.keys_file.is_absolute():
        s["auth"] = dataclasses.replace(a, keys_file=Path(base_dir) / a.keys_file)


def _check_auth(ctx: Ctx, s: dict[str, Any]) -> None:
    auth, cache = s["auth"], s["cache"]
    valid = bool(cache.partition_header and _HEADER_NAME.fullmatch(cache.partition_header))
    if valid and not (auth.trusted_proxies or auth.proxy_secret_env):
        # Any client could name any tenant and read its cached answers.
        ctx.error("cache.partition_header",
                  "a tenant header is believed only from a trusted proxy; add "
                  "auth.trusted_proxies (its addresses) or auth.proxy_secret_env (a shared "
                  "secret it sends), or remove the field")
    if (auth.trusted_proxies or auth.proxy_secret_env) and not cache.partition_header:
        ctx.warn("auth.trusted_proxies",
                 "a trusted proxy is configured but cache.partition_header is not: the proxy "
                 "cannot name tenants")


def _check_sections(ctx: Ctx, s: dict[str, Any]) -> None:
    """Cross-field rules the generic reader cannot express."""
    url = s["triton"].url
    if "://" in url:
        ctx.error(
            "triton.url",
            f"{url!r} has a scheme; the gRPC client wants host:port, e.g. {TritonConfig().url}",
        )
    else:
        try:
            parse_addresses(url)
        except ValueError as e:
            ctx.error("triton.url", f"{e}; several servers: host1:8001,host2:8001")
    listen, ext = s["listen"], s["extproc"]
    if ext.port and ext.port == listen.port:
        ctx.error(
            "extproc.port",
            f"{ext.port} is also listen.port; the gRPC and HTTP front doors need a port each",
        )
    for i, pp in enumerate(ext.passthrough_paths):
        if not pp.startswith("/") or "?" in pp:
            ctx.error(f"extproc.passthrough_paths[{i}]",
                      f"{pp!r} is not a path; write it as the router reads it, e.g. /v1/models")
    pm = s["classifier"].pii_model
    if pm.window_stride > pm.window_tokens:
        # A stride longer than the window skips tokens between windows: PII there is never seen.
        ctx.error(
            "classifier.pii_model.window_stride",
            f"{pm.window_stride} > window_tokens {pm.window_tokens} would leave tokens "
            "unscanned; use a stride <= window_tokens",
        )


def _check_pii_thresholds(ctx: Ctx, pm: PiiModelConfig, known_pii: Collection[str]) -> None:
    """``classifier.pii_model.type_thresholds`` names PII types the model reports (their
    values' range is the reader's check)."""
    path = "classifier.pii_model.type_thresholds"
    for name in pm.type_thresholds:
        if name not in known_pii:
            ctx.error(f"{path}.{name}",
                      f"unknown PII type {name!r}{did_you_mean(name, known_pii)}; list only "
                      "types the model reports (unlisted types use classifier.pii_model."
                      "threshold)")


def _check_tracing(ctx: Ctx, t: TracingConfig) -> None:
    """The OTLP endpoint must fit the protocol: the gRPC exporter takes scheme, host and port;
    the HTTP one posts to the URL as written, so it must name the traces path."""
    u = urlsplit(t.endpoint)
    try:
        port = u.port
    except ValueError:  # a port that is no number
        port, u = None, urlsplit("")
    if u.scheme not in ("http", "https") or not u.hostname:
        example = ("http://127.0.0.1:4317" if t.protocol == "grpc"
                   else "http://127.0.0.1:4318/v1/traces")
        ctx.error("tracing.endpoint",
                  f"{t.endpoint!r} is not an OTLP address; use http:// or https:// with the "
                  f"collector's host and port, e.g. {example}")
        return
    if t.protocol == "grpc":
        if u.path not in ("", "/") or u.query:
            ctx.error("tracing.endpoint",
                      f"{t.endpoint!r} has a path, which OTLP over gRPC does not use; write "
                      f"{u.scheme}://{u.netloc} (or set tracing.protocol: http/protobuf to "
                      "post to that URL)")
        elif port == 4318:
            ctx.warn("tracing.endpoint",
                     "port 4318 is OTLP over HTTP; gRPC collectors listen on 4317 (or set "
                     "tracing.protocol: http/protobuf with .../v1/traces)")
    elif not u.path.rstrip("/").endswith("/v1/traces"):
        ctx.error("tracing.endpoint",
                  f"{t.endpoint!r}: with protocol http/protobuf the spans are posted to this "
                  "URL as written; add the traces path: "
                  f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}/v1/traces")


def _pii_policy(ctx: Ctx, raw: Any, path: str, known_pii: Collection[str]) -> PiiPolicy:
    m = read_mapping(ctx, raw, path, ("allow_by_default", "pii_types_allowed", "action"))
    allowed: set[str] = set()
    for i, t in enumerate(read_list(ctx, m, "pii_types_allowed", path)):
        p = f"{path}.pii_types_allowed[{i}]"
        if not isinstance(t, str):
            ctx.error(p, f"expected a PII type name, got {describe_value(t)}")
        elif t not in known_pii:
            ctx.error(p, f"unknown PII type {t!r}{did_you_mean(t, known_pii)}")
        else:
            allowed.add(t)
    return PiiPolicy(
        allow_by_default=read_scalar(ctx, m, "allow_by_default", path, bool, False),
        pii_types_allowed=frozenset(allowed),
        action=read_scalar(ctx, m, "action", path, PiiAction, None),
    )


def _backend(ctx: Ctx, raw: Any, path: str, model: str, environ: Mapping[str, str]) -> Any:
    if raw is None:
        report_missing(ctx, path, "backend: {base_url: http://host:port/v1}")
        return None
    keys = ("base_url", "model", "api_key_env", "forward_client_auth")
    m = read_mapping(ctx, raw, path, keys)
    base_url = read_scalar(ctx, m, "base_url", path, str, hint="e.g. http://127.0.0.1:9001/v1")
    if base_url and not base_url.startswith(("http://", "https://")):
        ctx.error(f"{path}.base_url", f"{base_url!r} must start with http:// or https://")
    key_env = read_scalar(ctx, m, "api_key_env", path, str, None)
    if key_env and key_env not in environ:
        ctx.warn(
            f"{path}.api_key_env",
            f"environment variable {key_env} is not set; requests "
            f"to {model} go without an API key until it is",
        )
    return BackendConfig(
        base_url=(base_url or "").rstrip("/"),
        model=read_scalar(ctx, m, "model", path, str, model),
        api_key_env=key_env,
        forward_client_auth=read_scalar(ctx, m, "forward_client_auth", path, bool, False),
    )


def _models(
    ctx: Ctx, raw: Any, known_pii: Collection[str], environ: Mapping[str, str]
) -> dict[str, ModelConfig]:
    if raw is None:
        report_missing(ctx, "model_config", "one entry per model with its backend")
        return {}
    if not isinstance(raw, dict):
        ctx.error("model_config",
                  f"expected a mapping of model name to settings, got {describe_value(raw)}")
        return {}
    if not raw:
        ctx.error("model_config", "no models; add at least one model with its backend")
    out: dict[str, ModelConfig] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not name:
            ctx.error("model_config", f"model name {name!r} must be a non-empty string; quote it")
            continue
        path = f"model_config.{name}"
        if entry is None:
            report_missing(ctx, f"{path}.backend", "backend: {base_url: http://host:port/v1}")
            continue
        m = read_mapping(ctx, entry, path, ("pii_policy", "backend"))
        if not isinstance(entry, dict):
            continue
        backend = _backend(ctx, m.get("backend"), f"{path}.backend", name, environ)
        policy = _pii_policy(ctx, m.get("pii_policy"), f"{path}.pii_policy", known_pii)
        if backend is not None:
            out[name] = ModelConfig(name=name, backend=backend, pii_policy=policy)
    return out


def _categories(
    ctx: Ctx, raw: Any, models: Collection[str], known: Collection[str]
) -> tuple[Category, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.error("categories", f"expected a list of categories, got {describe_value(raw)}")
        return ()
    out: list[Category] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"categories[{i}]"
        m = read_mapping(ctx, entry, path, ("name", "description", "model_scores"))
        if not isinstance(entry, dict):
            continue
        name = read_scalar(ctx, m, "name", path, str, hint="one of the model's categories")
        if name and name not in known:
            ctx.error(
                f"{path}.name",
                f"{name!r} is not a category the model knows{did_you_mean(name, known)}",
            )
        elif name in seen:
            ctx.error(
                f"{path}.name",
                f"duplicate category {name!r} (first at "
                f"categories[{seen[name]}]); merge the two entries",
            )
        elif name:
            seen[name] = i
        scores = _model_scores(ctx, m, path, models)
        if name:
            out.append(
                Category(
                    name=name,
                    model_scores=scores,
                    description=read_scalar(ctx, m, "description", path, str, None),
                )
            )
    return tuple(out)


def _model_scores(
    ctx: Ctx, m: dict[str, Any], path: str, models: Collection[str]
) -> tuple[ModelScore, ...]:
    if "model_scores" not in m:
        report_missing(ctx, f"{path}.model_scores", "a list of {model, score}")
        return ()
    raw = read_list(ctx, m, "model_scores", path)
    if not raw and isinstance(m.get("model_scores"), list):
        ctx.error(
            f"{path}.model_scores",
            "empty; list at least one {model, score} or "
            "remove the category (unlisted categories go to default_model)",
        )
    out: list[ModelScore] = []
    seen: set[str] = set()
    for j, e in enumerate(raw):
        p = f"{path}.model_scores[{j}]"
        em = read_mapping(ctx, e, p, ("model", "score"))
        if not isinstance(e, dict):
            continue
        model = read_scalar(ctx, em, "model", p, str, hint="a model from model_config")
        score = read_scalar(ctx, em, "score", p, float, lo=0, hi=1)
        if model and model not in models:
            ctx.error(
                f"{p}.model",
                f"{model!r} is not in model_config; add model_config."
                f"{model} or use one of: {', '.join(models) or '(none)'}",
            )
            continue
        if model in seen:
            ctx.error(f"{p}.model", f"{model!r} is listed twice in this category; keep one")
            continue
        if model:
            seen.add(model)
            out.append(ModelScore(model=model, score=float(score or 0.0)))
    return tuple(out)


# --------------------------------------------------------------------------- entry points


def parse_config(
    data: Any,
    base_dir: str | os.PathLike[str] = ".",
    known_categories: Collection[str] = CATEGORIES,
    known_pii_types: Collection[str] = PII_TYPES,
    *,
    environ: Mapping[str, str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate a parsed YAML document; raise ``ConfigError`` listing every problem.

    Every problem comes with its field path and what to do about it, all in one error, so
    ``router-svc check-config`` shows the whole list rather than one per edit-and-retry.
    Things legal but probably unintended (an API key variable that is not set) go to
    ``Config.warnings``. The vocabulary follows the reference router (``categories`` /
    ``model_scores``, ``default_model``, ``model_config.<model>.pii_policy``), so its configs
    read the same here.

    ``known_categories``/``known_pii_types`` come from the Triton model config at start-up (so
    the config cannot route a label the model never emits); offline tools pass ``labels``.
    Relative paths resolve against ``base_dir`` (the config file's folder).
    """
    env = os.environ if environ is None else environ
    ctx = Ctx()
    if data is None:
        raise ConfigError(
            ["<top level>: the config is empty; start from config.example.yaml"], source
        )
    top = read_mapping(ctx, data, "", _TOP_KEYS)
    if not isinstance(data, dict):
        raise ConfigError(ctx.errors, source)

    raw_models = top.get("model_config")
    models = _models(ctx, raw_models, known_pii_types, env)
    # Names as written, so a model whose own entry is broken is not reported twice.
    declared = [k for k in raw_models if isinstance(k, str)] if isinstance(raw_models, dict) else []
    default_model = read_scalar(ctx, top, "default_model", "", str,
                                hint="a model from model_config")
    if default_model and isinstance(raw_models, dict) and default_model not in declared:
        ctx.error(
            "default_model",
            f"{default_model!r} has no entry in model_config; add "
            f"model_config.{default_model} with its backend or use one of: "
            f"{', '.join(declared) or '(none)'}",
        )

    sections = {k: read_section(ctx, top.get(k), k, cls) for k, cls in _SECTIONS.items()}
    _check_sections(ctx, sections)
    _check_pii_thresholds(ctx, sections["classifier"].pii_model, known_pii_types)
    _check_cache(ctx, sections["cache"], env)
    _check_auth(ctx, sections)
    _check_tracing(ctx, sections["tracing"])
    _resolve_paths(sections, base_dir)
    routing = sections["routing"]
    if routing.alias in declared:
        ctx.error(
            "routing.alias",
            f"{routing.alias!r} is also a model in model_config, so "
            "clients could not name that model; pick another alias",
        )

    if sections["auth"].enabled:
        for name, mc in models.items():
            if mc is not None and mc.backend is not None and mc.backend.forward_client_auth:
                # With client keys on, the client's Authorization is a router key.
                ctx.error(f"model_config.{name}.backend.forward_client_auth",
                          "the client's key is the router's own when auth is on and must not "
                          "reach a backend; set api_key_env for this backend instead")
    categories = _categories(ctx, top.get("categories"), declared, known_categories)
    unlisted = [c for c in known_categories if c not in {x.name for x in categories}]
    if unlisted:
        ctx.warn(
            "categories",
            f"no model_scores for {', '.join(unlisted)}; requests "
            f"classified there go to default_model",
        )

    tokenizer = read_scalar(ctx, top, "tokenizer", "", str, None)
    tok_path = None
    if tokenizer:
        tok_path = Path(tokenizer).expanduser()
        if not tok_path.is_absolute():
            tok_path = Path(base_dir) / tok_path

    cfg = Config(
        default_model=default_model,
        model_config=MappingProxyType(models),
        categories=categories,
        tokenizer=tok_path,
        pii_action=read_scalar(ctx, top, "pii_action", "", PiiAction, "reject"),
        **sections,
        warnings=tuple(ctx.warnings),
        source=Path(source) if source is not None else None,
    )
    if ctx.errors:
        raise ConfigError(ctx.errors, source)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML would silently keep the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; keep one of the entries", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(
    path: str | os.PathLike[str],
    known_categories: Collection[str] = CATEGORIES,
    known_pii_types: Collection[str] = PII_TYPES,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate a YAML config file; relative paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"<file>: cannot read {p}: {e.strerror or e}"], p) from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError([f"<yaml>: {e}"], p) from e
    return parse_config(
        data,
        p.resolve().parent,
        known_categories,
        known_pii_types,
        environ=environ,
        source=p,
    )
