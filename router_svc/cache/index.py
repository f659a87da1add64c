"""The vector index behind one cache partition: exact for small partitions, HNSW for large.

Measured (perf/cache_bench.py): an hnswlib HNSW index costs about 2.6 MB of memory before its
first vector (65,536 label-operation mutexes), so a per-partition HNSW index would cost
gigabytes with thousands of small partitions (every conversation's earlier turns are a
partition of their own). A partition therefore starts as a ``FlatIndex`` (an exact inner
product over a numpy matrix: 0.05 ms at a few thousand entries, no per-index overhead) and is
promoted to an ``HnswIndex`` once it holds ``hnsw_min_entries`` (built in a thread by the
cache's sweep), and demoted again when a rebuild finds it below ``flat_max_entries``.

Vectors are L2-normalised float32; similarity is the inner product (hnswlib space ``ip``,
distance = 1 - similarity). Labels are the cache's entry ids.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import hnswlib
import numpy as np

IndexKind = Literal["flat", "hnsw"]


@dataclass(frozen=True)
class IndexParams:
    m: int = 16
    ef_construction: int = 100
    ef_search: int = 64
    initial_slots: int = 16  # a new index's room; doubled as it fills
    # A partition is promoted to HNSW at this many live entries, rebuilt flat below the other.
    hnsw_min_entries: int = 4096
    flat_max_entries: int = 1024
    # An HNSW index may grow to slot_factor x capacity slots. Below that budget an add takes a
    # free slot; at it, a deleted slot is reused (hnswlib replace_deleted), which repairs the
    # old element's neighbourhood and costs 10-40x a plain add in a large index (8-11 ms
    # against 0.3-0.7 ms at 3k-20k entries). Sweeps rebuild an index whose deleted slots reach
    # its live entries, so the budget is rarely met. 1.0: never more slots than capacity.
    slot_factor: float = 2.0
    rebuild_threads: int = 2


class FlatIndex:
    """Exact search over a growing matrix; removal moves the last row into the hole."""

    kind: IndexKind = "flat"
    suffix = ".npy"

    def __init__(self, dim: int, slots: int = 16) -> None:
        self.dim = dim
        self._vecs = np.empty((max(1, slots), dim), dtype=np.float32)
        self._labels = np.empty(max(1, slots), dtype=np.int64)
        self._row: dict[int, int] = {}

    @property
    def ids(self) -> set[int]:
        return set(self._row)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, label: int) -> bool:
        return label in self._row

    @property
    def slots(self) -> int:
        return len(self._labels)

    deleted = 0  # removal compacts at once

    @property
    def nbytes(self) -> int:
        return self._vecs.nbytes + self._labels.nbytes

    def _resize(self, slots: int) -> None:
        n = len(self._row)
        vecs = np.empty((slots, self.dim), dtype=np.float32)
        labels = np.empty(slots, dtype=np.int64)
        vecs[:n], labels[:n] = self._vecs[:n], self._labels[:n]
        self._vecs, self._labels = vecs, labels

    def add(self, label: int, vec: np.ndarray) -> bool:
        n = len(self._row)
        if n == self.slots:
            self._resize(2 * self.slots)
        self._vecs[n] = vec
        self._labels[n] = label
        self._row[label] = n
        return False

    def remove(self, label: int) -> None:
        r = self._row.pop(label)
        last = len(self._row)  # the old last row
        if r != last:
            self._vecs[r] = self._vecs[last]
            moved = int(self._labels[last])
            self._labels[r] = moved
            self._row[moved] = r
        if self.slots > 16 and last < self.slots // 4:
            self._resize(self.slots // 2)

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        n = len(self._row)
        k = min(k, n)
        if k <= 0:
            return []
        sims = self._vecs[:n] @ vec
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(int(self._labels[i]), float(sims[i])) for i in top]

    def vectors(self, labels: list[int]) -> np.ndarray:
        return self._vecs[[self._row[lb] for lb in labels]].copy()

    def save(self, path: Path) -> list[int]:
        """The vectors as a .npy (no pickle); returns the labels in row order."""
        n = len(self._row)
        with open(path, "wb") as f:
            np.save(f, self._vecs[:n], allow_pickle=False)
        return [int(x) for x in self._labels[:n]]

    @classmethod
    def load(cls, path: Path, dim: int, labels: list[int]) -> FlatIndex:
        vecs = np.load(path, allow_pickle=False)
        if vecs.dtype != np.float32 or vecs.shape != (len(labels), dim):
            raise ValueError(f"{path.name} holds {vecs.shape} {vecs.dtype}, "
                             f"expected ({len(labels)}, {dim}) float32")
        return cls.build(dim, labels, vecs)

    @classmethod
    def build(cls, dim: int, labels: list[int], vecs: np.ndarray) -> FlatIndex:
        index = cls(dim, max(16, 2 * len(labels)))
        for lb, v in zip(labels, vecs, strict=True):
            index.add(int(lb), v)
        return index


class HnswIndex:
    """hnswlib HNSW: ``mark_deleted`` on removal, free slots first, then deleted ones."""

    kind: IndexKind = "hnsw"
    suffix = ".hnsw"

    def __init__(self, dim: int, params: IndexParams, budget: int, slots: int | None = None,
                 index: hnswlib.Index | None = None, ids: set[int] | None = None) -> None:
        self.dim, self.params, self.budget = dim, params, budget
        if index is None:
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=max(1, slots or params.initial_slots), M=params.m,
                             ef_construction=params.ef_construction, allow_replace_deleted=True)
        index.set_ef(params.ef_search)
        index.set_num_threads(1)
        self.index = index
        self._ids: set[int] = set(ids or ())

    @property
    def ids(self) -> set[int]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, label: int) -> bool:
        return label in self._ids

    @property
    def slots(self) -> int:
        return int(self.index.get_max_elements())

    @property
    def deleted(self) -> int:
        return int(self.index.element_count) - len(self._ids)

    @property
    def nbytes(self) -> int:
        return int(self.index.index_file_size())

    def add(self, label: int, vec: np.ndarray) -> bool:
        """Add one vector; True when it took a deleted slot (the slow path)."""
        slots, reuse = self.slots, False
        if self.index.element_count >= slots:  # no free slot
            if slots < self.budget:
                self.index.resize_index(min(2 * slots, self.budget))
            elif self.deleted > 0:
                reuse = True
            else:  # cannot happen while live < capacity <= budget; stay correct anyway
                self.index.resize_index(slots + 1)
        self.index.add_items(vec.reshape(1, -1), np.array([label]), num_threads=1,
                             replace_deleted=reuse)
        self._ids.add(label)
        return reuse

    def remove(self, label: int) -> None:
        self.index.mark_deleted(label)
        self._ids.discard(label)

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        k = min(k, len(self._ids))
        while k > 0:
            try:
                labels, dists = self.index.knn_query(vec, k=k, num_threads=1)
            except RuntimeError:  # fewer than k reachable (many deleted neighbours)
                k //= 2
                continue
            return [(int(lb), 1.0 - float(d)) for lb, d in zip(labels[0], dists[0], strict=True)]
        return []

    def vectors(self, labels: list[int]) -> np.ndarray:
        return np.asarray(self.index.get_items(labels, return_type="numpy"), dtype=np.float32)

    def save(self, path: Path) -> list[int]:
        self.index.save_index(str(path))
        return sorted(self._ids)

    @classmethod
    def load(cls, path: Path, dim: int, params: IndexParams, budget: int, slots: int,
             labels: list[int]) -> HnswIndex:
        """Load a saved index; everything but ``labels`` in it is (or becomes) deleted."""
        index = hnswlib.Index(space="ip", dim=dim)
        index.load_index(str(path), max_elements=slots, allow_replace_deleted=True)
        present = {int(x) for x in index.get_ids_list()}
        missing = set(labels) - present
        if missing:
            raise ValueError(f"{path.name} lacks {len(missing)} of its entries")
        for lb in present - set(labels):
            with contextlib.suppress(RuntimeError):  # already deleted when saved
                index.mark_deleted(lb)
        return cls(dim, params, budget, index=index, ids=set(labels))

    @classmethod
    def build(cls, dim: int, params: IndexParams, budget: int, labels: list[int],
              vecs: np.ndarray) -> HnswIndex:
        slots = min(max(2 * len(labels), params.initial_slots), max(budget, len(labels)))
        out = cls(dim, params, budget, slots=slots)
        if labels:
            out.index.add_items(np.asarray(vecs, dtype=np.float32), np.array(labels),
                                num_threads=max(1, params.rebuild_threads))
            out.index.set_num_threads(1)
            out._ids.update(labels)
        return out


PartitionIndex = FlatIndex | HnswIndex


def build_index(kind: IndexKind, dim: int, params: IndexParams, budget: int, labels: list[int],
                vecs: np.ndarray) -> PartitionIndex:
    if kind == "flat":
        return FlatIndex.build(dim, labels, vecs)
    return HnswIndex.build(dim, params, budget, labels, vecs)


def wanted_kind(index: PartitionIndex, params: IndexParams) -> IndexKind | None:
    """The kind a sweep should rebuild ``index`` as, or None to leave it."""
    live = len(index)
    if index.kind == "flat":
        return "hnsw" if live >= params.hnsw_min_entries else None
    if live < params.flat_max_entries:  # small again: exact search, and 2.6 MB freed
        return "flat"
    if index.deleted >= max(live, 16):  # as many deleted slots as live entries
        return "hnsw"
    return None
