"""A Triton fleet (``triton.url`` with several servers): spreading, skipping, retrying, DNS.

The picker and its states with stand-in clients (no servers); then two real CPU Tritons on
loopback behind one router: calls reach both, one killed under load costs at most a handful of
requests (none a second after the kill), and it is used again once it is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import aiohttp
import numpy as np
import pytest

from router_svc.classify.batcher import Batcher
from router_svc.config.loading import ConfigError, parse_config
from router_svc.config.schema import parse_addresses
from router_svc.triton.client import (
    InferOutputs,
    ModelInfo,
    TritonClient,
    TritonTimeout,
    TritonUnavailable,
)
from router_svc.triton.fleet import Member, TritonFleet, pick_addresses
from router_svc.triton.launcher import TritonServer, free_port

IDS = np.ones((1, 4), dtype=np.int64)
INFO = ModelInfo("m", ("a",), ("O",), 128, 8, 4, version="1")


class FakeClient:
    """What the fleet uses of ``TritonClient``, scripted: ``fail`` raises that on infer."""

    def __init__(self, url: str, version: str = "1"):
        self.url, self.version = url, version
        self.fail: Exception | None = None
        self.is_ready = True
        self.calls = 0
        self.closed = False
        self.info: ModelInfo | None = None
        self.gate: asyncio.Event | None = None  # held calls stay in flight until set

    async def infer(self, ids, mask) -> InferOutputs:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        n = len(ids)
        return InferOutputs(np.zeros((n, 1)), np.zeros((n, ids.shape[1], 1)), np.zeros((n, 4)),
                            version=self.version)

    async def ready(self) -> bool:
        return self.is_ready

    async def versions(self) -> list[str]:
        return [self.version]

    async def load_model_info(self) -> ModelInfo:
        if self.fail is not None:
            raise self.fail
        return ModelInfo(**{**INFO.__dict__, "version": self.version})

    async def close(self) -> None:
        self.closed = True


def fleet_of(*clients: FakeClient, probe_interval_s: float = 0.01) -> TritonFleet:
    fleet = TritonFleet(",".join(c.url for c in clients), probe_interval_s=probe_interval_s)
    fleet.members = [Member(c.url, c) for c in clients]  # type: ignore[arg-type]
    return fleet


async def until(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- addresses


def test_addresses_parse_and_bad_ones_are_config_errors():
    assert parse_addresses("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_addresses("[::1]:8001") == [("::1", 8001)]
    for bad in ("triton", "a:1,,b:2", "a:1,", ":8001", "a:0", "a:x"):
        with pytest.raises(ValueError):
            parse_addresses(bad)
    with pytest.raises(ConfigError) as e:
        parse_config({"triton": {"url": "t1:8001,t2"}})
    assert any("triton.url" in p and "'t2'" in p for p in e.value.problems)


def test_one_member_per_server_of_a_dual_stack_name():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    infos = [(v6, 1, 6, "", ("fd00::1", 8001, 0, 0)), (v4, 1, 6, "", ("10.0.0.1", 8001)),
             (v4, 1, 6, "", ("10.0.0.2", 8001)), (v4, 1, 6, "", ("10.0.0.1", 8001))]
    assert pick_addresses(infos) == ["10.0.0.1", "10.0.0.2"]
    assert pick_addresses(infos[:1]) == ["fd00::1"]


async def test_a_name_is_resolved_again_and_members_follow_it():
    # Loopback addresses with nothing listening: calls fail at once, resolving is what counts.
    port = free_port()
    answers = {"now": ["127.0.0.1", "127.0.0.2"]}

    async def getaddrinfo(host, port, type):
        if answers["now"] is None:
            raise socket.gaierror("no such name")
        assert host == "triton-headless"
        return [(socket.AF_INET, type, 6, "", (ip, port)) for ip in answers["now"]]

    fleet = TritonFleet(f"triton-headless:{port}", resolve_interval_s=0.02)
    fleet.getaddrinfo = getaddrinfo
    sizes: list[int] = []
    fleet.on_size = sizes.append
    try:
        with pytest.raises(TritonUnavailable):  # nothing listens there; resolving worked
            await asyncio.wait_for(fleet.infer(IDS, IDS), 10)
        assert [m.url for m in fleet.members] == [f"127.0.0.1:{port}", f"127.0.0.2:{port}"]
        answers["now"] = ["127.0.0.2", "127.0.0.3"]  # a pod replaced
        await until(lambda: [m.url for m in fleet.members]
                    == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"])
        answers["now"] = None  # DNS fails: the members stay
        await asyncio.sleep(0.1)
        assert len(fleet.members) == 2
        assert sizes[:2] == [2, 2]
    finally:
        await fleet.close()


# ---------------------------------------------------------------- the picker


async def test_calls_spread_over_members_by_calls_in_flight():
    a, b = FakeClient("a:1"), FakeClient("b:1")
    fleet = fleet_of(a, b)
    try:
        for _ in range(10):
            await fleet.infer(IDS, IDS)
        assert (a.calls, b.calls) == (5, 5)
        a.gate = asyncio.Event()  # a's calls hang: new ones go to b
        held = [asyncio.create_task(fleet.infer(IDS, IDS)) for _ in range(2)]
        await until(lambda: a.calls == 6)
        for _ in range(4):
            await fleet.infer(IDS, IDS)
        assert a.calls == 6 and b.calls == 10
        a.gate.set()
        await asyncio.gather(*held)
    finally:
        await fleet.close()


async def test_an_unreachable_server_is_skipped_and_its_call_retried_once_elsewhere():
    a, b = FakeClient("a:1"), FakeClient("b:1")
    fleet = fleet_of(a, b)
    try:
        a.fail = TritonUnavailable("connection refused")
        a.is_ready = False
        outs = [await fleet.infer(IDS, IDS) for _ in range(6)]
        assert all(o.embedding.shape == (1, 4) for o in outs)
        assert a.calls == 1 and b.calls == 6 and fleet.retries == 1
        assert fleet.members[0].down
        # Back: the probe sees its model ready and calls reach it again.
        a.fail, a.is_ready = None, True
        await until(lambda: not fleet.members[0].down)
        for _ in range(4):
            await fleet.infer(IDS, IDS)
        assert a.calls >= 2
        # Both unreachable: the caller learns of it (the outage policy applies).
        a.fail = b.fail = TritonUnavailable("down")
        with pytest.raises(TritonUnavailable):
            await fleet.infer(IDS, IDS)
    finally:
        await fleet.close()


async def test_a_timeout_is_not_retried_and_does_not_mark_the_server_down():
    a, b = FakeClient("a:1"), FakeClient("b:1")
    fleet = fleet_of(a, b)
    try:
        a.fail = b.fail = TritonTimeout("deadline")
        with pytest.raises(TritonTimeout):
            await fleet.infer(IDS, IDS)
        assert a.calls + b.calls == 1 and fleet.retries == 0
        assert not any(m.down for m in fleet.members)
    finally:
        await fleet.close()


async def test_calls_follow_the_newest_model_version_during_a_rollout():
    a, b = FakeClient("a:1", "1"), FakeClient("b:1", "1")
    fleet = fleet_of(a, b)
    try:
        for _ in range(2):
            await fleet.infer(IDS, IDS)
        b.version = "2"  # b was updated first
        versions = [(await fleet.infer(IDS, IDS)).version for _ in range(8)]
        first_v2 = versions.index("2")
        assert set(versions[first_v2:]) == {"2"}, versions  # never back to version 1
        info = await fleet.load_model_info()
        assert info.version == "2"  # the labels are read where the new version runs
        a.version = "2"  # a updated too: the probe lets it back in
        calls = a.calls
        await until(lambda: fleet.members[0].version == "2")
        for _ in range(4):
            await fleet.infer(IDS, IDS)
        assert a.calls > calls
    finally:
        await fleet.close()


async def test_the_batchers_call_slots_follow_the_fleet_size():
    started: list[int] = []
    release = asyncio.Event()

    async def infer(ids, mask):
        started.append(len(ids))
        await release.wait()
        n = len(ids)
        return np.zeros((n, 1)), np.zeros((n, ids.shape[1], 1)), np.zeros((n, 4))

    batcher = Batcher(infer, max_batch_size=1, max_inflight=2)
    await batcher.start()
    try:
        jobs = [asyncio.create_task(batcher.submit([[1, 2, 3]])) for _ in range(6)]
        await until(lambda: len(started) == 2)
        batcher.set_max_inflight(4)  # a second Triton joined
        await until(lambda: len(started) == 4)
        await asyncio.sleep(0.05)
        assert len(started) == 4
        release.set()
        await asyncio.gather(*jobs)
    finally:
        await batcher.stop()


# ---------------------------------------------------------------- two real Tritons


@pytest.fixture(scope="module")
def second_triton(trained_triton, trained_model_dir, tmp_path_factory):
    """A second Triton on fixed ports (restarted in place); after the session's one."""
    server = TritonServer(trained_model_dir, work_dir=tmp_path_factory.mktemp("triton_fleet"),
                          http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def inferred(url: str) -> int:
    """Rows the Triton at ``url`` has inferred (its own statistics)."""
    async with TritonClient(url) as c:
        return (await c.model_statistics()).inference_count


async def inferred_or_none(url: str) -> int | None:
    try:
        return await inferred(url)
    except TritonUnavailable:
        return None


@pytest.mark.integration
async def test_two_tritons_one_killed_under_load_and_back(router_factory, trained_triton,
                                                          second_triton):
    first, second = trained_triton.grpc_url, second_triton.grpc_url
    url = await router_factory(lambda d: d["triton"].update(url=f"{first},{second}"))
    n = 0
    failures: list[tuple[float, int, str]] = []  # (when, status, body)
    done: list[float] = []

    async def one(s: aiohttp.ClientSession) -> None:
        nonlocal n
        n += 1
        body = {"model": "auto", "messages": [
            {"role": "user", "content": f"Question {n}: what is the derivative of x^{n}?"}]}
        async with s.post(f"{url}/v1/chat/completions", json=body) as r:
            text = await r.text()
            if r.status != 200:
                failures.append((time.monotonic(), r.status, text[:200]))
            done.append(time.monotonic())

    async with aiohttp.ClientSession() as s:
        before = [await inferred(first), await inferred(second)]
        for _ in range(12):
            await one(s)
        after = [await inferred(first), await inferred(second)]
        assert after[0] > before[0] and after[1] > before[1], (before, after)
        assert not failures, failures

        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                await one(s)

        workers = [asyncio.create_task(load()) for _ in range(4)]
        try:
            await until(lambda: len(done) >= 30, 60)
            killed_at = time.monotonic()
            os.killpg(second_triton.process.pid, signal.SIGKILL)  # a crash, not a drain
            await until(lambda: len([t for t in done if t > killed_at + 1.5]) >= 20, 60)
            after_kill = [f for f in failures if f[0] >= killed_at]
            late = [f for f in after_kill if f[0] > killed_at + 1.0]
            print(f"\nkilled one of two Tritons under load: {len(after_kill)} failed requests, "
                  f"the last {max((f[0] - killed_at for f in after_kill), default=0):.2f} s "
                  f"after the kill; {len([t for t in done if t > killed_at])} answered since")
            assert len(after_kill) <= 5, after_kill
            assert not late, late
            async with s.get(f"{url}/ready") as r:  # the dead one is said, the router serves
                ready = await r.json()
            assert r.status == 200 and ready["triton_servers"] == {"up": 1, "down": 1}, ready
            async with s.get(f"{url}/metrics") as r:
                assert 'router_triton_servers{state="down"} 1.0' in await r.text()

            # Back on the same ports: the probe finds it and calls reach it again.
            second_triton.stop()
            await second_triton.astart()
            # Its first gRPC connects may still fail: gRPC shares the router's connection to
            # that address, which is in reconnect backoff (at most 1 s, triton/client.py).
            deadline = time.monotonic() + 30
            while (count := await inferred_or_none(second)) is None or count == 0:
                assert time.monotonic() < deadline, "the restarted Triton got no calls"
                await asyncio.sleep(0.2)
            async with s.get(f"{url}/ready") as r:
                assert (await r.json())["triton_servers"] == {"up": 2, "down": 0}
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert len(failures) <= 5, failures
