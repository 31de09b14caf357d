"""Aggregators: a (B, C, H, W) feature map -> a (B, dim) L2-normalised descriptor.

Every class takes ``(in_channels, feature_size, **params)``, where ``feature_size`` is the
backbone output size at the train image size, and sets ``self.dim``. The YAML name, the
class and the parameters with their defaults are one line of
``vpr_tune.components.AGGREGATORS`` (which ``build_model`` reads).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Avg(nn.Module):
    """Global average pooling."""

    def __init__(self, in_channels: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        self.dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.mean(dim=(2, 3)), dim=1)


def gem(x: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling over H, W."""
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeM(nn.Module):
    """Generalised mean pooling with an exponent ``p``, learnt when ``learn_p``."""

    def __init__(
        self, in_channels: int, feature_size: tuple[int, int], p: float, learn_p: bool
    ) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=bool(learn_p))
        self.dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(gem(x.float(), self.p), dim=1)


class CosPlace(nn.Module):
    """CosPlace head: L2-norm over channels, GeM, fully connected to ``dim``."""

    def __init__(
        self, in_channels: int, feature_size: tuple[int, int], dim: int, p: float
    ) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.fc = nn.Linear(in_channels, int(dim))
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = gem(F.normalize(x.float(), dim=1), self.p)
        return F.normalize(self.fc(x), dim=1)


class ConvAP(nn.Module):
    """Conv 1x1 to ``out_channels`` then adaptive average pooling to ``s1 x s2`` (gsv-cities)."""

    def __init__(
        self, in_channels: int, feature_size: tuple[int, int], out_channels: int, s1: int,
        s2: int,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, int(out_channels), kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d((int(s1), int(s2)))
        self.dim = int(out_channels) * int(s1) * int(s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pool(self.conv(x)).flatten(1), dim=1)


class _FeatureMixer(nn.Module):
    def __init__(self, num_features: int, mlp_ratio: int) -> None:
        super().__init__()
        hidden = max(1, int(num_features * mlp_ratio))
        self.mix = nn.Sequential(
            nn.LayerNorm(num_features),
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_features),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """MixVPR: feature-mixer MLPs over the flattened H*W map, then channel/row projections.

    The mixers are sized for the feature map at the train image size; a map of another size
    (an eval image of another size) is resized to it first, so any input size works (a
    config may not ask for one: ``components.SIZE_BOUND_AGGREGATORS``).
    """

    def __init__(
        self, in_channels: int, feature_size: tuple[int, int], out_channels: int,
        mix_depth: int, mlp_ratio: int, out_rows: int,
    ) -> None:
        super().__init__()
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        hw = self.feature_size[0] * self.feature_size[1]
        self.mix = nn.Sequential(*[_FeatureMixer(hw, mlp_ratio) for _ in range(int(mix_depth))])
        self.channel_proj = nn.Linear(in_channels, int(out_channels))
        self.row_proj = nn.Linear(hw, int(out_rows))
        self.dim = int(out_channels) * int(out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.feature_size:
            x = F.interpolate(x, size=self.feature_size, mode="bilinear", align_corners=False)
        x = self.mix(x.flatten(2))  # (B, C, HW)
        x = self.channel_proj(x.permute(0, 2, 1))  # (B, HW, out_channels)
        x = self.row_proj(x.permute(0, 2, 1))  # (B, out_channels, out_rows)
        return F.normalize(x.flatten(1), dim=1)


class NetVLAD(nn.Module):
    """NetVLAD with ``clusters`` centroids; ``init_from_descriptors`` runs k-means (faiss).

    ``alpha`` sets how sharply a local feature is assigned to its nearest centroids: the
    assignment weights start as ``alpha`` times the unit centroids (Arandjelovic et al.).
    None: derived from the k-means margin between the two closest centroids (the VPR
    benchmark's choice); a number: used as given, also after k-means."""

    def __init__(
        self, in_channels: int, feature_size: tuple[int, int], clusters: int,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        self.clusters = int(clusters)
        self.conv = nn.Conv2d(in_channels, self.clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(self.clusters, in_channels))
        self.alpha_setting = None if alpha is None else float(alpha)
        self.register_buffer("alpha", torch.tensor(self.alpha_setting or 1.0))
        with torch.no_grad():
            self.conv.weight.copy_((self.alpha * F.normalize(self.centroids, dim=1))[:, :, None,
                                                                                     None])
        self.dim = self.clusters * in_channels

    def init_from_descriptors(self, features: np.ndarray, seed: int = 0) -> None:
        """Set centroids and soft-assignment weights from local features (N, C), as in
        Arandjelovic et al. / the VPR benchmark: k-means centroids, alpha from the margin
        between the two closest centroids."""
        import faiss

        feats = np.ascontiguousarray(features, dtype=np.float32)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12
        kmeans = faiss.Kmeans(feats.shape[1], self.clusters, niter=50, seed=seed, verbose=False)
        kmeans.train(feats)
        centroids = kmeans.centroids.astype(np.float32)
        assign = centroids / (np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12)
        dots = np.sort(assign @ feats.T, axis=0)[::-1]
        gap = float(np.mean(dots[0] - dots[1])) if len(dots) > 1 else 1.0
        alpha = (self.alpha_setting if self.alpha_setting is not None
                 else -np.log(0.01) / max(gap, 1e-6))
        with torch.no_grad():
            self.alpha.fill_(alpha)
            self.centroids.copy_(torch.from_numpy(centroids))
            self.conv.weight.copy_(torch.from_numpy(alpha * assign)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=1)
        soft = F.softmax(self.conv(x).flatten(2), dim=1)  # (B, K, HW)
        flat = x.flatten(2)  # (B, C, HW)
        # sum_i a_k(x_i) (x_i - c_k) = a @ x^T - (sum_i a_k) c_k
        vlad = torch.bmm(soft, flat.transpose(1, 2)) - soft.sum(-1, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), dim=1)
