"""The configuration as frozen dataclasses: every setting with its default and valid range.

Loading and validation live in ``router_svc.config.loading``, which re-exports all of this.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

RoutingOnError = Literal["fail_closed", "default_model"]
PiiOnError = Literal["block", "allow"]
# mask: redact with numbered placeholders (<PERSON_1>) and restore the values in the answer.
PiiAction = Literal["reject", "redact", "mask"]
Unscannable = Literal["allow", "reject"]

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config.example.yaml"


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
    """A field with its valid range (``lo``, ``hi``, ``lo_open``) as metadata, which the generic
    reader (``router_svc.config.reader.read_section``) enforces."""
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = _bounded(8801, lo=0, hi=65535)


def parse_addresses(url: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` -> ``[(host, port), ...]``; ``[v6]:port`` for IPv6.

    Raises ``ValueError`` naming the bad part (the config check turns it into an error).
    """
    out: list[tuple[str, int]] = []
    for part in (p.strip() for p in url.split(",")):
        if not part:
            raise ValueError(f"{url!r} has an empty address; separate addresses by one comma")
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port (e.g. triton:8001)")
        out.append((host, int(port)))
    return out


@dataclass(frozen=True)
class TritonConfig:
    # gRPC host:port, no scheme; several comma-separated, or a name resolving to several (a
    # headless Service): calls spread over them, a dead one skipped (router_svc/triton/fleet.py).
    url: str = "127.0.0.1:8001"
    model_name: str = "semantic_router"
    timeout_s: float = _bounded(2.0, lo=0, lo_open=True)  # gRPC deadline per inference call
    resolve_interval_s: float = _bounded(10.0, lo=0, lo_open=True)  # names in url resolved again


@dataclass(frozen=True)
class ConversationConfig:
    """One model per conversation (``router_svc.core.conversation``)."""

    # Follow-up turns keep the conversation's model; off: every turn is routed on its own.
    enabled: bool = True
    # The category confidence a turn of another category needs to switch the conversation's
    # model (never below classifier.category_model.threshold). 0.6, the category threshold:
    # with ``router-svc eval conversations`` it keeps the model for 0.95 of generic
    # follow-ups and switches for 0.93 of new questions (the head alone: 0.84); 0.7 keeps
    # 0.95 and switches 0.89 (held-out MMLU-Pro conversations, default model, exemplars on).
    switch_confidence: float = _bounded(0.6, lo=0, hi=1)
    memory_entries: int = _bounded(10_000, lo=1)  # conversation topics remembered (LRU)
    # A session key pins the conversation's topic for clients that send only the last turn:
    # this header's value and/or the body's ``user`` field.
    session_header: str | None = None
    session_from_user: bool = False
    session_ttl_s: float = _bounded(1800.0, lo=0, lo_open=True)  # since the session's last turn
    max_sessions: int = _bounded(10_000, lo=1)  # per replica; least recently used go first


@dataclass(frozen=True)
class RoutingConfig:
    alias: str = "auto"  # the model name clients send to ask for routing
    conversation: ConversationConfig = field(default_factory=ConversationConfig)


@dataclass(frozen=True)
class CategoryModelConfig:
    threshold: float = _bounded(0.6, lo=0, hi=1)
    # The category's second opinion from the embedding (``classify.exemplars``): "auto" takes
    # category_exemplars.npz next to the tokenizer if the model build wrote one; a path
    # (relative to the config file); "off" (the head alone).
    exemplars: str = "auto"


@dataclass(frozen=True)
class PiiModelConfig:
    threshold: float = _bounded(0.7, lo=0, hi=1)
    # Per-type thresholds (the guard's operating point), e.g. {US_SSN: 0.2}: a type listed here
    # uses its own, the rest ``threshold``. Names are the model's PII types (checked at load);
    # `router-svc eval pii --choose-thresholds` picks them on validation data, recall first.
    type_thresholds: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"lo": 0, "hi": 1})
    # A little over the 128 the heads were trained on (config.example.yaml says why).
    window_tokens: int = _bounded(144, lo=8)
    window_stride: int = _bounded(128, lo=1)
    # Rule recognisers beside the model (classify/recognisers.py): card numbers (Luhn), IBAN
    # (mod 97), SSN, e-mail, IP, phone, domains/URLs, ZIP and age in context; their entities
    # join the model's, one span and type where they overlap.
    recognisers: bool = True
    # Texts whose PII result (and category) is remembered by hash: a conversation's earlier
    # turns, which every chat request carries again, are not read again (0: off).
    memory_entries: int = _bounded(10_000, lo=0)
    # Content the check cannot read (an image, audio, a file): always said in the answer's
    # x-router-pii-check: partial; "reject" also refuses it for a model that may see no PII.
    unscannable: Unscannable = "allow"


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
    # Padded tokens of one request per Triton call: a long prompt goes in calls of this size,
    # so a request arriving behind it waits for one such call, not one of max_batch_tokens
    # (perf/responsiveness.py). Many requests together still fill max_batch_tokens.
    max_job_tokens: int = _bounded(512, lo=1)
    # A request none of whose rows went to Triton this long after it was queued fails (its
    # rows are dropped): no work piles up for callers that gave up. A started one runs on.
    max_queue_wait_ms: float = _bounded(10_000.0, lo=0, lo_open=True)


