"""The dual-head model: one encoder pass, three outputs (the router's tensor contract).

Design (chosen by measurement, see ``build_report.json``): the encoder's lower layers are shared
and frozen; the top ``head_layers`` layers exist twice. The frozen original copy produces the
sentence embedding, so fine-tuning can never degrade the semantic cache; a trainable copy feeds
the category and PII heads. ``head_layers=0`` gives the plain design where both heads read the
frozen final layer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def extended_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [batch, 1, 1, seq]: 0 where attended, a large negative elsewhere."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class EncoderLayers(nn.Module):
    """A stack of DistilBERT transformer blocks run with an additive mask.

    We run the blocks ourselves (rather than ``DistilBertModel.forward``) so that the split into
    shared, embedding and head branches exports to a single clean ONNX graph.
    """

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h: torch.Tensor, ext_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = _run_block(layer, h, ext_mask)
        return h


def _run_block(layer: nn.Module, x: torch.Tensor, ext_mask: torch.Tensor) -> torch.Tensor:
    att = layer.attention
    b, s, d = x.shape
    nh = att.n_heads
    dh = d // nh

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, s, nh, dh).transpose(1, 2)

    q, k, v = split(att.q_lin(x)), split(att.k_lin(x)), split(att.v_lin(x))
    scores = torch.matmul(q, k.transpose(-1, -2)) / (dh**0.5) + ext_mask
    probs = att.dropout(torch.softmax(scores, dim=-1))
    ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, d)
    x = layer.sa_layer_norm(att.out_lin(ctx) + x)
    ffn = layer.ffn
    y = ffn.dropout(ffn.lin2(ffn.activation(ffn.lin1(x))))
    return layer.output_layer_norm(y + x)


class DualHeadModel(nn.Module):
    """``(input_ids, attention_mask) -> (category_logits, pii_logits, embedding)``."""

    def __init__(self, encoder: nn.Module, n_categories: int, n_tags: int, head_layers: int = 1):
        super().__init__()
        layers = list(encoder.transformer.layer)
        n = len(layers)
        if not 0 <= head_layers <= n:
            raise ValueError(f"head_layers must be in 0..{n}")
        self.head_layers = head_layers
        self.embeddings = encoder.embeddings
        split = n - head_layers
        self.shared = EncoderLayers(layers[:split])
        self.embed_top = EncoderLayers(layers[split:])
        self.head_top = EncoderLayers([copy.deepcopy(m) for m in layers[split:]])
        dim = encoder.config.dim
        self.category_head = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(dim, n_categories),
        )
        self.pii_head = nn.Sequential(nn.Dropout(0.1), nn.Linear(dim, n_tags))
        # Temperature scaling, fitted on validation after training and baked into the export.
        self.register_buffer("temperature", torch.ones(()))

    def trainable_parameters(self) -> list[nn.Parameter]:
        mods = [self.head_top, self.category_head, self.pii_head]
        return [p for m in mods for p in m.parameters()]

    def freeze_backbone(self) -> None:
        for m in (self.embeddings, self.shared, self.embed_top):
            for p in m.parameters():
                p.requires_grad_(False)

    def shared_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(input_ids)
        return self.shared(h, extended_mask(attention_mask, h.dtype))

    def heads_from_shared(self, h: torch.Tensor, attention_mask: torch.Tensor,
                          category_grad_scale: float = 1.0):
        """Category logits (before temperature) and PII logits from the shared hidden states.

        ``category_grad_scale`` < 1 shrinks the category loss's gradient into the trainable
        layers (not into the category head): the forward pass is unchanged."""
        ext = extended_mask(attention_mask, h.dtype)
        t = self.head_top(h, ext)
        pooled = mean_pool(t, attention_mask)
        if category_grad_scale != 1.0:
            pooled = pooled * category_grad_scale + pooled.detach() * (1 - category_grad_scale)
        return self.category_head(pooled), self.pii_head(t)

    def embedding_from_shared(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embed_top(h, extended_mask(attention_mask, h.dtype))
        return nn.functional.normalize(mean_pool(e, attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        h = self.shared_forward(input_ids, attention_mask)
        cat, pii = self.heads_from_shared(h, attention_mask)
        return cat / self.temperature, pii, self.embedding_from_shared(h, attention_mask)
