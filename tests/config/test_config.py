"""Config loading: the example config, every validation error with its field path, warnings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from router_svc.config.loading import (
    EXAMPLE_CONFIG,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from router_svc.labels import CATEGORIES, PII_TYPES

ENV = {"PHI4_API_KEY": "sk-test"}


def minimal() -> dict[str, Any]:
    return {
        "default_model": "mistral-small3.1",
        "categories": [
            {
                "name": "math",
                "model_scores": [
                    {"model": "phi4", "score": 1.0},
                    {"model": "mistral-small3.1", "score": 0.8},
                ],
            }
        ],
        "model_config": {
            "phi4": {
                "pii_policy": {
                    "allow_by_default": False,
                    "pii_types_allowed": ["EMAIL_ADDRESS", "PHONE_NUMBER"],
                },
                "backend": {
                    "base_url": "http://127.0.0.1:9001/v1/",
                    "model": "phi-4",
                    "api_key_env": "PHI4_API_KEY",
                },
            },
            "mistral-small3.1": {"backend": {"base_url": "http://127.0.0.1:9002/v1"}},
        },
    }


def parse(data: Any, **kw: Any) -> Config:
    kw.setdefault("environ", ENV)
    return parse_config(data, "/etc/router", **kw)


def problems(data: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse(data, **kw)
    return ei.value.problems


def one_problem(data: Any, path: str, *words: str, **kw: Any) -> str:
    """Exactly one problem, at ``path``, mentioning ``words``."""
    ps = problems(data, **kw)
    assert len(ps) == 1, ps
    assert ps[0].startswith(f"{path}: "), ps[0]
    for w in words:
        assert w in ps[0], (w, ps[0])
    return ps[0]


# --------------------------------------------------------------------------- the example


def test_example_config_loads_with_reference_policies() -> None:
    cfg = load_config(EXAMPLE_CONFIG, environ={})
    assert cfg.default_model == "mistral-small3.1"
    assert cfg.models == ("phi4", "mistral-small3.1", "gemma3:27b")
    assert {c.name for c in cfg.categories} == set(CATEGORIES)
    math = cfg.category("math")
    assert math is not None and math.ranked()[0].model == "phi4"
    assert math.ranked()[0].score == 1.0
    pol = {m: cfg.model_config[m].pii_policy for m in cfg.models}
    assert pol["phi4"].pii_types_allowed == {"EMAIL_ADDRESS", "PHONE_NUMBER"}
    assert pol["gemma3:27b"].pii_types_allowed == {"EMAIL_ADDRESS", "PHONE_NUMBER", "ORGANIZATION"}
    assert pol["mistral-small3.1"].pii_types_allowed == frozenset()
    assert not any(p.allow_by_default for p in pol.values())
    ports = [cfg.model_config[m].backend.base_url for m in cfg.models]
    assert ports == [f"http://127.0.0.1:{p}/v1" for p in (9101, 9102, 9103)]
    assert cfg.pii_action == "reject"
    assert cfg.routing.alias == "auto"
    assert cfg.classifier.category_model.threshold == 0.6
    assert cfg.classifier.pii_model.threshold == 0.7
    assert cfg.cache.enabled is False
    assert cfg.warnings == ()
    assert cfg.source == EXAMPLE_CONFIG


def test_example_documents_every_field() -> None:
    """Every key in the example carries a comment somewhere in its section."""
    text = EXAMPLE_CONFIG.read_text()
    for key in (
        "listen",
        "triton",
        "routing",
        "classifier",
        "on_error",
        "batching",
        "cache",
        "pii_action",
        "default_model",
        "categories",
        "model_config",
        "proxy",
        "window_stride",
        "api_key_env",
        "forward_client_auth",
        "max_body_bytes",
    ):
        assert key in text
    assert text.count("#") > 60


def test_defaults_and_normalisation() -> None:
    cfg = parse(minimal())
    assert cfg.listen.port == 8801 and cfg.triton.url == "127.0.0.1:8001"
    assert cfg.batching.max_batch_size == 32 and cfg.proxy.max_body_bytes == 4194304
    assert cfg.classifier.on_error.routing == "default_model"
    assert cfg.classifier.on_error.pii == "block"
    phi = cfg.model_config["phi4"].backend
    assert phi.base_url == "http://127.0.0.1:9001/v1"  # trailing slash dropped
    assert phi.model == "phi-4"
    # backend.model defaults to the router's name for the model
    assert cfg.model_config["mistral-small3.1"].backend.model == "mistral-small3.1"
    assert cfg.tokenizer is None
    with pytest.raises(TypeError):
        cfg.model_config["x"] = cfg.model_config["phi4"]  # type: ignore[index]


def test_tokenizer_resolves_against_config_folder(tmp_path: Path) -> None:
    data = minimal() | {"tokenizer": "model_repository/semantic_router/1/tokenizer.json"}
    f = tmp_path / "router.yaml"
    f.write_text(yaml.safe_dump(data))
    cfg = load_config(f, environ=ENV)
    assert cfg.tokenizer == tmp_path.resolve() / "model_repository/semantic_router/1/tokenizer.json"
    assert parse(minimal() | {"tokenizer": "/abs/tok.json"}).tokenizer == Path("/abs/tok.json")


def test_ints_accepted_as_floats() -> None:
    data = minimal() | {"proxy": {"connect_timeout_s": 5, "read_timeout_s": 300}}
    data["categories"][0]["model_scores"][0]["score"] = 1
    cfg = parse(data)
    assert cfg.proxy.connect_timeout_s == 5.0 and isinstance(cfg.proxy.read_timeout_s, float)
    assert cfg.categories[0].model_scores[0].score == 1.0


# --------------------------------------------------------------------------- errors


def test_unknown_model_in_model_scores_names_path_and_fix() -> None:
    data = minimal()
    data["categories"].append({"name": "physics", "model_scores": [{"model": "phi4", "score": 1}]})
    data["categories"].append({"name": "law", "model_scores": [{"model": "phi5", "score": 0.9}]})
    msg = one_problem(data, "categories[2].model_scores[0].model", "'phi5'", "model_config.phi5")
    assert "phi4" in msg  # lists what is available


def test_default_model_without_model_config() -> None:
    data = minimal() | {"default_model": "gemma3:27b"}
    one_problem(data, "default_model", "gemma3:27b", "model_config")


def test_missing_default_model_and_model_config() -> None:
    data = minimal()
    del data["default_model"]
    one_problem(data, "default_model", "missing required field")
    data = minimal()
    del data["model_config"], data["categories"]
    ps = problems(data)
    assert any(p.startswith("model_config: missing required field") for p in ps), ps


def test_model_without_backend() -> None:
    data = minimal()
    del data["model_config"]["mistral-small3.1"]["backend"]
    one_problem(data, "model_config.mistral-small3.1.backend", "missing required field")
    data["model_config"]["mistral-small3.1"] = None
    one_problem(data, "model_config.mistral-small3.1.backend", "missing required field")


def test_backend_base_url_required_and_http() -> None:
    data = minimal()
    data["model_config"]["phi4"]["backend"]["base_url"] = "127.0.0.1:9001/v1"
    one_problem(data, "model_config.phi4.backend.base_url", "http://")
    del data["model_config"]["phi4"]["backend"]["base_url"]
    one_problem(data, "model_config.phi4.backend.base_url", "missing required field")


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_threshold_outside_unit_interval(value: float) -> None:
    data = minimal() | {"classifier": {"category_model": {"threshold": value}}}
    one_problem(data, "classifier.category_model.threshold", "out of range", ">= 0", "<= 1")
    data = minimal() | {"classifier": {"pii_model": {"threshold": value}}}
    one_problem(data, "classifier.pii_model.threshold", "out of range")


def test_score_outside_unit_interval() -> None:
    data = minimal()
    data["categories"][0]["model_scores"][1]["score"] = 1.2
    one_problem(data, "categories[0].model_scores[1].score", "out of range")


def test_duplicate_category() -> None:
    data = minimal()
    data["categories"].append(copy.deepcopy(data["categories"][0]))
    one_problem(data, "categories[1].name", "duplicate", "categories[0]")


def test_category_not_known_to_the_model() -> None:
    data = minimal()
    data["categories"][0]["name"] = "maths"
    one_problem(data, "categories[0].name", "'maths'", "did you mean 'math'")
    # The list comes from the caller (Triton at start-up): a model without "math" rejects it.
    one_problem(minimal(), "categories[0].name", "'math'", known_categories=("physics", "law"))


def test_duplicate_model_in_one_category() -> None:
    data = minimal()
    data["categories"][0]["model_scores"].append({"model": "phi4", "score": 0.1})
    one_problem(data, "categories[0].model_scores[2].model", "twice")


def test_empty_or_missing_model_scores() -> None:
    data = minimal()
    data["categories"][0]["model_scores"] = []
    one_problem(data, "categories[0].model_scores", "empty")
    del data["categories"][0]["model_scores"]
    one_problem(data, "categories[0].model_scores", "missing required field")


def test_unknown_pii_type() -> None:
    data = minimal()
    data["model_config"]["phi4"]["pii_policy"]["pii_types_allowed"].append("EMAIL")
    one_problem(
        data, "model_config.phi4.pii_policy.pii_types_allowed[2]", "'EMAIL'", "EMAIL_ADDRESS"
    )
    # validated against the caller's list too
    ps = problems(minimal(), known_pii_types=("EMAIL_ADDRESS",))
    assert ps == [ps[0]] and ps[0].startswith("model_config.phi4.pii_policy.pii_types_allowed[1]")


@pytest.mark.parametrize(
    ("section", "path", "value"),
    [
        ({"pii_action": "block"}, "pii_action", "'block'"),
        (
            {"classifier": {"on_error": {"routing": "fail_open"}}},
            "classifier.on_error.routing",
            "fail_closed, default_model",
        ),
        ({"classifier": {"on_error": {"pii": True}}}, "classifier.on_error.pii", "block, allow"),
    ],
)
def test_bad_enum_values(section: dict[str, Any], path: str, value: str) -> None:
    one_problem(minimal() | section, path, "not allowed", value)


@pytest.mark.parametrize(
    ("section", "path", "words"),
    [
        (
            {"classifier": {"category_model": {"threshold": "0.6"}}},
            "classifier.category_model.threshold",
            ("expected a number", "remove the quotes"),
        ),
        ({"listen": {"port": "http"}}, "listen.port", ("expected an integer",)),
        ({"listen": {"port": 80.5}}, "listen.port", ("expected an integer",)),
        (
            {"batching": {"max_batch_size": True}},
            "batching.max_batch_size",
            ("expected an integer", "boolean"),
        ),
        ({"cache": {"enabled": "yes please"}}, "cache.enabled", ("true or false",)),
        ({"routing": {"alias": 7}}, "routing.alias", ("expected a non-empty string",)),
        ({"listen": [1, 2]}, "listen", ("expected a mapping",)),
        ({"categories": {"name": "math"}}, "categories", ("expected a list",)),
        ({"triton": {"timeout_s": 0}}, "triton.timeout_s", ("> 0",)),
        ({"triton": {"timeout_s": float("nan")}}, "triton.timeout_s", ("finite",)),
    ],
)
def test_wrong_types(section: dict[str, Any], path: str, words: tuple[str, ...]) -> None:
    one_problem(minimal() | section, path, *words)


def test_missing_required_fields_in_entries() -> None:
    data = minimal()
    del data["categories"][0]["name"]
    one_problem(data, "categories[0].name", "missing required field")
    data = minimal()
    del data["categories"][0]["model_scores"][0]["score"]
    one_problem(data, "categories[0].model_scores[0].score", "missing required field")


def test_window_stride_larger_than_window() -> None:
    data = minimal() | {"classifier": {"pii_model": {"window_tokens": 128, "window_stride": 192}}}
    one_problem(data, "classifier.pii_model.window_stride", "192 > window_tokens 128")


def with_type_thresholds(value: Any) -> dict[str, Any]:
    return minimal() | {"classifier": {"pii_model": {"threshold": 0.6, "type_thresholds": value}}}


def test_per_type_pii_thresholds() -> None:
    pm = parse(minimal()).classifier.pii_model
    assert dict(pm.type_thresholds) == {}  # none by default: every type uses threshold
    pm = parse(with_type_thresholds({"US_SSN": 0.2, "PERSON": 1})).classifier.pii_model
    assert dict(pm.type_thresholds) == {"US_SSN": 0.2, "PERSON": 1.0} and pm.threshold == 0.6
    assert parse(with_type_thresholds(None)).classifier.pii_model.type_thresholds == {}


def test_per_type_pii_thresholds_name_known_types_in_range() -> None:
    one_problem(with_type_thresholds({"US_SSN": 0.2, "SSN": 0.3}),
                "classifier.pii_model.type_thresholds.SSN", "unknown PII type 'SSN'",
                "US_SSN", "classifier.pii_model.threshold")
    # the model's types, as the caller knows them
    one_problem(with_type_thresholds({"US_SSN": 0.2}),
                "classifier.pii_model.type_thresholds.US_SSN", "unknown PII type",
                known_pii_types=("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"))
    one_problem(with_type_thresholds({"US_SSN": 1.5}),
                "classifier.pii_model.type_thresholds.US_SSN", "out of range", "<= 1")
    one_problem(with_type_thresholds({"PERSON": -0.1}),
                "classifier.pii_model.type_thresholds.PERSON", "out of range", ">= 0")
    one_problem(with_type_thresholds({"PERSON": "0.4"}),
                "classifier.pii_model.type_thresholds.PERSON", "remove the quotes")
    one_problem(with_type_thresholds([0.2]), "classifier.pii_model.type_thresholds",
                "expected a mapping")


def test_unknown_keys_suggest_the_right_one() -> None:
    one_problem(minimal() | {"defualt_modle": "x"}, "defualt_modle", "did you mean 'default_model'")
    one_problem(minimal() | {"catgories": []}, "catgories", "did you mean 'categories'")
    data = minimal() | {"classifier": {"pii_model": {"treshold": 0.5}}}
    one_problem(data, "classifier.pii_model.treshold", "did you mean 'threshold'")


def test_alias_cannot_shadow_a_model() -> None:
    one_problem(minimal() | {"routing": {"alias": "phi4"}}, "routing.alias", "pick another")


def test_triton_url_without_scheme() -> None:
    one_problem(minimal() | {"triton": {"url": "grpc://x:8001"}}, "triton.url", "host:port")


def test_all_problems_reported_together() -> None:
    data = minimal() | {"pii_action": "nope", "listen": {"port": -1}}
    data["categories"][0]["model_scores"][0]["score"] = 2
    ps = problems(data)
    assert len(ps) == 3
    with pytest.raises(ConfigError, match=r"3 problem\(s\)"):
        parse(data)


def test_empty_or_non_mapping_document() -> None:
    one_problem(None, "<top level>", "empty")
    one_problem(["a"], "<top level>", "expected a mapping")


# --------------------------------------------------------------------------- warnings


def test_unset_api_key_env_is_a_warning() -> None:
    cfg = parse(minimal(), environ={})
    assert any(
        w.startswith("model_config.phi4.backend.api_key_env:") and "PHI4_API_KEY" in w
        for w in cfg.warnings
    ), cfg.warnings
    assert not any("api_key_env" in w for w in parse(minimal()).warnings)


def test_unlisted_categories_warn_once() -> None:
    cfg = parse(minimal())
    ws = [w for w in cfg.warnings if w.startswith("categories:")]
    assert len(ws) == 1 and "physics" in ws[0] and "default_model" in ws[0]


def test_reference_classifier_keys_are_ignored_with_a_warning() -> None:
    data = minimal() | {
        "classifier": {"category_model": {"model_id": "x", "use_cpu": True, "threshold": 0.5}}
    }
    cfg = parse(data)
    assert cfg.classifier.category_model.threshold == 0.5
    assert any(w.startswith("classifier.category_model.model_id:") for w in cfg.warnings)


# --------------------------------------------------------------------------- files


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="<yaml>"):
        load_config(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("default_model: a\ndefault_model: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'default_model'"):
        load_config(dup)


def test_config_error_message_names_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(minimal() | {"pii_action": "nope"}))
    with pytest.raises(ConfigError) as ei:
        load_config(f, environ=ENV)
    assert str(f) in str(ei.value) and "pii_action" in str(ei.value)


def test_labels_are_the_defaults() -> None:
    data = minimal()
    data["model_config"]["phi4"]["pii_policy"]["pii_types_allowed"] = list(PII_TYPES)
    data["categories"] = [
        {"name": c, "model_scores": [{"model": "phi4", "score": 0.5}]} for c in CATEGORIES
    ]
    cfg = parse(data)
    assert len(cfg.categories) == len(CATEGORIES) and not cfg.warnings


# --------------------------------------------------------------------------- cache


def test_cache_defaults() -> None:
    c = parse(minimal()).cache
    assert c.enabled is False and c.threshold == 0.97
    assert (c.capacity, c.ttl_s, c.snapshot_interval_s) == (10_000, 3600.0, 300.0)
    assert c.partition_header is None and c.persistence_dir is None
    assert c.store_pii_requests is False and c.admin_token_env is None


def test_cache_fields_and_relative_persistence_dir() -> None:
    cfg = parse(minimal() | {"cache": {
        "enabled": True, "threshold": 0.95, "capacity": 50, "ttl_s": 60,
        "partition_header": "X-Tenant-Id", "store_pii_requests": True,
        "persistence_dir": "state/cache", "snapshot_interval_s": 30,
        "admin_token_env": "PHI4_API_KEY"}, "auth": {"trusted_proxies": ["10.0.0.0/8"]}})
    c = cfg.cache
    assert (c.enabled, c.threshold, c.capacity, c.ttl_s) == (True, 0.95, 50, 60.0)
    assert c.partition_header == "X-Tenant-Id" and c.store_pii_requests is True
    assert c.persistence_dir == Path("/etc/router/state/cache")
    assert c.snapshot_interval_s == 30.0 and c.admin_token_env == "PHI4_API_KEY"
    assert not [w for w in cfg.warnings if w.startswith("cache")]
    absolute = parse(minimal() | {"cache": {"persistence_dir": "/var/cache/router"}})
    assert absolute.cache.persistence_dir == Path("/var/cache/router")


@pytest.mark.parametrize(
    ("cache", "path", "words"),
    [
        ({"threshold": 0}, "cache.threshold", ("> 0",)),
        ({"threshold": 1.5}, "cache.threshold", ("<= 1",)),
        ({"capacity": 0}, "cache.capacity", (">= 1",)),
        ({"capacity": 10.5}, "cache.capacity", ("expected an integer",)),
        ({"ttl_s": 0}, "cache.ttl_s", ("> 0",)),
        ({"snapshot_interval_s": -1}, "cache.snapshot_interval_s", ("> 0",)),
        ({"partition_header": "X Tenant"}, "cache.partition_header", ("header name",)),
        ({"partition_header": ""}, "cache.partition_header", ("non-empty string",)),
        ({"persistence_dir": 5}, "cache.persistence_dir", ("non-empty string",)),
        ({"store_pii_requests": "no"}, "cache.store_pii_requests", ("true or false",)),
        ({"ttl": 60}, "cache.ttl", ("did you mean 'ttl_s'",)),
    ],
)
def test_cache_problems(cache: dict[str, Any], path: str, words: tuple[str, ...]) -> None:
    one_problem(minimal() | {"cache": cache}, path, *words)


def test_auth_defaults_off() -> None:
    a = parse(minimal()).auth
    assert not a.enabled and a.keys_file is None and a.trusted_proxies == ()
    c = parse(minimal()).cache
    assert c.share_anonymous is False and c.partition_by_user is False
    assert c.max_entries_per_tenant is None and c.max_answer_bytes == 256 * 1024


def test_auth_fields_and_relative_keys_file() -> None:
    a = parse(minimal() | {"auth": {"keys_file": "keys.yaml", "keys_env": "ROUTER_KEYS",
                                    "trusted_proxies": ["10.0.0.0/8"],
                                    "reload_interval_s": 5}}).auth
    assert a.enabled and a.keys_file == Path("/etc/router/keys.yaml")
    assert a.keys_env == "ROUTER_KEYS" and a.trusted_proxies == ("10.0.0.0/8",)


def test_a_tenant_header_needs_a_trusted_proxy() -> None:
    one_problem(minimal() | {"cache": {"partition_header": "X-Tenant"}},
                "cache.partition_header", "trusted proxy", "auth.trusted_proxies")
    ok = parse(minimal() | {"cache": {"partition_header": "X-Tenant"},
                            "auth": {"proxy_secret_env": "PROXY_SECRET"}})
    assert ok.cache.partition_header == "X-Tenant"


def test_client_keys_forbid_forwarding_the_client_key() -> None:
    cfg = minimal()
    cfg["model_config"]["mistral-small3.1"]["backend"]["forward_client_auth"] = True
    assert parse(cfg).model("mistral-small3.1").backend.forward_client_auth
    one_problem(cfg | {"auth": {"keys_env": "ROUTER_KEYS"}},
                "model_config.mistral-small3.1.backend.forward_client_auth", "api_key_env")


def test_cache_warnings() -> None:
    cfg = parse(minimal() | {"cache": {"enabled": True, "threshold": 0.8,
                                       "admin_token_env": "NOT_SET_ANYWHERE"}})
    assert any(w.startswith("cache.threshold: 0.8 is below") for w in cfg.warnings)
    assert any(w.startswith("cache.admin_token_env:") and "disabled" in w for w in cfg.warnings)
    # a disabled cache does not nag
    quiet = parse(minimal() | {"cache": {"threshold": 0.8, "admin_token_env": "NOT_SET"}})
    assert not [w for w in quiet.warnings if w.startswith("cache")]


# --------------------------------------------------------------------------- tracing


def with_tracing(**tracing: Any) -> dict[str, Any]:
    return {**minimal(), "tracing": {"enabled": True, **tracing}}


def test_tracing_is_off_by_default_and_the_example_documents_its_keys() -> None:
    t = parse(minimal()).tracing
    assert (t.enabled, t.endpoint, t.protocol, t.service_name, t.sample_ratio) == (
        False, "http://127.0.0.1:4317", "grpc", "router-svc", 1.0)
    example = load_config(EXAMPLE_CONFIG, environ={}).tracing
    assert example == t
    text = EXAMPLE_CONFIG.read_text()
    for key in ("tracing:", "endpoint:", "protocol:", "service_name:", "sample_ratio:"):
        assert key in text


def test_tracing_endpoints_that_fit_their_protocol() -> None:
    t = parse(with_tracing(endpoint="https://otel.example:4317", sample_ratio=0.25)).tracing
    assert t.enabled and t.protocol == "grpc" and t.sample_ratio == 0.25
    t = parse(with_tracing(protocol="http/protobuf",
                           endpoint="http://jaeger:4318/v1/traces")).tracing
    assert t.protocol == "http/protobuf"


@pytest.mark.parametrize(("tracing", "path", "words"), [
    ({"endpoint": "127.0.0.1:4317"}, "tracing.endpoint", ("http://", "4317")),
    ({"endpoint": "grpc://collector:4317"}, "tracing.endpoint", ("http://",)),
    ({"endpoint": "http://collector:4317/v1/traces"}, "tracing.endpoint",
     ("http://collector:4317", "http/protobuf")),
    ({"protocol": "http/protobuf", "endpoint": "http://collector:4318"}, "tracing.endpoint",
     ("http://collector:4318/v1/traces",)),
    ({"protocol": "http"}, "tracing.protocol", ("grpc", "http/protobuf")),
    ({"sample_ratio": 1.5}, "tracing.sample_ratio", ("<= 1",)),
    ({"service_name": ""}, "tracing.service_name", ("non-empty",)),
    ({"enabled": "yes"}, "tracing.enabled", ("true or false",)),
    ({"exporter": "otlp"}, "tracing.exporter", ("unknown key",)),
])
def test_tracing_errors_name_the_field_and_the_fix(tracing: dict, path: str,
                                                   words: tuple[str, ...]) -> None:
    one_problem(with_tracing(**tracing), path, *words)


def test_tracing_grpc_on_the_http_port_is_a_warning() -> None:
    cfg = parse(with_tracing(endpoint="http://collector:4318"))
    assert any(w.startswith("tracing.endpoint: ") and "4317" in w for w in cfg.warnings)
