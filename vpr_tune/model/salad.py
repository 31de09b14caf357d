"""SALAD (Izquierdo & Civera, "Optimal Transport Aggregation for Visual Place
Recognition", CVPR 2024; reference code serizba/salad), written from the paper.

Each local feature f_i (a patch token) gets a score for each of ``clusters`` clusters from
a small MLP; a learnt *dustbin* score is appended, and a few Sinkhorn iterations turn the
scores into a transport plan (optimal transport with an entropy term): each token's mass is
spread over the clusters and the dustbin, each cluster receiving about one token's worth,
so uninformative tokens (sky, road) can go to the dustbin instead of every cluster. A second
MLP reduces each token to ``cluster_dim``; cluster k's descriptor is the plan-weighted sum
of the reduced tokens, L2-normalised. The class token, through a third MLP, becomes a
``token_dim`` global scene token. Descriptor: token + clusters x cluster_dim, L2-normalised
(8,448-d at the defaults).

The mass each cluster receives is one token's (the paper's marginals: clusters 1 each, the
dustbin n - m of n tokens). With fewer tokens than clusters (small images: a 28 px image
is 4 tokens of 14 px) those marginals have no solution; then the clusters and the
dustbin share the tokens' mass equally (n / (m + 1) each), which is the paper's at n = m + 1.

On a backbone without a class token (a ResNet) the global token is the mean of the map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 512  # width of the three MLPs, as in the paper


def sinkhorn_log(scores: torch.Tensor, log_rows: torch.Tensor, log_cols: torch.Tensor,
                 iters: int) -> torch.Tensor:
    """Log of the entropic transport plan of ``scores`` (B, R, N) with row masses
    ``exp(log_rows)`` (R,) and column masses ``exp(log_cols)`` (N,), by alternately
    rescaling rows and columns ``iters`` times (log domain, for stability)."""
    u = torch.zeros_like(scores[:, :, 0])
    v = torch.zeros_like(scores[:, 0, :])
    for _ in range(int(iters)):
        u = log_rows - torch.logsumexp(scores + v[:, None, :], dim=2)
        v = log_cols - torch.logsumexp(scores + u[:, :, None], dim=1)
    return scores + u[:, :, None] + v[:, None, :]


def _mlp(in_channels: int, out: int, dropout: float) -> nn.Sequential:
    """Two 1x1 convolutions over the token map (dropout after the first)."""
    return nn.Sequential(nn.Conv2d(in_channels, HIDDEN, 1),
                         nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                         nn.ReLU(), nn.Conv2d(HIDDEN, out, 1))


class SALAD(nn.Module):
    """Sinkhorn Algorithm for Locally Aggregated Descriptors over a (B, C, H, W) token map
    and a (B, C) class token."""

    takes_token = True  # VPRModel hands it the backbone's class token too

    def __init__(self, in_channels: int, feature_size: tuple[int, int], clusters: int,
                 cluster_dim: int, token_dim: int, sinkhorn_iters: int,
                 dropout: float) -> None:
        super().__init__()
        self.clusters, self.cluster_dim = int(clusters), int(cluster_dim)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.score = _mlp(in_channels, self.clusters, float(dropout))
        self.reduce = _mlp(in_channels, self.cluster_dim, float(dropout))
        self.token = nn.Sequential(nn.Linear(in_channels, HIDDEN), nn.ReLU(),
                                   nn.Linear(HIDDEN, int(token_dim)))
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        self.dim = self.clusters * self.cluster_dim + int(token_dim)

    def assignment(self, x: torch.Tensor) -> torch.Tensor:
        """The transport plan (B, clusters, tokens): each token's mass over the clusters
        (the dustbin's share dropped), a column summing to at most 1."""
        scores = self.score(x).flatten(2).float()  # (B, m, n)
        b, m, n = scores.shape
        scores = torch.cat([scores, self.dustbin.float().expand(b, 1, n)], dim=1)
        per_cluster = min(1.0, n / (m + 1))  # one token's mass, or an equal share
        rows = torch.full((m + 1,), per_cluster, device=scores.device)
        rows[m] = n - m * per_cluster
        log_rows = rows.log() - math.log(n)  # normalised: both sides have mass 1
        log_cols = torch.full((n,), -math.log(n), device=scores.device)
        plan = sinkhorn_log(scores, log_rows, log_cols, self.sinkhorn_iters) + math.log(n)
        return plan.exp()[:, :m]

    def forward(self, x: torch.Tensor, token: torch.Tensor | None = None) -> torch.Tensor:
        if token is None:
            token = x.mean(dim=(2, 3))
        plan = self.assignment(x)
        local = self.reduce(x).flatten(2).float()  # (B, cluster_dim, n)
        clusters = torch.einsum("bmn,bln->bml", plan, local)  # (B, m, cluster_dim)
        return F.normalize(torch.cat([F.normalize(self.token(token).float(), dim=1),
                                      F.normalize(clusters, dim=2).flatten(1)], dim=1), dim=1)
