"""The tokenizer saved with the model, used the same way by the build and the router.

Long texts are cut into overlapping windows of at most ``window`` tokens (special tokens
included) so that PII anywhere in a prompt is scanned like PII at its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


class TokenizerError(Exception):
    """The tokenizer file is missing or unusable; the message says how to fix it."""


@dataclass(frozen=True)
class Window:
    """One model input row: token ids with [CLS]/[SEP] and each token's character span."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # (0, 0) for special tokens


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Start positions of the fewest windows of ``size`` tokens, one start at most ``stride``
    after the one before, that cover ``n_tokens``: spread evenly from 0 to ``n_tokens - size``,
    so every overlap is alike (at least ``size - stride`` tokens) rather than a last window
    that repeats all but a few tokens of the one before."""
    if size < 1 or stride < 1 or stride > size:
        raise ValueError(f"need 1 <= stride <= size, got size={size}, stride={stride}")
    if n_tokens <= size:
        return [0]
    span = n_tokens - size
    gaps = -(-span // stride)  # windows - 1
    return [(i * span + gaps // 2) // gaps for i in range(gaps + 1)]


class TextTokenizer:
    def __init__(self, path: str | Path):
        p = Path(path)
        if not p.is_file():
            raise TokenizerError(
                f"tokenizer file {p} not found: build the model with `router-svc model build` "
                f"(it saves tokenizer.json next to model.onnx) or set `tokenizer:` in the config"
            )
        try:
            self._tok = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises plain Exception for corrupt files
            raise TokenizerError(f"tokenizer file {p} is not a valid tokenizer.json: {e}") from e
        self._tok.no_padding()
        self._tok.no_truncation()
        cls_id = self._tok.token_to_id("[CLS]")
        sep_id = self._tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise TokenizerError(
                f"tokenizer {p} has no [CLS]/[SEP] tokens: not a BERT WordPiece one"
            )
        self.cls_id, self.sep_id = cls_id, sep_id
        self.pad_id = self._tok.token_to_id("[PAD]") or 0

    def count(self, text: str) -> int:
        """The text's tokens, special tokens not counted."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def windows(self, text: str, window: int = 256, stride: int = 192) -> list[Window]:
        """All windows of ``text``; one window when it fits."""
        return self.windows_batch([text], window, stride)[0]

    def windows_batch(
        self, texts: list[str], window: int = 256, stride: int = 192
    ) -> list[list[Window]]:
        body = window - 2
        step = min(stride, body)
        out: list[list[Window]] = []
        for enc in self._tok.encode_batch(texts, add_special_tokens=False):
            ids, offs = enc.ids, enc.offsets
            wins = []
            for s in window_starts(len(ids), body, step):
                wins.append(
                    Window(
                        ids=[self.cls_id, *ids[s : s + body], self.sep_id],
                        offsets=[(0, 0), *offs[s : s + body], (0, 0)],
                    )
                )
            out.append(wins)
        return out

    def truncated(self, texts: list[str], max_length: int) -> list[Window]:
        """The first window of each text (what the category head sees during training)."""
        return [w[0] for w in self.windows_batch(texts, max_length, max_length)]
