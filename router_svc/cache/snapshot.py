"""Snapshots of an ``HnswCache``: one hnswlib file per partition and a JSON manifest.

Layout of the snapshot directory::

    CURRENT               name of the live snapshot (replaced atomically)
    snap-<ms>-<hex>/      one complete snapshot
        meta.json         format, dim, model_id; per partition: kind, file, size, sha256,
                          labels, entries
        p000000.hnsw ...  hnswlib ``save_index`` of an HNSW partition
        p000001.npy ...   the vectors of an exact (flat) partition (numpy, no pickle)

A snapshot is written whole into a hidden folder, renamed into place, and only then does
``CURRENT`` switch to it (temp file + ``os.replace``); older snapshots are removed last. A crash
at any point leaves the previous snapshot or the new one. Loading checks every file's size and
sha256 before hnswlib reads it (hnswlib trusts its input), so a missing, partial or corrupt
snapshot, or one made with another embedding model, gives an empty cache and a warning, never
an exception. No pickle: entries and response bodies are JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router_svc.cache.entry import Entry
from router_svc.cache.index import FlatIndex, HnswIndex, PartitionIndex
from router_svc.cache.keys import KINDS
from router_svc.cache.response import CachedResponse, is_complete

if TYPE_CHECKING:  # store.py imports this module
    from router_svc.cache.store import HnswCache

log = logging.getLogger(__name__)

FORMAT = 1
CURRENT = "CURRENT"
META = "meta.json"
_SNAP = re.compile(r"snap-\d+-[0-9a-f]+")
_PART = re.compile(r"p\d{6}\.(hnsw|npy)")
_SUFFIX = {"hnsw": ".hnsw", "flat": ".npy"}


class SnapshotError(Exception):
    """A snapshot that cannot be used; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        # Cached answers are users' data: readable by the router's owner only.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"id": e.id, "text": e.text, "kind": e.response.kind, "body": e.response.body,
            "created_at": e.created_at, "expires_at": e.expires_at, "touched": e.touched,
            "hits": e.hits, "tenant": e.tenant}


# --------------------------------------------------------------------------- save


def save_snapshot(cache: HnswCache, directory: Path) -> bool:
    """Write a snapshot of ``cache`` into ``directory``; False (and a warning) on failure."""
    with cache.snapshot_lock:
        t0 = time.perf_counter()
        try:
            name, n = _save(cache, Path(directory))
        except Exception as e:
            log.warning("cache snapshot to %s failed: %s: %s", directory, type(e).__name__, e)
            return False
    log.info("cache snapshot %s: %d entries in %.2f s", name, n, time.perf_counter() - t0)
    return True


