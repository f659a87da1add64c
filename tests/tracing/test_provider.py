"""The SDK set-up: nothing while off; on, the configured OTLP exporter behind a batch
processor, the service named, parent-based sampling, and the last spans flushed at stop."""

from __future__ import annotations

import sys

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router_svc.config.loading import ConfigError, TracingConfig
from router_svc.tracing.provider import Tracing, otlp_exporter
from router_svc.tracing.spans import RequestTrace


async def test_off_is_nothing_at_all() -> None:
    exporter = InMemorySpanExporter()
    t = Tracing(TracingConfig(), exporter=exporter)  # an exporter does not turn it on
    t.start()
    assert t.recorder is None and t.provider is None and not t.enabled
    assert t.force_flush()
    await t.shutdown()
    assert exporter.get_finished_spans() == ()


async def test_on_spans_are_batched_and_flushed_at_shutdown() -> None:
    exporter = InMemorySpanExporter()
    t = Tracing(TracingConfig(enabled=True, service_name="router-a"), exporter=exporter)
    t.start()
    assert t.recorder is not None
    RequestTrace(t.recorder, "one", None).end(200)
    assert exporter.get_finished_spans() == ()  # queued for the exporter's thread
    await t.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "router-a"
    assert span.instrumentation_scope.name == "router_svc"
    assert t.recorder is None and t.provider is None
    await t.shutdown()  # twice is harmless


async def test_new_traces_are_sampled_at_the_ratio_the_rest_by_their_parent() -> None:
    t = Tracing(TracingConfig(enabled=True, sample_ratio=0.25), exporter=InMemorySpanExporter())
    t.start()
    assert t.provider is not None and t.recorder is not None
    description = t.provider.sampler.get_description()
    assert description.startswith("ParentBased") and "TraceIdRatioBased{0.25}" in description
    kept = sum(RequestTrace(t.recorder, "x", None).recording for _ in range(2000))
    assert 300 < kept < 700
    await t.shutdown()


def test_the_exporter_follows_the_protocol() -> None:
    grpc = otlp_exporter(TracingConfig(enabled=True, endpoint="http://jaeger:4317"))
    assert isinstance(grpc, GrpcExporter)
    http = otlp_exporter(TracingConfig(enabled=True, protocol="http/protobuf",
                                       endpoint="http://jaeger:4318/v1/traces"))
    assert isinstance(http, HttpExporter)
    assert http._endpoint == "http://jaeger:4318/v1/traces"
    grpc.shutdown()
    http.shutdown()


@pytest.mark.parametrize("protocol, module", [
    ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
])
def test_an_exporter_that_cannot_be_imported_is_a_config_error_naming_the_fix(
        monkeypatch: pytest.MonkeyPatch, protocol: str, module: str) -> None:
    # What an install gets when xds-protos' old copy of opentelemetry-proto landed last.
    monkeypatch.setitem(sys.modules, module, None)
    fix = r"tracing\.enabled.*--force-reinstall opentelemetry-proto"
    with pytest.raises(ConfigError, match=fix):
        otlp_exporter(TracingConfig(enabled=True, protocol=protocol, endpoint="http://c:4317"))


def test_the_sdks_own_opentelemetry_proto_is_the_one_installed() -> None:
    # The install scripts reinstall it over xds-protos' copy; the OTLP exporters import this.
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