# The cache threshold below which the config check warns: under it, more than one hit in ten
# was a wrong answer on held-out paraphrase pairs (figures in README.md, Status).
CACHE_THRESHOLD_WARN = 0.9


CacheBackend = Literal["hnswlib", "milvus"]
MilvusConsistency = Literal["Strong", "Bounded", "Session", "Eventually"]


@dataclass(frozen=True)
class VerifierConfig:
    """The hit verifier's model (``router_svc.cache.pair_model``): a cross-encoder that reads a
    candidate hit's two texts together after the text rules passed it."""

    # "auto": pair_verifier.onnx next to the tokenizer if the model build wrote one (else the
    # text rules alone, with a warning); a path (relative to the config file); "off".
    model: str = "auto"
    # The least probability (of "the same question") the model must give a candidate to serve
    # it; chosen with perf/cache_verify.py on the development splits.
    min_probability: float = _bounded(0.5, lo=0, hi=1)
    # A verdict later than this (or more than 16 pairs waiting) makes the candidate a miss.
    timeout_s: float = _bounded(0.25, lo=0, lo_open=True)
    threads: int = _bounded(1, lo=1)  # onnxruntime intra-op threads of the router's copy


@dataclass(frozen=True)
class MilvusConfig:
    """The shared cache on Milvus (``cache.backend: milvus``, ``router_svc.cache.milvus``)."""

    uri: str = "http://127.0.0.1:19530"  # Milvus standalone/cluster, or milvus-lite's binary
    token_env: str | None = None  # env var with the Milvus token ("user:password" or API key)
    collection: str = "router_cache"  # created on first use; one per embedding model
    # Strong: a flush or store through one replica is seen by the next lookup on any other
    # (the repeat memo relies on it); Bounded trades a few seconds of staleness for latency.
    consistency_level: MilvusConsistency = "Strong"
    # Deadline of every Milvus call: slower or unreachable, the cache is bypassed (a miss).
    timeout_s: float = _bounded(1.0, lo=0, lo_open=True)