def _save(cache: HnswCache, directory: Path) -> tuple[str, int]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"snap-{int(time.time() * 1000)}-{secrets.token_hex(4)}"
    tmp = directory / f".tmp-{name}"
    tmp.mkdir(mode=0o700)
    total = 0
    try:
        parts: list[dict[str, Any]] = []
        for key in cache.partition_keys():
            # holds the lock for this partition only
            got = cache.export_partition(key, tmp / f"p{len(parts):06d}")
            if got is None:
                continue
            path, index, labels, entries = got
            if not entries:
                path.unlink()
                continue
            total += len(entries)
            parts.append({"key": key, "kind": index.kind, "file": path.name,
                          "slots": index.slots, "bytes": path.stat().st_size,
                          "sha256": _sha256(path), "labels": labels,
                          "entries": [_entry_json(e) for e in entries]})
        meta = {"format": FORMAT, "space": "ip", "dim": cache.dim, "model_id": cache.model_id,
                "saved_at": time.time(), "next_id": cache.next_id, "partitions": parts}
        write_atomic(tmp / META, json.dumps(meta, ensure_ascii=False).encode())
        for p in tmp.iterdir():
            os.chmod(p, 0o600)  # hnswlib and numpy write with the process umask
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.rename(tmp, directory / name)
        _fsync_dir(directory)
        write_atomic(directory / CURRENT, name.encode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in directory.iterdir():  # older snapshots and leftovers of interrupted ones
        if old.name != name and (_SNAP.fullmatch(old.name) or old.name.startswith(".tmp-snap-")):
            shutil.rmtree(old, ignore_errors=True)
    return name, total


# --------------------------------------------------------------------------- load


def load_snapshot(cache: HnswCache, directory: Path) -> int:
    """Load the snapshot in ``directory`` into ``cache`` (replacing its state); the number of
    entries loaded. Missing or unusable: a warning, the cache unchanged, 0."""
    directory = Path(directory)
    t0 = time.perf_counter()
    try:
        pointer = (directory / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        log.warning("cache: no snapshot in %s; starting with an empty cache", directory)
        return 0
    except Exception as e:
        log.warning("cache: snapshot pointer %s unreadable (%s); starting with an empty cache",
                    directory / CURRENT, e)
        return 0
    try:
        indexes, entries, next_id = _read(cache, directory, pointer)
    except Exception as e:
        log.warning("cache: snapshot %s is unusable (%s: %s); starting with an empty cache",
                    directory / pointer, type(e).__name__, e)
        return 0
    n = cache.install(indexes, entries, next_id)
    log.info("cache: loaded %d entries from %s in %.2f s", n, directory / pointer,
             time.perf_counter() - t0)
    return n


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise SnapshotError(why)


def _read(cache: HnswCache, directory: Path,
          pointer: str) -> tuple[dict[str, PartitionIndex], list[Entry], int]:
    _check(bool(_SNAP.fullmatch(pointer)), f"CURRENT names {pointer[:80]!r}, not a snapshot")
    sdir = directory / pointer
    meta = json.loads((sdir / META).read_text(encoding="utf-8"))
    _check(isinstance(meta, dict) and meta.get("format") == FORMAT, "unknown snapshot format")
    _check(meta.get("space") == "ip" and meta.get("dim") == cache.dim,
           f"made for {meta.get('dim')}-d vectors, the cache has {cache.dim}")
    _check(meta.get("model_id") == cache.model_id,
           f"made with embedding model {meta.get('model_id')!r}, now {cache.model_id!r}")
    now = cache.clock()
    indexes: dict[str, PartitionIndex] = {}
    entries: list[Entry] = []
    next_id = int(meta.get("next_id", 0))
    for p in meta["partitions"]:
        fname, key, kind = p["file"], p["key"], p["kind"]
        _check(isinstance(key, str) and key not in indexes, "duplicate partition")
        _check(isinstance(fname, str) and bool(_PART.fullmatch(fname))
               and fname.endswith(_SUFFIX.get(kind, "?")), f"bad file {fname!r}")
        path = sdir / fname
        _check(path.stat().st_size == p["bytes"], f"{fname} has the wrong size")
        _check(_sha256(path) == p["sha256"], f"{fname} fails its checksum")
        saved = [int(x) for x in p["labels"]]
        next_id = max([next_id, *(lb + 1 for lb in saved)])
        live = [e for e in (_entry(raw, key, now, cache.ttl_s) for raw in p["entries"])
                if e.expires_at > now]
        keep = [e.id for e in live]
        _check(set(keep) <= set(saved), f"entries missing from {fname}")
        index: PartitionIndex
        if kind == "hnsw":  # marks everything it holds beyond ``keep`` deleted
            index = HnswIndex.load(path, cache.dim, cache.params, cache.slot_budget,
                                   max(int(p["slots"]), len(saved)), keep)
        else:
            index = FlatIndex.load(path, cache.dim, saved)
            for lb in set(saved) - set(keep):  # expired since
                index.remove(lb)
        indexes[key] = index
        entries += live
    _check(len({e.id for e in entries}) == len(entries), "an entry id appears twice")
    if len(entries) > cache.capacity:  # a smaller capacity now: keep the most recently used
        entries.sort(key=lambda e: e.touched)
        for e in entries[: len(entries) - cache.capacity]:
            indexes[e.partition].remove(e.id)
        entries = entries[len(entries) - cache.capacity :]
    entries.sort(key=lambda e: e.expires_at)
    return indexes, entries, next_id


def _entry(raw: dict[str, Any], key: str, now: float, ttl_s: float) -> Entry:
    kind = raw["kind"]
    _check(kind in KINDS and is_complete(kind, raw["body"]), f"entry {raw.get('id')} is broken")
    _check(isinstance(raw["text"], str), f"entry {raw.get('id')} has no text")
    return Entry(
        id=int(raw["id"]), partition=key, text=raw["text"],
        response=CachedResponse(kind, raw["body"]), created_at=float(raw["created_at"]),
        # A shorter TTL configured since applies to loaded entries too.
        expires_at=min(float(raw["expires_at"]), now + ttl_s), touched=int(raw["touched"]),
        hits=int(raw.get("hits", 0)), tenant=str(raw.get("tenant", "")),
    )
