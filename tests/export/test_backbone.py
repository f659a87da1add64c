"""The MiniLM -> DistilBERT mapping, the dual-head module and the build's user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.backbone import BackboneError, bert_to_distilbert_state, load_backbone, minilm_path
from export.modeling import DualHeadModel, mean_pool
from router_svc.classify.tokenization import TextTokenizer
from router_svc.labels import CATEGORIES, PII_TAGS

TEXTS = [
    "Hello, how are you today?",
    "What is the derivative of f(x) = x³ + 2x² - 5x + 7? Show every step of the working.",
    "Please send the report to john.doe@company.com",
]


@pytest.fixture(scope="module")
def minilm():
    return load_backbone()


def _batch(texts):
    tok = TextTokenizer(minilm_path() / "tokenizer.json")
    wins = tok.truncated(texts, 128)
    n = max(len(w.ids) for w in wins)
    ids = torch.zeros((len(texts), n), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, w in enumerate(wins):
        ids[i, : len(w.ids)] = torch.tensor(w.ids)
        mask[i, : len(w.ids)] = 1
    return ids, mask


def test_mapped_hidden_states_equal_the_original_bert(minilm):
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False).eval()
    ids, mask = _batch(TEXTS)
    with torch.no_grad():
        want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        got = minilm.model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    assert (want[valid] - got[valid]).abs().max().item() < 1e-4


def test_mapping_folds_token_type_into_positions():
    dim, layers = 4, 1
    rng = np.random.default_rng(0)
    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
             "embeddings.LayerNorm.bias"]
    bert = {f"bert.{n}": torch.tensor(rng.normal(size=(3, dim))) for n in names}
    for src in ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                "output.dense", "output.LayerNorm"):
        for p in ("weight", "bias"):
            bert[f"bert.encoder.layer.0.{src}.{p}"] = torch.zeros(1)
    out = bert_to_distilbert_state(bert, layers)
    want = bert["bert.embeddings.position_embeddings.weight"] + bert[
        "bert.embeddings.token_type_embeddings.weight"][0]
    assert torch.equal(out["embeddings.position_embeddings.weight"], want)
    assert "transformer.layer.0.attention.q_lin.weight" in out


def test_dual_head_embedding_is_the_frozen_encoders(minilm):
    model = DualHeadModel(minilm.model, len(CATEGORIES), len(PII_TAGS), head_layers=2).eval()
    # Perturb the trainable branch: the embedding must not move.
    with torch.no_grad():
        for p in model.head_top.parameters():
            p.add_(0.05)
    ids, mask = _batch(TEXTS)
    with torch.no_grad():
        cat, pii, emb = model(ids, mask)
        ref = minilm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        want = torch.nn.functional.normalize(mean_pool(ref, mask), dim=-1)
    assert cat.shape == (3, len(CATEGORIES))
    assert pii.shape == (*ids.shape, len(PII_TAGS))
    assert (emb - want).abs().max().item() < 1e-5
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_category_grad_scale_shrinks_only_the_category_gradient_into_the_layers():
    from export.tiny import tiny_dual_head

    model = tiny_dual_head()
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    h = model.shared_forward(ids, mask)

    def grads(scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model.zero_grad()
        cat, _ = model.heads_from_shared(h.detach(), mask, scale)
        cat.sum().backward()
        layer = next(model.head_top.parameters()).grad.clone()
        head = next(model.category_head.parameters()).grad.clone()
        return cat.detach(), layer, head

    cat_full, layer_full, head_full = grads(1.0)
    cat_low, layer_low, head_low = grads(0.25)
    assert torch.equal(cat_full, cat_low)  # the forward pass is unchanged
    assert torch.allclose(head_low, head_full)  # the category head learns at full rate
    assert layer_full.abs().sum() > 0
    assert torch.allclose(layer_low, 0.25 * layer_full, atol=1e-6)


def test_missing_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match=r"no such folder|could not be loaded"):
        load_backbone(str(tmp_path / "nope"))


def test_cli_reports_user_errors_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "router_svc.ops.cli", "model", "build", "--backbone",
         str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--data-dir",
         str(tmp_path / "nodata")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                             "PYTHONPATH": "."}, timeout=120,
        cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("router-svc: error: backbone")


def test_unknown_pii_category_target_is_named_before_any_work(tmp_path):
    from export.build import BuildError, BuildOptions, build

    with pytest.raises(BuildError, match=r"pii_category_target='context'.*'plain'"):
        build(BuildOptions(out_dir=tmp_path, pii_category_target="context"))
    assert not any(tmp_path.iterdir())


def test_pii_rows_category_target():
    from export.build import pii_category
    from export.train import NO_CATEGORY, UNIFORM

    assert pii_category("uniform", "generated+context") == UNIFORM
    assert pii_category("plain", "generated") == UNIFORM
    assert pii_category("plain", "presidio+context") == NO_CATEGORY
    assert pii_category("none", "presidio") == NO_CATEGORY
