"""Which rows each training epoch reads."""

from __future__ import annotations

from export.train import NO_CATEGORY, UNIFORM, Example, epoch_rows

ROWS = [
    Example(ids=[1], category=3, epochs=2),  # an exam question
    Example(ids=[1], category=NO_CATEGORY, tags=[0]),  # a PII row
    Example(ids=[1], category=UNIFORM),  # chit-chat
    Example(ids=[1], category=UNIFORM, tags=[0], epochs=1),
]


def test_each_row_trains_in_its_first_epochs() -> None:
    assert [epoch_rows(ROWS, e) for e in range(3)] == [[0, 1, 2, 3], [0, 1, 2], [1, 2]]


class _Frozen:
    def eval(self) -> None:
        pass


def test_features_are_computed_once_per_distinct_text() -> None:
    import numpy as np

    from export.train import cache_features

    seen: list[list[int]] = []

    def encode(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        seen.extend(row[m.astype(bool)].tolist() for row, m in zip(ids, mask, strict=True))
        return np.repeat(ids[:, :, None].astype(np.float32), 4, axis=2)  # [b, s, 4]

    rows = [Example(ids=[5, 6, 7]), Example(ids=[8, 9]), Example(ids=[5, 6, 7], tags=[0, 0, 0])]
    cached = cache_features(_Frozen(), rows, batch_size=2, encode=encode)  # type: ignore[arg-type]
    assert sorted(seen) == [[5, 6, 7], [8, 9]]  # the repeated text is encoded once
    assert [h.shape for h in cached.hidden] == [(3, 4), (2, 4), (3, 4)]
    assert cached.hidden[1][:, 0].tolist() == [8.0, 9.0]
    assert cached.hidden[2] is cached.hidden[0] and cached.examples[2].tags == [0, 0, 0]
