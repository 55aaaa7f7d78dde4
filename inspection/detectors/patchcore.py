"""PatchCore: nearest-neighbour distance of each patch to a memory bank of normal patches.

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler, "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022 (arXiv:2106.08265). The network is anomalib's ``PatchcoreModel`` on the
offline EfficientNet-Lite0 backbone: locally aware patch features (3 x 3 average pooling) from
two mid-level stages (``blocks.2``, stride 8, 40 channels; ``blocks.4``, stride 16, 112
channels, upsampled to stride 8), a memory bank of normal patch features reduced by greedy
k-center coreset selection, the anomaly map the patch distances upsampled and Gaussian-smoothed
(sigma 4 px). The image score is by default the mean of the largest 1 % of the image's patch
distances (``score: top_mean``); ``score: reweighted`` is the paper's reweighted maximum patch
distance (its equation 7, ``num_neighbors`` support samples). On cached features of all three
sets of protocol ``suite`` the top-1 % mean separated the test images at least as well as the
reweighted maximum (``bench/results/explore/patchcore-offline.md``): a defect that spans a few
patches counts more than one odd patch of a normal part.

Because every patch is compared with every normal patch wherever it was seen, the detector does
not care where on the image a part sits: parts photographed at varying positions or rotations
stay normal as long as their local appearance was seen in training.

Not in the paper (``fine_bank``, on by default): a second bank of each cell's own feature (no
neighbourhood averaging) next to the averaged one. The averaging suits textures (magnetic tile)
and hides small defects on small parts (a screw's thread); which one a new part needs cannot be
told from its normal images, so both are kept. A patch's score is the mean of its distances to
the two banks, each divided by that bank's mean coverage distance (how far the training patches
lie from it, which the greedy cover yields for free), so neither bank's scale dominates. In the
CPU exploration on all three suite sets at once it scored at least as well as the better single
bank (``bench/results/explore/patchcore-locality.md``); in the suite and over three seeds the
screw gained 0.025-0.038 and elpv_solar and mt-exp stayed within 0.004
(``bench/results/explore/patchcore-finebank-seeds.md``). It doubles the nearest-neighbour
search and the coreset selection. With ``projection_dim`` the units are measured on the
projection, which keeps distances only approximately (Johnson-Lindenstrauss).

Two departures from anomalib, both for a 2-core machine and the station:

* Coreset selection (:func:`greedy_coreset`): the paper's greedy k-center, with precomputed
  squared norms so every greedy step is one matrix-vector product over the pool (optionally on
  a random projection, the paper's speed-up for wide features). anomalib's ``KCenterGreedy``
  took hours on this machine for a full training set.
* The bank is capped at ``max_bank`` patches (``coreset_ratio`` of the pool below that): the
  nearest-neighbour search is one (patches x bank) matrix product in the exported OpenVINO graph,
  so the cap bounds the station's time per image. Upsampling and smoothing run as two constant
  matrix products (:class:`inspection.detectors._common.GaussianBlur`), not anomalib's nearest
  upsampling plus a 33-tap convolution at full size.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.nn import functional as F

from inspection.backbone import install_offline_weights
from inspection.detectors._common import GaussianBlur, static_dims
from inspection.detectors.base import (
    Detector,
    DetectorConfig,
    ProgressFn,
    batches,
    no_progress,
)

logger = logging.getLogger(__name__)


class PatchcoreConfig(DetectorConfig):
    """PatchCore settings.

    ``coreset_ratio`` is the share of the pooled training patches kept in the bank (the paper
    reports 1-10 %), ``max_bank`` caps it (station speed: one 256 px image compares its 1024
    patches with every bank entry), ``projection_dim`` is the random projection the greedy
    selection runs on (the paper's 128 for 1536-d WideResNet features). Lite0's patches have
    only 152 dimensions, so by default the selection runs on them as they are: on 40k patches
    of ``mvtec_screw`` a 1000-entry cover reached every patch within 26.8 on the full
    features, 30.3 on a 128-d and 31.3 on a 64-d projection, for at most a third less time.
    """

    type: Literal["patchcore"] = "patchcore"
    layers: tuple[str, ...] = ("blocks.2", "blocks.4")
    coreset_ratio: float = Field(0.1, gt=0.0, le=1.0)
    max_bank: int = Field(4096, ge=1)
    projection_dim: int = Field(
        0,
        ge=0,
        description="Random projection the coreset selection runs on; 0 = the full features.",
    )
    score: Literal["top_mean", "reweighted"] = Field(
        "top_mean",
        description=(
            "Image score: the mean of the largest ``top_fraction`` of the image's patch "
            "distances, or the paper's reweighted maximum (eq. 7)."
        ),
    )
    top_fraction: float = Field(
        0.01, gt=0.0, le=1.0, description="Share of an image's patches ``top_mean`` averages."
    )
    num_neighbors: int = Field(
        9, ge=1, description="Support samples of the score reweighting (``score: reweighted``)."
    )
    sigma: float = Field(4.0, ge=0.0, description="Gaussian smoothing of the map, in pixels.")
    neighbourhood: int = Field(
        3,
        ge=1,
        description=(
            "Side of the local neighbourhood each patch feature is averaged over, in feature "
            "cells (the paper's patch size p; odd). 1 keeps every cell's own feature: finer "
            "locality for small defects on small parts, less context for textures."
        ),
    )

    fine_bank: bool = Field(
        True,
        description=(
            "Add a second bank of each cell's own feature (no neighbourhood averaging) and "
            "score every patch by both banks: its distance to each, in units of that bank's "
            "mean coverage distance, averaged. Finer locality for small defects without losing "
            "the context bank's texture sense (bench/results/explore/patchcore-locality.md)."
        ),
    )

    @model_validator(mode="after")
    def _fine_bank_score(self) -> PatchcoreConfig:
        if self.fine_bank and self.score == "reweighted":
            raise ValueError(
                "score 'reweighted' reweights by one bank's neighbours: set fine_bank: false "
                "or score: top_mean"
            )
        return self

    @property
    def dual(self) -> bool:
        """Whether the model keeps the fine bank next to the context bank."""
        return self.fine_bank and self.neighbourhood > 1

    @field_validator("neighbourhood")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"neighbourhood must be odd (centred on its patch), got {value}")
        return value


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


@torch.no_grad()
def project(features: torch.Tensor, dim: int, seed: int = 0, chunk: int = 65536) -> torch.Tensor:
    """(N, D) features -> (N, dim) Gaussian random projection (identity when ``dim`` is 0 or
    ``>= D``).

    Distances are preserved up to a small factor (Johnson-Lindenstrauss), which is all a greedy
    cover needs; computed in chunks so the pool is never copied at full width twice.
    """
    n, d = features.shape
    if dim <= 0 or dim >= d:
        return features.float()
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.randn(d, dim, generator=gen) / math.sqrt(dim)
    out = torch.empty(n, dim)
    for start in range(0, n, chunk):
        out[start : start + chunk] = features[start : start + chunk].float() @ matrix
    return out


class Cover(NamedTuple):
    """A greedy k-center cover.

    Attributes:
        indices: (n_select,) rows of the pool chosen as centres, in the order chosen.
        distances: (N,) Euclidean distance of every pool row to its nearest centre (0 for the
            centres; on the projection when the selection ran on one).
    """

    indices: torch.Tensor
    distances: torch.Tensor


def greedy_coreset(
    features: torch.Tensor,
    n_select: int,
    projection_dim: int = 0,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> torch.Tensor:
    """Indices (n_select,) of a greedy k-center cover of ``features`` (N, D): see
    :func:`greedy_cover`."""
    return greedy_cover(features, n_select, projection_dim, seed, progress).indices


@torch.no_grad()
def greedy_cover(
    features: torch.Tensor,
    n_select: int,
    projection_dim: int = 0,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    label: str = "patchcore: coreset",
) -> Cover:
    """A greedy k-center cover of ``features`` (N, D) with n_select centres.

    Each step adds the point farthest from everything selected so far (Sener & Savarese's
    k-center greedy, as PatchCore uses it), so the largest distance from any training patch to
    the bank shrinks as fast as greedy allows. Runs on the features or a random projection of
    them (``projection_dim`` > 0, the paper's speed-up for wide features) with precomputed
    squared norms, so a step is one (N, d) matrix-vector product plus O(N) updates in place
    (about 20-25 ms for 550k patches of 128-152 dimensions on this machine). The first point
    is drawn with ``seed``.

    Tried and dropped: pruning by the triangle inequality (a point whose nearest centre lies at
    r cannot move closer to a centre 2r away from that one). Past the first thousand steps it
    left under 1 % of the points to update, but the O(N) test and the gather of the survivors
    cost about as much as the product it saved, and the first steps became slower.
    """
    n = int(features.shape[0])
    if n_select >= n:
        return Cover(torch.arange(n), torch.zeros(n))
    if n_select < 1:
        raise ValueError(f"coreset size must be >= 1, got {n_select}")
    x = project(features, projection_dim, seed)
    sq = _squared_norms(x)
    gen = torch.Generator().manual_seed(seed)
    index = int(torch.randint(n, (1,), generator=gen))
    min_dist = torch.full((n,), float("inf"))  # squared distance to the nearest centre
    selected = torch.empty(n_select, dtype=torch.long)
    dist = torch.empty(n)
    every = max(1, n_select // 50)
    for i in range(n_select):
        selected[i] = index
        # squared distance of every point to the new centre: |x|^2 - 2 x.c + |c|^2
        torch.mv(x, x[index], out=dist)
        dist.mul_(-2.0).add_(sq).add_(sq[index])
        torch.minimum(min_dist, dist, out=min_dist)
        index = int(torch.argmax(min_dist))
        if i % every == 0 or i == n_select - 1:
            progress(label, i + 1, n_select)
    return Cover(selected, min_dist.clamp_min_(0.0).sqrt_())


def coverage_radius(features: torch.Tensor, selected: torch.Tensor, chunk: int = 4096) -> float:
    """Largest Euclidean distance from any row of ``features`` (N, D) to its nearest selected row."""
    bank = features[selected].float()
    bank_sq = _squared_norms(bank)
    worst = 0.0
    for start in range(0, len(features), chunk):
        x = features[start : start + chunk].float()
        d2 = _squared_norms(x)[:, None] - 2 * x @ bank.T + bank_sq[None, :]
        worst = max(worst, float(d2.min(dim=1).values.clamp_min(0).max()))
    return math.sqrt(worst)


def _fast_model_class() -> type[nn.Module]:
    """anomalib's ``PatchcoreModel`` with a cheaper inference forward (built lazily: importing
    anomalib is heavy)."""
    from anomalib.data import InferenceBatch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    class FastPatchcoreModel(PatchcoreModel):
        """Same training forward, memory bank, scores and maps as anomalib's; inference as
        one matrix product and a row maximum.

        anomalib computes the full (patches x bank) Euclidean distance matrix, then its
        minimum with indices (TopK in OpenVINO); on this machine that took 136 ms per 256 px
        image with a 4096-entry bank, most of it in the elementwise passes over the matrix.
        Here the nearest entry maximises ``x.m - |m|^2 / 2``, so the bank is augmented with
        that column once, ``[x, 1] @ [m, -|m|^2/2]^T`` gives every patch's value in one
        product, and a row maximum (no indices) gives its squared distance
        ``|x|^2 - 2 max``. Indices are needed only for the image score's reweighting, so they
        are found for each image's top patch alone (paper, eq. 7; anomalib's
        ``compute_anomaly_score``).
        """

        #: Whether a fine bank (cells' own features) scores next to the context bank; its
        #: buffers exist only then, so single-bank bundles keep their keys.
        dual: bool = False
        fine_bank: torch.Tensor
        bank_scales: torch.Tensor

        def make_dual(self) -> None:
            """Add the fine bank and the two banks' distance units (filled by the fit)."""
            self.dual = True
            self.register_buffer("fine_bank", torch.empty(0))
            self.register_buffer("bank_scales", torch.ones(2))

        def embeddings(self, input_tensor: torch.Tensor) -> list[torch.Tensor]:
            """(B, D, h, w) patch embeddings per bank: the context bank's (``feature_pooler``
            neighbourhood), then, when ``dual``, the fine bank's (each cell's own feature)."""
            with torch.no_grad():
                features = self.feature_extractor(input_tensor)
            pooled = {k: self.feature_pooler(v) for k, v in features.items()}
            out = [self.generate_embedding(pooled)]
            if self.dual:
                out.append(self.generate_embedding(features))
            return out

        def forward(self, input_tensor: torch.Tensor) -> torch.Tensor | InferenceBatch:
            if self.training:
                return super().forward(input_tensor)
            if static_dims(self.memory_bank.size(0)) == (0,):
                raise ValueError("Memory bank is empty. Cannot provide anomaly scores")
            output_size = input_tensor.shape[-2:]
            embeddings = self.embeddings(input_tensor)
            b, d, h, w = embeddings[0].shape
            banks = [self.memory_bank, self.fine_bank] if self.dual else [self.memory_bank]
            dists, patches, augmented = [], [], []
            for embedding, bank in zip(embeddings, banks, strict=True):
                patches.append(embedding.permute(0, 2, 3, 1).reshape(b, h * w, d))
                augmented.append(torch.cat([bank, -0.5 * (bank * bank).sum(1, keepdim=True)], 1))
                ones = torch.ones(b, h * w, 1, dtype=patches[-1].dtype)
                best = torch.matmul(torch.cat([patches[-1], ones], 2), augmented[-1].T).amax(2)
                d2 = (patches[-1] * patches[-1]).sum(2) - 2.0 * best
                dists.append(d2.clamp_min(0.0).sqrt())  # (B, P) distance to the nearest entry
            if self.dual:  # each bank's distances in its own unit, averaged
                patch_scores = (dists[0] / self.bank_scales[0] + dists[1] / self.bank_scales[1]) / 2
            else:
                patch_scores = dists[0]
            if self.score_mode == "top_mean":
                n_patches = static_dims(h * w)[0]  # fixed by the bundle's input size
                k = max(1, int(n_patches * self.top_fraction))
                score = patch_scores.topk(k, dim=1).values.mean(1)
            else:
                score = self._reweighted(patch_scores, patches[0], augmented[0])
            anomaly_map = self.anomaly_map_generator(patch_scores.reshape(b, 1, h, w), output_size)
            return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)

        def _reweighted(
            self, patch_scores: torch.Tensor, patches: torch.Tensor, augmented: torch.Tensor
        ) -> torch.Tensor:
            """(B,) the paper's image score from (B, P) patch distances and (B, P, D) patches."""
            s_star, top = patch_scores.max(1)  # s* and the index of m^test,*
            if self.num_neighbors == 1:
                return s_star
            b = patches.shape[0]
            feature = torch.gather(
                patches, 1, top.view(b, 1, 1).expand(b, 1, patches.shape[2])
            ).squeeze(1)  # (B, D)
            ones = torch.ones(b, 1, dtype=feature.dtype)
            nearest = torch.matmul(torch.cat([feature, ones], 1), augmented.T).argmax(1)
            bank = self.memory_bank
            m_star = bank[nearest]  # (B, D): m* in the paper
            k = min(self.num_neighbors, int(bank.shape[0]))
            to_bank = torch.cdist(m_star, bank)  # (B, M)
            support = to_bank.topk(k, dim=1, largest=False).indices  # N_b(m*)
            dist = torch.linalg.vector_norm(bank[support] - feature[:, None, :], dim=2)
            weights = 1.0 - F.softmax(dist, dim=1)[:, 0]
            return weights * s_star

    return FastPatchcoreModel