@dataclass(frozen=True)
class CacheConfig:
    """The semantic cache (``router_svc.cache.store``); its threshold is chosen with
    ``router-svc eval cache`` (``router_svc.ops.cache_eval``)."""

    enabled: bool = False
    # hnswlib: in this process (snapshots on disk); milvus: one cache shared by every replica.
    backend: CacheBackend = "hnswlib"
    milvus: MilvusConfig = field(default_factory=MilvusConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    # Minimum cosine similarity of the last user turn for a hit: the lowest threshold whose
    # hits meet the 0.95 precision target on every development set (MRPC train+val, STS-B
    # dev), so a cached answer is rarely one to another question.
    threshold: float = _bounded(0.97, lo=0, hi=1, lo_open=True)
    capacity: int = _bounded(10_000, lo=1)  # entries over all partitions, LRU beyond
    ttl_s: float = _bounded(3600.0, lo=0, lo_open=True)
    # A tenant header, believed only from a trusted proxy (``auth.trusted_proxies`` or
    # ``auth.proxy_secret_env``); otherwise the tenant is the client key's.
    partition_header: str | None = None
    # Requests with no credential at all (no key, no trusted tenant header) may share
    # cached answers with each other; off, they are neither looked up nor stored.
    share_anonymous: bool = False
    partition_by_user: bool = False  # the body's ``user`` field splits a tenant's partition
    # Entries one tenant may hold; None: up to ``capacity``. At capacity the tenant with the
    # most entries loses its least recently used one, so one tenant cannot flush the others.
    max_entries_per_tenant: int | None = _bounded(None, lo=1)
    max_answer_bytes: int = _bounded(256 * 1024, lo=1)  # a larger answer is not stored
    store_pii_requests: bool = False
    persistence_dir: Path | None = None  # relative to the config file; None: no snapshots
    snapshot_interval_s: float = _bounded(300.0, lo=0, lo_open=True)
    admin_token_env: str | None = None  # env var with the admin bearer token; unset: no admin
    # Answer an exact repeat of a cached request without the model call
    # (``router_svc.cache.front.RepeatMemo``).
    repeat_memo: bool = True


@dataclass(frozen=True)
class ProxyConfig:
    connect_timeout_s: float = _bounded(5.0, lo=0, lo_open=True)
    read_timeout_s: float = _bounded(300.0, lo=0, lo_open=True)
    max_body_bytes: int = _bounded(4 * 1024 * 1024, lo=1)
    # Backend connections in use at once, and how long a request waits for one when slow
    # streams hold them all (503 backend_busy after), instead of hanging.
    max_connections: int = _bounded(100, lo=1)
    pool_timeout_s: float = _bounded(5.0, lo=0, lo_open=True)
    # A client that reads a stream slower than this per event (its socket buffer full) is
    # dropped, so it cannot hold a backend connection for ever.
    client_write_timeout_s: float = _bounded(30.0, lo=0, lo_open=True)


@dataclass(frozen=True)
class AuthConfig:
    """Client keys (``router_svc.core.auth``). Neither ``keys_file`` nor ``keys_env``: no
    authentication, as before (said at start-up)."""

    # YAML, ``keys: [{sha256: <hex of the key>, tenant: <name>, models: [<model>, ...]}]``;
    # re-read when it changes (rotation without a restart). Relative to the config file.
    keys_file: Path | None = None
    # An environment variable holding ``tenant=key`` pairs, comma-separated (no model limits).
    keys_env: str | None = None
    reload_interval_s: float = _bounded(2.0, lo=0, lo_open=True)
    # Addresses (CIDR) of proxies whose ``cache.partition_header`` is believed, and/or an
    # environment variable with a secret such a proxy sends in ``x-router-proxy-secret``.
    trusted_proxies: tuple[str, ...] = ()
    proxy_secret_env: str | None = None

    @property
    def enabled(self) -> bool:
        return self.keys_file is not None or self.keys_env is not None


@dataclass(frozen=True)
class FailoverConfig:
    """When the chosen backend fails before any byte of its answer (connection error, a
    timeout before the headers, a 5xx or a 429), the next model of the category's
    ``model_scores`` that the PII policy allows gets the request (routed requests only: a
    model the client named is never swapped)."""

    max_retries: int = _bounded(1, lo=0)  # other models tried after the first (0: none)
    # Failures in a row after which a backend is skipped for ``breaker_cooldown_s`` (a 429's
    # Retry-After opens it for that long at once); then one trial request.
    breaker_failures: int = _bounded(5, lo=1)
    breaker_cooldown_s: float = _bounded(30.0, lo=0, lo_open=True)


@dataclass(frozen=True)
class LimitsConfig:
    """The most work one request may cause; beyond it a 4xx naming the limit, before any
    Triton call, so one large request cannot stall everyone else's."""

    max_scan_tokens: int = _bounded(32768, lo=1)  # tokens the PII check reads per request
    max_messages: int = _bounded(2048, lo=1)
    max_texts: int = _bounded(8192, lo=1)  # separate texts (parts, fields) per request


@dataclass(frozen=True)
class ExtProcConfig:
    """The Envoy External Processor (gRPC) front door, ``router_svc.doors.extproc.server``."""

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
    # Paths (as the router reads them: decoded, slashes merged) Envoy may send on to the
    # default backend without a check. Any other path the router does not serve is a 404:
    # nothing reaches a backend unread.
    passthrough_paths: tuple[str, ...] = ()


TracingProtocol = Literal["grpc", "http/protobuf"]


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces (``router_svc.tracing``): off by default; on, a span per
    generation request with its stages as child spans, sent over OTLP."""

    enabled: bool = False
    # The OTLP collector (Jaeger, Tempo, an OpenTelemetry Collector): http://HOST:4317 for
    # grpc; for http/protobuf the whole URL, http://HOST:4318/v1/traces. https:// uses TLS.
    endpoint: str = "http://127.0.0.1:4317"
    protocol: TracingProtocol = "grpc"
    service_name: str = "router-svc"
    # The share of new traces kept; a request with a client's traceparent follows the
    # client's decision (parent-based sampling).
    sample_ratio: float = _bounded(1.0, lo=0, hi=1)


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
    action: PiiAction | None = None  # for this model's denied PII; None: the global pii_action

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
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
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


