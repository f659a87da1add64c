"""Several Triton servers as one: calls spread over the healthy ones, a dead one skipped.

``triton.url`` names one server (``host:port``), several (``h1:8001,h2:8001``), or a DNS name
that resolves to several (a Kubernetes headless Service). Each address a name resolves to is a
member with its own gRPC channel (``TritonClient``); the names are resolved again every
``resolve_interval_s``, so pods that come and go are picked up.

The picker is the client's own (not gRPC's ``round_robin`` policy): it must know which server
answered a call to skip a dead one and to retry there, which gRPC's load balancing hides.
Each call goes to the healthy member with the fewest calls in flight (round robin among
equals). A classification is idempotent: a call whose server turned out to be unreachable
(``TritonUnavailable``, not a timeout: a slow server is not a dead one, and the time is spent)
marks that member down and is sent once more to another member. A down member is probed every
``probe_interval_s`` and rejoins when its model is ready.

During a rolling model update members serve different versions: calls go only to the members
serving the newest version seen, so the router's labels (re-read on a version change) move
forward once instead of flapping; a member left on the old version is probed until it serves
the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from router_svc.config.schema import parse_addresses
from router_svc.labels import MODEL_NAME
from router_svc.triton.client import (
    InferOutputs,
    ModelInfo,
    ModelStats,
    TritonClient,
    TritonTimeout,
    TritonUnavailable,
    newest_version,
    version_key,
)

log = logging.getLogger(__name__)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def member_url(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pick_addresses(infos: list[tuple]) -> list[str]:
    """The addresses ``getaddrinfo`` gave, one per server: IPv4 ones when there are any (a
    dual-stack Service lists every pod twice, once per family), in the order given."""
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 or v6))


@dataclass(eq=False)
class Member:
    url: str
    client: TritonClient
    down: bool = False
    version: str = ""  # the newest version it was seen serving; "" not yet known
    inflight: int = 0
    source: str = ""  # the configured address it came from


class TritonFleet:
    """``TritonClient``'s interface over every server ``url`` names."""

    def __init__(self, url: str, model_name: str = MODEL_NAME, timeout_s: float = 5.0, *,
                 resolve_interval_s: float = 10.0, probe_interval_s: float = 0.5) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.resolve_interval_s = resolve_interval_s
        self.probe_interval_s = probe_interval_s
        self.addresses = parse_addresses(url)
        self.info: ModelInfo | None = None
        self.members: list[Member] = []
        self.retries = 0  # calls sent again after their server failed
        # Told the number of members whenever it changes (the batcher's call slots follow it).
        self.on_size: Callable[[int], None] | None = None
        self._rr = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._probe_wake = asyncio.Event()
        self.getaddrinfo = None  # tests: a stand-in for the event loop's getaddrinfo

    # ---- membership

    async def _resolve_all(self) -> None:
        """Members for what the addresses resolve to now; gone ones are closed, new ones
        added. A name that does not resolve (a Service with no ready pod yet) keeps its
        members: DNS hiccups do not empty the fleet."""
        getaddrinfo = self.getaddrinfo or asyncio.get_running_loop().getaddrinfo
        wanted: dict[str, str] = {}
        for host, port in self.addresses:
            if _is_ip(host):
                wanted[member_url(host, port)] = f"{host}:{port}"
                continue
            try:
                infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                log.warning("triton.url: cannot resolve %s (%s); keeping its %d members", host,
                            e, sum(m.source == f"{host}:{port}" for m in self.members))
                for m in self.members:
                    if m.source == f"{host}:{port}":
                        wanted[m.url] = m.source
                continue
            for ip in pick_addresses(infos):
                wanted[member_url(ip, port)] = f"{host}:{port}"
        have = {m.url: m for m in self.members}
        gone = [m for u, m in have.items() if u not in wanted]
        added = [Member(u, TritonClient(u, self.model_name, self.timeout_s), source=src)
                 for u, src in wanted.items() if u not in have]
        if not gone and not added:
            return
        for m in added:
            m.client.info = self.info
        self.members = [m for m in self.members if m.url in wanted] + added
        log.info("Triton fleet: %s", ", ".join(m.url for m in self.members) or "empty")
        for m in gone:
            await m.client.close()
        if self.on_size:
            self.on_size(max(1, len(self.members)))

    async def _ensure_resolved(self) -> None:
        if not self.members:  # first use, or no name resolved yet (Triton still starting)
            await self._resolve_all()
        if not self._closed and not self._tasks:
            self._tasks = [asyncio.create_task(self._probe_loop(), name="triton-probe")]
            if any(not _is_ip(h) for h, _ in self.addresses):
                self._tasks.append(asyncio.create_task(self._resolve_loop(),
                                                       name="triton-resolve"))
        if not self.members:
            raise TritonUnavailable(f"triton.url {self.url!r} resolves to no address")

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resolve_interval_s)
            with contextlib.suppress(Exception):
                await self._resolve_all()

    async def _probe_loop(self) -> None:
        """Bring back members that were down or left on an old model version."""
        while True:
            newest = self._newest()
            waiting = [m for m in self.members if m.down or self._stale(m, newest)]
            if not waiting:
                self._probe_wake.clear()
                await self._probe_wake.wait()
                continue
            # A probe that fails in an unforeseen way must not end the loop: a member would
            # stay down for good.
            await asyncio.gather(*(self._probe(m, newest) for m in waiting),
                                 return_exceptions=True)
            await asyncio.sleep(self.probe_interval_s)

    async def _probe(self, m: Member, newest: str) -> None:
        if not await m.client.ready():
            return
        if self._stale(m, newest):
            with contextlib.suppress(Exception):
                m.version = newest_version(await m.client.versions())
            if self._stale(m, newest):
                return
        if m.down:
            log.warning("Triton %s is back", m.url)
        m.down = False

    def _newest(self) -> str:
        seen = [m.version for m in self.members if m.version and not m.down]
        return max(seen, key=version_key) if seen else ""

    @staticmethod
    def _stale(m: Member, newest: str) -> bool:
        return bool(m.version and newest and version_key(m.version) < version_key(newest))

    def _pick(self, exclude: Member | None = None) -> Member | None:
        newest = self._newest()
        pool = [m for m in self.members if m is not exclude]
        for ok in (lambda m: not m.down and not self._stale(m, newest), lambda m: not m.down):
            cands = [m for m in pool if ok(m)]
            if cands:
                start = next(self._rr) % len(cands)
                order = cands[start:] + cands[:start]
                return min(order, key=lambda m: m.inflight)
        # Every other member is down: try one anyway (a quick error if it still is).
        return pool[next(self._rr) % len(pool)] if pool and exclude is None else None

    def _mark_down(self, m: Member, e: Exception) -> None:
        if not m.down:
            log.warning("Triton %s is unreachable (%s): skipped until its model is ready",
                        m.url, e)
        m.down = True
        self._probe_wake.set()

    # ---- TritonClient's interface

    async def load_model_info(self) -> ModelInfo:
        """The model's contract from a ready member (the one serving the newest version)."""
        await self._ensure_resolved()
        first: Member | None = self._pick()
        last: Exception | None = None
        for m in [first, *(x for x in self.members if x is not first)]:
            if m is None:
                continue
            try:
                info = await m.client.load_model_info()
            except TritonUnavailable as e:
                last = e
                continue
            m.version = info.version or m.version
            self.info = info
            for x in self.members:
                x.client.info = info
            return info
        assert last is not None
        raise last

    async def ready(self) -> bool:
        try:
            await self._ensure_resolved()
        except TritonUnavailable:
            return False
        states = await asyncio.gather(*(m.client.ready() for m in self.members))
        return any(states)

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> InferOutputs:
        await self._ensure_resolved()
        m = self._pick()
        assert m is not None
        try:
            return await self._infer_on(m, input_ids, attention_mask)
        except TritonTimeout:
            raise
        except TritonUnavailable as e:
            self._mark_down(m, e)
            other = self._pick(exclude=m)
            if other is None:
                raise
            self.retries += 1
            return await self._infer_on(other, input_ids, attention_mask)

    async def _infer_on(self, m: Member, ids: np.ndarray, mask: np.ndarray) -> InferOutputs:
        m.inflight += 1
        try:
            out = await m.client.infer(ids, mask)
        except TritonUnavailable as e:
            if not isinstance(e, TritonTimeout):
                self._mark_down(m, e)
            raise
        finally:
            m.inflight -= 1
        if out.version and out.version != m.version:
            m.version = out.version
            self._probe_wake.set()  # others may now be stale
        return out

    async def model_statistics(self) -> ModelStats:
        await self._ensure_resolved()
        parts = await asyncio.gather(*(m.client.model_statistics() for m in self.members
                                       if not m.down), return_exceptions=True)
        ok = [p for p in parts if isinstance(p, ModelStats)]
        if not ok:
            raise TritonUnavailable(f"no Triton of {self.url!r} answered for statistics")
        fields = ModelStats.__dataclass_fields__
        return ModelStats(*(sum(getattr(p, f) for p in ok) for f in fields))

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        for m in self.members:
            await m.client.close()

    async def __aenter__(self) -> TritonFleet:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
