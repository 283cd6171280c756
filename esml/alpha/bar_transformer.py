"""A small Transformer encoder over the bar window: the ensemble's attention member.

Design (Vaswani et al. 2017, in the pre-norm form of Xiong et al. 2020, which trains
stably without a warm-up): each of the window's 60 bars (11 technicals, standardised by
the training rows' statistics as in every `SequenceNet`) is projected to d_model, the
fixed sinusoidal position code is added (attention alone is blind to order), then
`layers` blocks of multi-head self-attention and a GELU feed-forward, each inside a
residual with layer norm first. The head reads the last bar's token (the decision bar,
which has attended to the whole window) beside the mean of all tokens, into 3 logits
(down, flat, up).

Attention is written out (matmul, softmax) rather than through `nn.MultiheadAttention`,
whose inference fast path the TorchScript ONNX exporter does not handle; the graph is
plain MatMul / Softmax / LayerNormalization, checked against torch by
`esml.alpha.torch_onnx.export_net` like the other nets. Registered in `esml.alpha.nets.NETS`
as "bar_transformer", so `build_net` and `fit_net` train it like the LSTMs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from esml.alpha.nets import N_CLASSES, NETS, SequenceNet


def sinusoidal_positions(steps: int, d_model: int) -> torch.Tensor:
    """[steps, d_model]: sin on even, cos on odd dimensions, wavelengths 2π .. 10000·2π."""
    pos = torch.arange(steps, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model))
    out = torch.zeros(steps, d_model)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return out


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, self.dh).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
        h = (self.drop(att) @ v).transpose(1, 2).reshape(n, t, d)
        x = x + self.drop(self.out(h))
        return x + self.drop(self.ff(self.norm2(x)))


class BarTransformer(SequenceNet):
    """Pre-norm Transformer encoder over the last 60 five-minute bars of 11 technicals."""

    kind = "bar_transformer"  # type: ignore[assignment]

    def __init__(
        self,
        steps: int = 60,
        fields: int = 11,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        ff: int = 64,
        dropout: float = 0.1,
    ) -> None:
        config = {
            "steps": steps,
            "fields": fields,
            "d_model": d_model,
            "heads": heads,
            "layers": layers,
            "ff": ff,
            "dropout": dropout,
        }
        super().__init__(steps, fields, config)
        if d_model % heads or d_model % 2:
            raise ValueError(f"d_model {d_model} must be even and divisible by heads {heads}")
        self.proj = nn.Linear(fields, d_model)
        self.register_buffer("pos", sinusoidal_positions(steps, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(2 * d_model, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.standardise(x)) + self.pos
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return self.head(torch.cat([h[:, -1], h.mean(dim=1)], dim=1))


NETS.setdefault(BarTransformer.kind, BarTransformer)
