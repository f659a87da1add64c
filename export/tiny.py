"""A tiny, randomly initialised dual-head model for fast tests of the whole serving path.

Same tensor contract and tokenizer as the real model (MiniLM's 30,522-token WordPiece), so every
layer above it (tokenisation, Triton, decoding) runs as in production, in a few seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from export.backbone import minilm_path
from router_svc.labels import CATEGORIES, PII_TAGS

TINY_VOCAB = 30522


def tiny_dual_head(seed: int = 0):
    """The tiny ``DualHeadModel`` (eval mode): DistilBERT 2 layers, dim 32, 2 heads, FFN 64."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from export.modeling import DualHeadModel

    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=TINY_VOCAB, n_layers=2, dim=32, n_heads=2, hidden_dim=64,
                           max_position_embeddings=512, pad_token_id=0)
    model = DualHeadModel(DistilBertModel(cfg), n_categories=len(CATEGORIES),
                          n_tags=len(PII_TAGS), head_layers=1)
    return model.eval()


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write ``model.onnx`` and ``tokenizer.json`` into ``out_dir``; returns ``out_dir``."""
    from export.onnx_export import export_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(tiny_dual_head(seed), out_dir / "model.onnx")
    shutil.copyfile(minilm_path() / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


def build_tiny_pair_verifier(path: Path, seed: int = 0) -> Path:
    """A tiny, randomly initialised cross-encoder with the contract of
    ``export/pair_verifier.py`` (``pair_verifier.onnx``: token ids, mask, types -> logit)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from export.pair_verifier import export_onnx

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, num_labels=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(BertForSequenceClassification(cfg).eval(), path)
    return path