class PatchcoreDetector(Detector):
    """anomalib ``PatchcoreModel`` with a plain fit loop and a fast coreset selection."""

    key = "patchcore"
    Config = PatchcoreConfig
    paper = "Roth et al., CVPR 2022, arXiv:2106.08265"
    #: Distances through a (patches x bank) matrix product: float32 rounding of |x|^2 - 2x.m
    #: + |m|^2 differs a little more between torch and OpenVINO than elementwise maps.
    export_rtol = 2e-3
    export_atol = 1e-3

    config: PatchcoreConfig

    @classmethod
    def quick_config(cls) -> DetectorConfig:
        return cls.Config(type=cls.key, image_size=64, max_bank=512)

    @classmethod
    def saved_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        # saved before the image score was an option: the paper's reweighted maximum; before
        # the fine bank: one bank
        return {"score": "reweighted", "fine_bank": False, **config}

    def build_model(self) -> nn.Module:
        install_offline_weights(self.config.backbone)
        model: Any = _fast_model_class()(
            layers=list(self.config.layers),
            backbone=self.config.backbone,
            pre_trained=True,
            num_neighbors=self.config.num_neighbors,
        )
        model.score_mode = self.config.score
        p = self.config.neighbourhood
        model.feature_pooler = nn.AvgPool2d(p, 1, p // 2) if p > 1 else nn.Identity()
        model.top_fraction = self.config.top_fraction
        if self.config.dual:
            model.make_dual()
        # forward(patch_scores, output_size): bilinear upsampling + smoothing as matrix products
        model.anomaly_map_generator = GaussianBlur(self.config.sigma)
        return model

    def bank_size(self, n_patches: int) -> int:
        """Bank entries kept of ``n_patches`` pooled training patches."""
        return max(1, min(self.config.max_bank, math.ceil(self.config.coreset_ratio * n_patches)))

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        model: Any = self.torch_model  # FastPatchcoreModel
        n_banks = 2 if model.dual else 1
        parts: list[list[torch.Tensor]] = [[] for _ in range(n_banks)]
        for sl in batches(len(images), self.config.batch_size):
            for part, embedding in zip(parts, model.embeddings(images[sl]), strict=True):
                part.append(embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]))
            progress("patchcore: features", sl.stop, len(images))
        scales = []
        for i, part in enumerate(parts):
            pool = torch.cat(part)
            part.clear()
            n_keep = self.bank_size(len(pool))
            name = ("context", "fine")[i] if model.dual else "bank"
            logger.info(
                "patchcore: %s coreset of %d from %d patches (%d-d, selected at %s)",
                name,
                n_keep,
                len(pool),
                pool.shape[1],
                f"{self.config.projection_dim}-d" if self.config.projection_dim else "full width",
            )
            cover = greedy_cover(
                pool,
                n_keep,
                self.config.projection_dim,
                self.config.seed,
                progress,
                f"patchcore: {name} coreset" if model.dual else "patchcore: coreset",
            )
            bank = pool[cover.indices].contiguous()
            if i == 0:
                model.memory_bank = bank
            else:
                model.fine_bank = bank
            scales.append(float(cover.distances.mean()) or 1.0)
            del pool
        if model.dual:
            model.bank_scales = torch.tensor(scales)
            logger.info("patchcore: mean coverage distance context %.3g, fine %.3g", *scales)


DETECTOR = PatchcoreDetector
