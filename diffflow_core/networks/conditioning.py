"""The conditioning vector shared by the image networks: time/noise embedding plus an optional class label.

Labels use a learned table with one extra row, index ``num_classes``: the null label that unconditional
calls (``y=None``) and classifier-free guidance use.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from diffflow_core.networks.embeddings import as_batch_time, make_embedding


class Conditioning(nn.Module):
    """``(t, y) -> [N, width]``: an MLP on the time embedding plus a label embedding; ``None`` if neither."""

    def __init__(self, width: int, time_conditioned: bool, num_classes: int | None, time_embedding: str = "fourier",
                 embedding_dim: int = 128, fourier_scale: float = 16.0) -> None:
        super().__init__()
        self.width, self.num_classes = width, num_classes
        self.time = nn.Sequential(make_embedding(time_embedding, embedding_dim, fourier_scale),
                                  nn.Linear(embedding_dim, width), nn.SiLU(), nn.Linear(width, width)) \
            if time_conditioned else None
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None

    @property
    def active(self) -> bool:
        return self.time is not None or self.label is not None

    def forward(self, x: Tensor, t: Tensor | float | None, y: Tensor | None) -> Tensor | None:
        out = None
        if self.time is not None:
            out = self.time(as_batch_time(t, x))
        if self.label is not None:
            labels = y if y is not None else torch.full((x.shape[0],), self.num_classes, device=x.device)
            emb = self.label(labels.long())
            out = emb if out is None else out + emb
        return out
