"""Q-Former cross-attention keys and values computed once per distinct image of an ITM batch.

ITM re-ranking scores pairs grouped by image, so one batch holds the same vision embeddings many
times, and every cross-attention layer projects them to keys and values once per pair (about 60% of
the ITM FLOPs at 364 px). :func:`reused_image_kv` swaps those ``key`` / ``value`` Linears for one that
projects only the first row of each run of equal images and copies the result to the run's other
rows; the attention then sees tensors equal to the ones the plain forward builds.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# same-size integer dtypes, to compare rows bit for bit (-0.0 == 0.0 and NaN != NaN as floats)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def runs_of_equal_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first_rows, run_of_row)``: the index of the first row of every run of consecutive bitwise-equal
    rows of ``rows`` (dim 0), and the run each row belongs to; ``rows == rows[first_rows][run_of_row]``.

    Example: rows a, a, b, a -> first_rows [0, 2, 3], run_of_row [0, 0, 1, 2].
    """
    bits = rows.contiguous().view(_BITS[rows.element_size()]).reshape(rows.shape[0], -1)
    same_as_previous = (bits[1:] == bits[:-1]).all(dim=1)
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=rows.device), ~same_as_previous])
    return starts.nonzero().squeeze(1), starts.cumsum(0) - 1


class RowReusingLinear(nn.Module):
    """``linear`` applied to ``x[first_rows]`` only and gathered back to all rows by ``run_of_row``."""

    def __init__(self, linear: nn.Module, first_rows: torch.Tensor, run_of_row: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.first_rows = first_rows
        self.run_of_row = run_of_row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.index_select(0, self.first_rows)).index_select(0, self.run_of_row)


def cross_attention_modules(qformer: nn.Module) -> list[nn.Module]:
    """The cross-attention ``Blip2QFormerMultiHeadAttention`` of every Q-Former layer that has one."""
    return [layer.crossattention.attention for layer in qformer.encoder.layer
            if getattr(layer, "has_cross_attention", False)]


@contextmanager
def reused_image_kv(qformer: nn.Module, image_embeds: torch.Tensor) -> Iterator[None]:
    """Within the block, ``qformer``'s cross-attention projects each run of equal rows of ``image_embeds``
    (the ``encoder_hidden_states`` the block passes it, same batch order) once; nothing when all differ."""
    first_rows, run_of_row = runs_of_equal_rows(image_embeds)
    if first_rows.numel() == image_embeds.shape[0]:
        yield
        return
    swapped = []
    try:
        for attention in cross_attention_modules(qformer):
            for name in ("key", "value"):
                linear = getattr(attention, name)
                setattr(attention, name, RowReusingLinear(linear, first_rows, run_of_row))
                swapped.append((attention, name, linear))
        yield
    finally:
        for attention, name, linear in swapped:
            setattr(attention, name, linear)
