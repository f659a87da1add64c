"""metrics.py: one registry per app, rendering, bounded label values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router_svc.backend.sse_read import Usage
from router_svc.core.metrics import OTHER, LabelBounds, Metrics, render


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = render(metrics)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_render_has_every_metric():
    m = Metrics.create(models=["phi-4"])
    body, content_type = render(m)
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    for name in ["requests", "routing_decisions", "classification_seconds", "triton_seconds",
                 "triton_batch_size", "triton_batch_tokens", "queue_depth", "request_seconds",
                 "backend_seconds", "ttft_seconds", "tokens", "pii_entities", "errors",
                 "classifier_failures", "cache_requests", "cache_entries",
                 "inflight_requests"]:
        assert "router_" + name in names, name
    # both cache series exist before the first lookup
    s = samples(m)
    assert s[("router_cache_requests_total", (("result", "hit"),))] == 0
    assert s[("router_cache_requests_total", (("result", "miss"),))] == 0


def test_openmetrics_on_request():
    m = Metrics.create()
    body, content_type = render(m, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_separate_registries_do_not_clash():
    a, b = Metrics.create(), Metrics.create()
    a.count_request("x", 200)
    assert samples(a)[("router_requests_total", (("model", OTHER), ("status", "200")))] == 1
    a.count_request("y", 200)  # the memoised child: the same series, counted on
    assert samples(a)[("router_requests_total", (("model", OTHER), ("status", "200")))] == 2
    assert ("router_requests_total", (("model", OTHER), ("status", "200"))) not in samples(b)
    reg = CollectorRegistry()
    assert Metrics.create(reg).registry is reg


def test_labels_are_bounded():
    m = Metrics.create(models=["phi-4", "llama"])
    for i in range(50):
        m.count_request(f"attacker-model-{i}", 200)
        m.count_routing(f"cat-{i}", f"model-{i}", f"reason-{i}")
        m.count_error(f"weird-{i}")
        m.count_pii(f"TYPE_{i}", "redact")
        m.observe_backend(f"m-{i}", 0.1)
        m.observe_request(f"/path/{i}", 0.1)
        m.count_classifier_failure(f"stage-{i}")
    m.count_request("phi-4", 200)
    m.count_request("llama", 599)
    m.count_request("llama", 1000)
    m.count_routing("math", "phi-4", "category")
    m.count_pii("EMAIL_ADDRESS", "redact", 2)
    s = samples(m)
    assert s[("router_requests_total", (("model", OTHER), ("status", "200")))] == 50
    assert s[("router_requests_total", (("model", "phi-4"), ("status", "200")))] == 1
    assert s[("router_requests_total", (("model", "llama"), ("status", "599")))] == 1
    assert s[("router_requests_total", (("model", "llama"), ("status", OTHER)))] == 1
    key = ("router_routing_decisions_total",
           (("category", OTHER), ("model", OTHER), ("reason", OTHER)))
    assert s[key] == 50
    key = ("router_routing_decisions_total",
           (("category", "math"), ("model", "phi-4"), ("reason", "category")))
    assert s[key] == 1
    assert s[("router_errors_total", (("reason", OTHER),))] == 50
    assert s[("router_pii_entities_total", (("action", "redact"), ("type", OTHER)))] == 50
    assert s[("router_pii_entities_total", (("action", "redact"), ("type", "EMAIL_ADDRESS")))] == 2
    assert s[("router_classifier_failures_total", (("stage", OTHER),))] == 50
    assert s[("router_backend_seconds_count", (("model", OTHER),))] == 50
    assert s[("router_request_seconds_count", (("endpoint", OTHER),))] == 50
    # no label value outside the configured sets reached the exposition
    values = {v for (_, labels) in s for (_, v) in labels}
    assert not any(v.startswith(("attacker", "cat-", "model-", "reason-", "weird", "TYPE_"))
                   for v in values)


def test_tokens_and_histograms():
    m = Metrics.create(models=["phi-4"])
    m.count_tokens("phi-4", Usage(3, 5, 8))
    m.count_tokens("phi-4", None)
    m.observe_ttft("phi-4", 0.05)
    m.observe_triton_batch(0.004, rows=8, tokens=512)
    m.queue_depth.set(3)
    m.inflight_requests.inc()
    m.count_cache(hit=True)
    m.cache_entries.set(10)
    s = samples(m)
    assert s[("router_tokens_total", (("kind", "prompt"), ("model", "phi-4")))] == 3
    assert s[("router_tokens_total", (("kind", "completion"), ("model", "phi-4")))] == 5
    assert s[("router_ttft_seconds_count", (("model", "phi-4"),))] == 1
    assert s[("router_triton_batch_size_bucket", (("le", "8.0"),))] == 1
    assert s[("router_triton_batch_size_bucket", (("le", "4.0"),))] == 0
    assert s[("router_triton_batch_tokens_sum", ())] == 512
    assert s[("router_queue_depth", ())] == 3
    assert s[("router_inflight_requests", ())] == 1
    assert s[("router_cache_requests_total", (("result", "hit"),))] == 1
    assert s[("router_cache_entries", ())] == 10


def test_label_bounds_helpers():
    b = LabelBounds(models=frozenset({"phi-4"}))
    assert b.model("phi-4") == "phi-4"
    assert b.model(None) == OTHER
    assert b.category("computer science") == "computer science"
    assert b.status("200") == OTHER and b.status(404) == "404"
    assert b.error_reason("backend_timeout") == "backend_timeout"
