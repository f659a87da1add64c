"""YAML config into frozen dataclasses, validated once at load.

Every problem is reported together (``ConfigError.problems``) with the field path that holds it
and what to do about it, so ``router-svc check-config`` shows the whole list in one go rather
than one error per edit-and-retry. Things that are legal but probably unintended (an API key
variable that is not set) go to ``Config.warnings`` instead.

The vocabulary follows the reference router (``categories``/``model_scores``,
``default_model``, ``model_config.<model>.pii_policy``) so its configs read the same here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from router_svc.labels import CATEGORIES, PII_TYPES

RoutingOnError = Literal["fail_closed", "default_model"]
PiiOnError = Literal["block", "allow"]
PiiAction = Literal["reject", "redact"]

EXAMPLE_CONFIG = Path(__file__).with_name("config.example.yaml")


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` holds one ``"<field path>: <what and fix>"`` each."""

    def __init__(self, problems: list[str], source: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        where = f" in {self.source}" if self.source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config{where} ({len(self.problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------- dataclasses


def _bounded(default: Any, **bounds: Any) -> Any:
    """A field with its valid range (``lo``, ``hi``, ``lo_open``) for the generic reader."""
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = _bounded(8801, lo=0, hi=65535)


@dataclass(frozen=True)
class TritonConfig:
    url: str = "127.0.0.1:8001"  # gRPC host:port, no scheme
    model_name: str = "semantic_router"
    timeout_s: float = _bounded(2.0, lo=0, lo_open=True)  # gRPC deadline per inference call


@dataclass(frozen=True)
class RoutingConfig:
    alias: str = "auto"  # the model name clients send to ask for routing


@dataclass(frozen=True)
class CategoryModelConfig:
    threshold: float = _bounded(0.6, lo=0, hi=1)


@dataclass(frozen=True)
class PiiModelConfig:
    threshold: float = _bounded(0.7, lo=0, hi=1)
    window_tokens: int = _bounded(128, lo=8)  # the length the PII head was trained on
    window_stride: int = _bounded(96, lo=1)


@dataclass(frozen=True)
class OnErrorConfig:
    routing: RoutingOnError = "default_model"
    # Privacy fails closed unless the operator says otherwise.
    pii: PiiOnError = "block"


# Keys of the reference router's classifier sections that mean nothing here (the model is
# served by Triton): accepted with a warning so a reference config ports over without surgery.
_REFERENCE_CLASSIFIER_KEYS = ("model_id", "use_cpu", "category_mapping_path", "pii_mapping_path")


@dataclass(frozen=True)
class ClassifierConfig:
    category_model: CategoryModelConfig = field(
        default_factory=CategoryModelConfig, metadata={"ignored": _REFERENCE_CLASSIFIER_KEYS}
    )
    pii_model: PiiModelConfig = field(
        default_factory=PiiModelConfig, metadata={"ignored": _REFERENCE_CLASSIFIER_KEYS}
    )
    on_error: OnErrorConfig = field(default_factory=OnErrorConfig)


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = _bounded(32, lo=1)
    # 0: send as soon as Triton has a free slot (batches form while it is busy); > 0 also
    # waits this long for company, which only adds latency on CPU (perf/batching.py).
    max_wait_ms: float = _bounded(0.0, lo=0)
    max_queue: int = _bounded(1024, lo=1)
    # Padded tokens per Triton call; a batch is split by length so short prompts are not
    # padded to a long one's length.
    max_batch_tokens: int = _bounded(8192, lo=1)


# The cache threshold below which the config check warns: under it, more than one hit in ten
# is wrong on held-out paraphrase pairs (precision 0.90 on MRPC test, 0.87 on STS-B test at
# 0.90; perf/cache_threshold.py).
CACHE_THRESHOLD_WARN = 0.9


@dataclass(frozen=True)
class CacheConfig:
    """The semantic cache (router_svc/cache.py); defaults measured, see cache_eval.py."""

    enabled: bool = False
    # Minimum cosine similarity of the last user turn for a hit. 0.97 is the lowest threshold
    # with hit precision >= 0.95 on every development set (MRPC train+val, STS-B dev); held
    # out: precision 0.97 / recall 0.05 on MRPC test, 1.00 / 0.08 on STS-B test.
    threshold: float = _bounded(0.97, lo=0, hi=1, lo_open=True)
    capacity: int = _bounded(10_000, lo=1)  # entries over all partitions, LRU beyond
    ttl_s: float = _bounded(3600.0, lo=0, lo_open=True)
    partition_header: str | None = None  # tenant header; default: a hash of the API key
    store_pii_requests: bool = False
    persistence_dir: Path | None = None  # relative to the config file; None: no snapshots
    snapshot_interval_s: float = _bounded(300.0, lo=0, lo_open=True)
    admin_token_env: str | None = None  # env var with the admin bearer token; unset: no admin
    # Answer an exact repeat of a cached request without the model call (cache_flow.RepeatMemo).
    repeat_memo: bool = True


@dataclass(frozen=True)
class ProxyConfig:
    connect_timeout_s: float = _bounded(5.0, lo=0, lo_open=True)
    read_timeout_s: float = _bounded(300.0, lo=0, lo_open=True)
    max_body_bytes: int = _bounded(4 * 1024 * 1024, lo=1)


@dataclass(frozen=True)
class ExtProcConfig:
    """The Envoy External Processor (gRPC) front door, ``router_svc/extproc.py``."""

    # ``router-svc serve`` also starts it next to the HTTP proxy; ``router-svc extproc`` always
    # does. Both doors share one classifier client, batcher and cache.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = _bounded(50051, lo=0, hi=65535)
    # The longest one request is worked on (parse, classify, cache lookup) before the answer
    # is a 504; keep it below the Envoy filter's ``message_timeout``, after which Envoy stops
    # waiting (deploy/envoy/envoy.yaml: 5 s).
    message_timeout_s: float = _bounded(4.0, lo=0, lo_open=True)
    # On shutdown, streams in flight (an answer still streaming through Envoy) get this long.
    grace_s: float = _bounded(10.0, lo=0)


@dataclass(frozen=True)
class ModelScore:
    model: str
    score: float


@dataclass(frozen=True)
class Category:
    name: str
    model_scores: tuple[ModelScore, ...]
    description: str | None = None

    def ranked(self) -> tuple[ModelScore, ...]:
        """Highest score first; ``sorted`` is stable, so ties keep config order."""
        return tuple(sorted(self.model_scores, key=lambda ms: -ms.score))


@dataclass(frozen=True)
class PiiPolicy:
    allow_by_default: bool = False
    pii_types_allowed: frozenset[str] = frozenset()

    def denied(self, pii_types: Collection[str]) -> frozenset[str]:
        """The found types this policy does not allow (empty means compliant)."""
        if self.allow_by_default:
            return frozenset()
        return frozenset(pii_types) - self.pii_types_allowed

    def allows(self, pii_types: Collection[str]) -> bool:
        return not self.denied(pii_types)


@dataclass(frozen=True)
class BackendConfig:
    base_url: str  # OpenAI-compatible base, ending in /v1 (no trailing slash kept)
    model: str  # the name the backend knows the model by
    api_key_env: str | None = None
    forward_client_auth: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backend: BackendConfig
    pii_policy: PiiPolicy = field(default_factory=PiiPolicy)


@dataclass(frozen=True)
class Config:
    default_model: str
    model_config: Mapping[str, ModelConfig]  # read-only mapping, config order
    categories: tuple[Category, ...] = ()
    listen: ListenConfig = field(default_factory=ListenConfig)
    triton: TritonConfig = field(default_factory=TritonConfig)
    tokenizer: Path | None = None  # None: the caller picks (e.g. next to the Triton model)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pii_action: PiiAction = "reject"
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    extproc: ExtProcConfig = field(default_factory=ExtProcConfig)
    warnings: tuple[str, ...] = ()
    source: Path | None = None

    def category(self, name: str) -> Category | None:
        # A linear scan over at most a few dozen entries beats keeping a second index in sync.
        for c in self.categories:
            if c.name == name:
                return c
        return None

    def model(self, name: str) -> ModelConfig | None:
        return self.model_config.get(name)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.model_config)


# --------------------------------------------------------------------------- reading helpers

_MISSING: Any = object()

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
}
_TOP_KEYS = (*_SECTIONS, "tokenizer", "pii_action", "default_model", "categories", "model_config")


@dataclass
class _Ctx:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, msg: str) -> None:
        self.errors.append(f"{path or '<top level>'}: {msg}")

    def warn(self, path: str, msg: str) -> None:
        self.warnings.append(f"{path or '<top level>'}: {msg}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    return {list: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)


def _did_you_mean(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(options)}"


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _mapping(
    ctx: _Ctx, value: Any, path: str, keys: Collection[str], ignored: Collection[str] = ()
) -> dict[str, Any]:
    """Check ``value`` is a mapping with only known keys; ``None`` (empty section) is ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {_kind(value)}")
        return {}
    for k in value:
        if not isinstance(k, str):
            ctx.error(path, f"key {k!r} is not a string; quote it")
        elif k in ignored:
            ctx.warn(_join(path, k), "ignored: the router serves its model through Triton")
        elif k not in keys:
            ctx.error(_join(path, k), f"unknown key{_did_you_mean(k, keys)}")
    return value


def _scalar(
    ctx: _Ctx,
    m: dict[str, Any],
    key: str,
    path: str,
    kind: Any,
    default: Any = _MISSING,
    *,
    hint: str = "",
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Any:
    """Read ``m[key]`` as ``kind`` (str, int, float, bool or a Literal); record what is wrong.

    On error the default comes back (or a harmless stand-in), so reading carries on and every
    problem in the file is reported at once.
    """
    p = _join(path, key)
    v = m.get(key)
    if v is None:  # absent, or written as an empty value
        if default is _MISSING:
            _missing(ctx, p, hint or _describe(kind))
        return None if default is _MISSING else default
    fallback = None if default is _MISSING else default
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if v not in choices or not isinstance(v, str):
            shown = repr(v) if isinstance(v, str) else _kind(v)
            ctx.error(p, f"{shown} is not allowed; use one of: {', '.join(choices)}")
            return fallback
        return v
    if kind is str:
        if not isinstance(v, str) or not v.strip():
            ctx.error(p, f"expected a non-empty string, got {_kind(v)}")
            return fallback
        return v
    if kind is bool:
        if not isinstance(v, bool):
            ctx.error(p, f"expected true or false, got {_kind(v)}")
            return fallback
        return v
    # Numbers. bool is an int in Python, but ``threshold: true`` is a mistake, not 1.
    ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        fix = " (remove the quotes)" if isinstance(v, str) and _looks_numeric(v) else ""
        ctx.error(p, f"expected {_describe(kind)}, got {_kind(v)}{fix}")
        return fallback
    if not math.isfinite(v):
        ctx.error(p, f"expected a finite number, got {v}")
        return fallback
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = [f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []
        rng += [f"<= {hi:g}"] if hi is not None else []
        ctx.error(p, f"{v} is out of range; use a value {' and '.join(rng)}")
        return fallback
    return v if kind is int else float(v)


def _describe(kind: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, "a value"
    )


def _missing(ctx: _Ctx, path: str, hint: str) -> None:
    ctx.error(path, f"missing required field; add it ({hint})")


def _list(ctx: _Ctx, m: dict[str, Any], key: str, path: str) -> list[Any]:
    v = m.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        ctx.error(_join(path, key), f"expected a list, got {_kind(v)}")
        return []
    return v


def _unoptional(kind: Any) -> Any:
    """``X | None`` -> ``X`` (an optional field reads like its type, null gives the default)."""
    if get_origin(kind) is types.UnionType:
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _section(ctx: _Ctx, raw: Any, path: str, cls: Any, ignored: Collection[str] = ()) -> Any:
    """Read a flat (or nested) settings dataclass generically from its fields and bounds.

    Paths are read as strings; ``_resolve_paths`` makes relative ones relative to the file.
    """
    hints = get_type_hints(cls)
    fs = fields(cls)
    m = _mapping(ctx, raw, path, [f.name for f in fs], ignored)
    kw: dict[str, Any] = {}
    for f in fs:
        kind = _unoptional(hints[f.name])
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        if is_dataclass(kind):
            sub_ignored = f.metadata.get("ignored", ())
            kw[f.name] = _section(ctx, m.get(f.name), _join(path, f.name), kind, sub_ignored)
        elif kind is Path:
            v = _scalar(ctx, m, f.name, path, str, default)
            kw[f.name] = Path(v).expanduser() if isinstance(v, str) else v
        else:
            bounds = {k: f.metadata[k] for k in ("lo", "hi", "lo_open") if k in f.metadata}
            kw[f.name] = _scalar(ctx, m, f.name, path, kind, default, **bounds)
    return cls(**kw)


# --------------------------------------------------------------------------- sections


# An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_cache(ctx: _Ctx, c: CacheConfig, environ: Mapping[str, str]) -> None:
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


def _resolve_paths(s: dict[str, Any], base_dir: str | os.PathLike[str]) -> None:
    c = s["cache"]
    if c.persistence_dir is not None and not c.persistence_dir.is_absolute():
        s["cache"] = dataclasses.replace(c, persistence_dir=Path(base_dir) / c.persistence_dir)


def _check_sections(ctx: _Ctx, s: dict[str, Any]) -> None:
    """Cross-field rules the generic reader cannot express."""
    url = s["triton"].url
    if "://" in url:
        ctx.error(
            "triton.url",
            f"{url!r} has a scheme; the gRPC client wants host:port, e.g. {TritonConfig().url}",
        )
    listen, ext = s["listen"], s["extproc"]
    if ext.port and ext.port == listen.port:
        ctx.error(
            "extproc.port",
            f"{ext.port} is also listen.port; the gRPC and HTTP front doors need a port each",
        )
    pm = s["classifier"].pii_model
    if pm.window_stride > pm.window_tokens:
        # A stride longer than the window skips tokens between windows: PII there is never seen.
        ctx.error(
            "classifier.pii_model.window_stride",
            f"{pm.window_stride} > window_tokens {pm.window_tokens} would leave tokens "
            "unscanned; use a stride <= window_tokens",
        )


def _pii_policy(ctx: _Ctx, raw: Any, path: str, known_pii: Collection[str]) -> PiiPolicy:
    m = _mapping(ctx, raw, path, ("allow_by_default", "pii_types_allowed"))
    allowed: set[str] = set()
    for i, t in enumerate(_list(ctx, m, "pii_types_allowed", path)):
        p = f"{path}.pii_types_allowed[{i}]"
        if not isinstance(t, str):
            ctx.error(p, f"expected a PII type name, got {_kind(t)}")
        elif t not in known_pii:
            ctx.error(p, f"unknown PII type {t!r}{_did_you_mean(t, known_pii)}")
        else:
            allowed.add(t)
    return PiiPolicy(
        allow_by_default=_scalar(ctx, m, "allow_by_default", path, bool, False),
        pii_types_allowed=frozenset(allowed),
    )


def _backend(ctx: _Ctx, raw: Any, path: str, model: str, environ: Mapping[str, str]) -> Any:
    if raw is None:
        _missing(ctx, path, "backend: {base_url: http://host:port/v1}")
        return None
    keys = ("base_url", "model", "api_key_env", "forward_client_auth")
    m = _mapping(ctx, raw, path, keys)
    base_url = _scalar(ctx, m, "base_url", path, str, hint="e.g. http://127.0.0.1:9001/v1")
    if base_url and not base_url.startswith(("http://", "https://")):
        ctx.error(f"{path}.base_url", f"{base_url!r} must start with http:// or https://")
    key_env = _scalar(ctx, m, "api_key_env", path, str, None)
    if key_env and key_env not in environ:
        ctx.warn(
            f"{path}.api_key_env",
            f"environment variable {key_env} is not set; requests "
            f"to {model} go without an API key until it is",
        )
    return BackendConfig(
        base_url=(base_url or "").rstrip("/"),
        model=_scalar(ctx, m, "model", path, str, model),
        api_key_env=key_env,
        forward_client_auth=_scalar(ctx, m, "forward_client_auth", path, bool, False),
    )


def _models(
    ctx: _Ctx, raw: Any, known_pii: Collection[str], environ: Mapping[str, str]
) -> dict[str, ModelConfig]:
    if raw is None:
        _missing(ctx, "model_config", "one entry per model with its backend")
        return {}
    if not isinstance(raw, dict):
        ctx.error("model_config", f"expected a mapping of model name to settings, got {_kind(raw)}")
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
            _missing(ctx, f"{path}.backend", "backend: {base_url: http://host:port/v1}")
            continue
        m = _mapping(ctx, entry, path, ("pii_policy", "backend"))
        if not isinstance(entry, dict):
            continue
        backend = _backend(ctx, m.get("backend"), f"{path}.backend", name, environ)
        policy = _pii_policy(ctx, m.get("pii_policy"), f"{path}.pii_policy", known_pii)
        if backend is not None:
            out[name] = ModelConfig(name=name, backend=backend, pii_policy=policy)
    return out


def _categories(
    ctx: _Ctx, raw: Any, models: Collection[str], known: Collection[str]
) -> tuple[Category, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.error("categories", f"expected a list of categories, got {_kind(raw)}")
        return ()
    out: list[Category] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"categories[{i}]"
        m = _mapping(ctx, entry, path, ("name", "description", "model_scores"))
        if not isinstance(entry, dict):
            continue
        name = _scalar(ctx, m, "name", path, str, hint="one of the model's categories")
        if name and name not in known:
            ctx.error(
                f"{path}.name",
                f"{name!r} is not a category the model knows{_did_you_mean(name, known)}",
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
                    description=_scalar(ctx, m, "description", path, str, None),
                )
            )
    return tuple(out)


def _model_scores(
    ctx: _Ctx, m: dict[str, Any], path: str, models: Collection[str]
) -> tuple[ModelScore, ...]:
    if "model_scores" not in m:
        _missing(ctx, f"{path}.model_scores", "a list of {model, score}")
        return ()
    raw = _list(ctx, m, "model_scores", path)
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
        em = _mapping(ctx, e, p, ("model", "score"))
        if not isinstance(e, dict):
            continue
        model = _scalar(ctx, em, "model", p, str, hint="a model from model_config")
        score = _scalar(ctx, em, "score", p, float, lo=0, hi=1)
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

    ``known_categories``/``known_pii_types`` come from the Triton model config at start-up (so
    the config cannot route a label the model never emits); offline tools pass ``labels``.
    Relative paths resolve against ``base_dir`` (the config file's folder).
    """
    env = os.environ if environ is None else environ
    ctx = _Ctx()
    if data is None:
        raise ConfigError(
            ["<top level>: the config is empty; start from config.example.yaml"], source
        )
    top = _mapping(ctx, data, "", _TOP_KEYS)
    if not isinstance(data, dict):
        raise ConfigError(ctx.errors, source)

    raw_models = top.get("model_config")
    models = _models(ctx, raw_models, known_pii_types, env)
    # Names as written, so a model whose own entry is broken is not reported twice.
    declared = [k for k in raw_models if isinstance(k, str)] if isinstance(raw_models, dict) else []
    default_model = _scalar(ctx, top, "default_model", "", str, hint="a model from model_config")
    if default_model and isinstance(raw_models, dict) and default_model not in declared:
        ctx.error(
            "default_model",
            f"{default_model!r} has no entry in model_config; add "
            f"model_config.{default_model} with its backend or use one of: "
            f"{', '.join(declared) or '(none)'}",
        )

    sections = {k: _section(ctx, top.get(k), k, cls) for k, cls in _SECTIONS.items()}
    _check_sections(ctx, sections)
    _check_cache(ctx, sections["cache"], env)
    _resolve_paths(sections, base_dir)
    routing = sections["routing"]
    if routing.alias in declared:
        ctx.error(
            "routing.alias",
            f"{routing.alias!r} is also a model in model_config, so "
            "clients could not name that model; pick another alias",
        )

    categories = _categories(ctx, top.get("categories"), declared, known_categories)
    unlisted = [c for c in known_categories if c not in {x.name for x in categories}]
    if unlisted:
        ctx.warn(
            "categories",
            f"no model_scores for {', '.join(unlisted)}; requests "
            f"classified there go to default_model",
        )

    tokenizer = _scalar(ctx, top, "tokenizer", "", str, None)
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
        pii_action=_scalar(ctx, top, "pii_action", "", PiiAction, "reject"),
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
