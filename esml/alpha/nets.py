"""The neural direction models: a tick LSTM, DeepLOB's CNN-LSTM and a minute-bar LSTM.

Each maps a window [n, steps, fields] to 3 logits in class order down, flat, up. The input
standardisation (per-field mean and std of the training rows) lives in the module as
buffers, so the exported ONNX graph takes the raw windows the sequence builders produce.

DeepLOB follows Zhang, Zohren & Roberts (2019): three conv blocks that merge (price, size)
then (ask, bid) with 1x2 stride-2 convolutions, then all 10 levels with a 1x10, each
followed by two 4x1 temporal convolutions; an inception module (1x1→3x1, 1x1→5x1,
3x1 max-pool→1x1); an LSTM of 64 over the remaining time steps. The paper's widths are
32 conv and 64 inception channels (`DeepLOB.paper_sized()`); the default halves them, the
same architecture at about half the single-window latency on a CPU core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from esml.features.labels import CLASSES

N_CLASSES = len(CLASSES)
NetKind = Literal["tick_lstm", "deeplob", "bar_lstm"]


class SequenceNet(nn.Module):
    """Common parts: the window shape, the baked-in input standardisation, and the config
    that rebuilds the module (recorded in the manifest)."""

    kind: NetKind

    def __init__(self, steps: int, fields: int, config: dict[str, int | float]) -> None:
        super().__init__()
        self.steps, self.fields = steps, fields
        self._config = dict(config)
        self.register_buffer("in_mean", torch.zeros(fields))
        self.register_buffer("in_std", torch.ones(fields))

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.steps, self.fields

    def set_input_scale(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise each field by statistics of the training rows only (no look-ahead);
        a constant field keeps std 1 so it is centred, not blown up."""
        if mean.shape != (self.fields,) or std.shape != (self.fields,):
            raise ValueError(f"mean and std must have shape ({self.fields},)")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("input mean and std must be finite")
        self.in_mean.copy_(mean)
        self.in_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def config(self) -> dict[str, int | float]:
        """The constructor arguments: `build_net(kind, config)` rebuilds this architecture."""
        return dict(self._config)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_std

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TickLSTM(SequenceNet):
    """LSTM over the last 7 tick bars (7 x 5)."""

    kind = "tick_lstm"

    def __init__(self, steps: int = 7, fields: int = 5, hidden: int = 32, layers: int = 1) -> None:
        config = {"steps": steps, "fields": fields, "hidden": hidden, "layers": layers}
        super().__init__(steps, fields, config)
        self.lstm = nn.LSTM(fields, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.standardise(x))
        return self.head(out[:, -1])


class BarLSTM(SequenceNet):
    """Two LSTM layers of 64 over the last 60 one-minute rows of 11 technical features."""

    kind = "bar_lstm"

    def __init__(
        self,
        steps: int = 60,
        fields: int = 11,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        config = {"steps": steps, "fields": fields, "hidden": hidden, "layers": layers,
                  "dropout": dropout}  # fmt: skip
        super().__init__(steps, fields, config)
        self.lstm = nn.LSTM(
            fields, hidden, num_layers=layers, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.standardise(x))
        return self.head(out[:, -1])


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.01)


def _conv_block(
    c_in: int,
    c: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    act: Callable[[], nn.Module],
) -> list[nn.Module]:
    """One DeepLOB block: the level-merging conv, then two 4x1 temporal convs, each followed
    by the activation and batch norm."""
    layers: list[nn.Module] = []
    for k, s, i in ((kernel, stride, c_in), ((4, 1), (1, 1), c), ((4, 1), (1, 1), c)):
        layers += [nn.Conv2d(i, c, kernel_size=k, stride=s), act(), nn.BatchNorm2d(c)]
    return layers


class _Inception(nn.Module):
    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()

        def unit(k_in: int, k_out: int, kernel: tuple[int, int], pad: tuple[int, int]):
            return [nn.Conv2d(k_in, k_out, kernel, padding=pad), nn.LeakyReLU(0.01),
                    nn.BatchNorm2d(k_out)]  # fmt: skip

        self.b3 = nn.Sequential(*unit(c_in, c, (1, 1), (0, 0)), *unit(c, c, (3, 1), (1, 0)))
        self.b5 = nn.Sequential(*unit(c_in, c, (1, 1), (0, 0)), *unit(c, c, (5, 1), (2, 0)))
        self.pool = nn.Sequential(
            nn.MaxPool2d((3, 1), stride=(1, 1), padding=(1, 0)), *unit(c_in, c, (1, 1), (0, 0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b5(x), self.pool(x)], dim=1)


class DeepLOB(SequenceNet):
    """CNN-LSTM over the last 100 snapshots of 10 levels (100 x 40)."""

    kind = "deeplob"

    def __init__(
        self,
        steps: int = 100,
        levels: int = 10,
        conv_channels: int = 16,
        inception_channels: int = 32,
        lstm_hidden: int = 64,
    ) -> None:
        config = {
            "steps": steps,
            "levels": levels,
            "conv_channels": conv_channels,
            "inception_channels": inception_channels,
            "lstm_hidden": lstm_hidden,
        }
        super().__init__(steps, 4 * levels, config)
        if steps <= 18:
            raise ValueError("DeepLOB's six 4x1 convolutions need more than 18 time steps")
        c = conv_channels
        self.convs = nn.Sequential(
            *_conv_block(1, c, (1, 2), (1, 2), _leaky),  # price, size → one
            *_conv_block(c, c, (1, 2), (1, 2), nn.Tanh),  # ask, bid → one
            *_conv_block(c, c, (1, levels), (1, 1), _leaky),  # all levels → one
        )
        self.inception = _Inception(c, inception_channels)
        self.lstm = nn.LSTM(3 * inception_channels, lstm_hidden, batch_first=True)
        self.head = nn.Linear(lstm_hidden, N_CLASSES)

    @classmethod
    def paper_sized(cls, steps: int = 100, levels: int = 10) -> DeepLOB:
        """The paper's widths: 32 conv channels, 64 per inception branch, LSTM 64."""
        return cls(steps, levels, conv_channels=32, inception_channels=64, lstm_hidden=64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.standardise(x).unsqueeze(1))  # [n, c, t', 1]
        h = self.inception(h)  # [n, 3 c_i, t', 1]
        out, _ = self.lstm(h.squeeze(3).transpose(1, 2))  # [n, t', 3 c_i]
        return self.head(out[:, -1])


class ProbabilityNet(nn.Module):
    """The served graph: softmax over a net's logits, columns (p_down, p_flat, p_up)."""

    def __init__(self, net: SequenceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


NETS: dict[str, type[SequenceNet]] = {c.kind: c for c in (TickLSTM, DeepLOB, BarLSTM)}


def build_net(kind: str, config: dict[str, int | float] | None = None) -> SequenceNet:
    """A net of `kind` from the config a manifest recorded (defaults when None)."""
    if kind not in NETS:
        raise ValueError(f"unknown net kind {kind!r}; choose one of {sorted(NETS)}")
    return NETS[kind](**(config or {}))
