"""BoQ, Bag-of-Queries (Ali-bey, Chaib-draa & Giguère, "BoQ: A Place is Worth a Bag of
Learnable Queries", CVPR 2024; reference code amaralibey/Bag-of-Queries), written from the
paper.

The feature map is projected to ``proj_channels`` (a 3x3 convolution) and layer-normed into
a sequence of tokens. Each of ``layers`` BoQ blocks first refines the tokens with a
transformer encoder layer, then lets its own ``queries`` learnt query vectors (made
consistent with one self-attention + norm) attend to the tokens by cross-attention; the
next block gets the refined tokens. The outputs of every block (layers x queries vectors
of proj_channels) are mixed along the query axis by one linear layer into ``output_dim /
proj_channels`` rows: the descriptor is proj_channels x rows, L2-normalised (12,288-d =
384 x 32 at the defaults, the paper's DINOv2-BoQ; its ResNet-50 BoQ is proj_channels 512,
output_dim 16,384). Attention heads: proj_channels / 64, as in the paper.

The reference's DINOv2 backbone hands BoQ the tokens of the last block before DINOv2's
final norm; vpr-tune's ViT backbones hand every aggregator the normed tokens (BoQ's own
input norm follows the projection either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpr_tune.errors import UserError


class BoQBlock(nn.Module):
    """Encoder layer over the tokens, then the block's queries cross-attend to them."""

    def __init__(self, dim: int, queries: int, heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim,
                                                  dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, queries, dim))  # N(0, 1), as the paper
        self.query_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.query_norm = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(refined tokens (B, N, D), query outputs (B, Q, D))``."""
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.query_norm(q + self.query_attn(q, q, q, need_weights=False)[0])
        out = self.cross_attn(q, x, x, need_weights=False)[0]
        return x, self.out_norm(out)


class BoQ(nn.Module):
    """Bag-of-Queries aggregation of a (B, C, H, W) map."""

    def __init__(self, in_channels: int, feature_size: tuple[int, int], proj_channels: int,
                 queries: int, layers: int, output_dim: int) -> None:
        super().__init__()
        proj, output_dim = int(proj_channels), int(output_dim)
        if proj < 64 or proj % 64:
            raise UserError(f"model.aggregator.proj_channels: {proj} must be a multiple of 64 "
                            "(one attention head per 64 channels)")
        if output_dim < proj or output_dim % proj:
            raise UserError(f"model.aggregator.output_dim: {output_dim} must be a multiple of "
                            f"proj_channels {proj} (the descriptor is proj_channels x rows)")
        self.proj = nn.Conv2d(in_channels, proj, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(proj)
        self.blocks = nn.ModuleList([BoQBlock(proj, int(queries), proj // 64)
                                     for _ in range(int(layers))])
        self.rows = nn.Linear(int(layers) * int(queries), output_dim // proj)
        self.dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.proj(x).flatten(2).transpose(1, 2))  # (B, N, proj)
        outs = []
        for block in self.blocks:
            x, out = block(x)
            outs.append(out)
        desc = self.rows(torch.cat(outs, dim=1).transpose(1, 2))  # (B, proj, rows)
        return F.normalize(desc.flatten(1), dim=1)
