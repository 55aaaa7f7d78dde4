"""The trained part of the typer: a small two-head MLP on frozen backbone features.

Architecture (Masana et al., "Metric Learning for Novelty and Anomaly Detection", BMVC 2018,
two-head variant, so the metric head does not cost closed-set accuracy)::

    features (N, D) -> standardise -> dropout -> Linear(D, hidden) -> BN -> ReLU -> dropout -> h
    h -> Linear(hidden, C)  = logits      (cross-entropy)
    h -> Linear(hidden, E)  = embedding   (prototype cross-entropy on -||z - c_k||^2 + centre loss)

The centre loss (Wen et al., ECCV 2016) pulls embeddings to learnable class centres; the
distance-based cross-entropy (Yang et al., "Robust Classification with Convolutional Prototype
Learning", CVPR 2018) keeps the centres apart, so nearest-class-mean rejection is meaningful.
Training is seconds on CPU: features are computed once by the frozen backbone.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inspection.openset.config import HeadConfig
from inspection.openset.scoring import NetworkOutputs

logger = logging.getLogger(__name__)


class TypingHead(nn.Module):
    """(N, D) features -> ((N, E) embedding, (N, C) logits). Standardisation is inside."""

    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(self, in_dim: int, n_classes: int, config: HeadConfig) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.trunk = nn.Sequential(
            nn.Dropout(config.input_dropout),
            nn.Linear(in_dim, config.hidden),
            nn.BatchNorm1d(config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.classifier = nn.Linear(config.hidden, n_classes)
        self.embed = nn.Linear(config.hidden, config.embed_dim)
        self.centres = nn.Parameter(0.1 * torch.randn(n_classes, config.embed_dim))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk((features - self.feat_mean) / self.feat_std)
        return self.embed(h), self.classifier(h)


def _sq_dist(z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return (z[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    seed: int = 0,
) -> TypingHead:
    """Train a :class:`TypingHead` on (M, D) features with (M,) int class labels; eval mode out.

    Loss = CE(logits) + CE(-||z - c||^2) + centre_weight * ||z - c_y||^2, class-balanced by
    inverse frequency when ``config.balanced``. Adam with cosine learning-rate decay. Runs on
    one torch thread (restored afterwards): the matrices are small, and thread hand-offs cost
    more than they save, badly so on a shared CPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_head(features, labels, n_classes, config, seed)
    finally:
        torch.set_num_threads(threads)


def _train_head(
    features: np.ndarray, labels: np.ndarray, n_classes: int, config: HeadConfig, seed: int
) -> TypingHead:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    head = TypingHead(x.shape[1], n_classes, config)
    head.feat_mean.copy_(x.mean(0))
    var = x.var(0)
    head.feat_std.copy_(torch.sqrt(var + 0.01 * var.mean() + 1e-12))  # floor for dead channels
    counts = torch.bincount(y, minlength=n_classes).float().clamp(min=1)
    weight = (counts.sum() / (n_classes * counts)) if config.balanced else torch.ones(n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(x) // config.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    head.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb, yb = x[idx], y[idx]
            z, logits = head(xb)
            d2 = _sq_dist(z, head.centres)
            loss = F.cross_entropy(logits, yb, weight=weight) + F.cross_entropy(
                -d2, yb, weight=weight
            )
            if config.centre_weight > 0:
                loss = (
                    loss
                    + config.centre_weight * (weight[yb] * d2.gather(1, yb[:, None])[:, 0]).mean()
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch == 0 or (epoch + 1) % 10 == 0:
            logger.debug("head epoch %d/%d loss %.4f", epoch + 1, config.epochs, total / len(x))
    head.eval()
    return head


def head_outputs(head: TypingHead, features: np.ndarray, batch_size: int = 1024) -> NetworkOutputs:
    """Run the head on (N, D) features; returns the features with embedding and logits."""
    feats = np.asarray(features, dtype=np.float32)
    zs, ls = [], []
    with torch.inference_mode():
        for start in range(0, len(feats), batch_size):
            z, logit = head(torch.from_numpy(feats[start : start + batch_size]))
            zs.append(z.numpy())
            ls.append(logit.numpy())
    e = head.embed.out_features
    c = head.classifier.out_features
    return NetworkOutputs(
        feats,
        np.concatenate(zs) if zs else np.zeros((0, e), np.float32),
        np.concatenate(ls) if ls else np.zeros((0, c), np.float32),
    )


class TypingNetwork(nn.Module):
    """Backbone + head in one graph for export: raw RGB [0, 1] (N, 3, S, S) ->
    (features (N, D), embedding (N, E), logits (N, C))."""

    def __init__(self, backbone: nn.Module, head: TypingHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        z, logits = self.head(f)
        return f, z, logits
