"""Private building blocks shared by the self-implemented detectors (CutPaste, Mem-AE, OC-GAN, MKD).

Everything here that runs inside an eval forward is traceable for OpenVINO export: fixed-shape
tensor ops only, no data-dependent Python control flow, no numpy. Fitting helpers (Gaussian
fits, feature caching) run at train time and may use numpy / scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inspection.backbone import install_offline_weights
from inspection.detectors.base import ProgressFn, batches


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` px, radius ``round(4 sigma)``."""
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be positive, got {sigma}")
    radius = max(1, round(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def resize_smooth_matrix(
    n_in: int, n_out: int, kernel: torch.Tensor | None, pad: int
) -> torch.Tensor:
    """(n_out, n_in) matrix of one axis: bilinear resize from ``n_in`` to ``n_out`` samples
    (PyTorch's rule for ``align_corners=False``), then (if ``kernel``) cross-correlation with
    the 1-D ``kernel`` after ``pad`` samples of reflect padding.

    Built in NumPy (float64), so that a traced graph sees a constant and no ops; tests check it
    against ``F.interpolate`` and the convolution it replaces.
    """
    resize = np.zeros((n_out, n_in))
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    np.add.at(resize, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(resize, (np.arange(n_out), i1), frac)
    if kernel is None:
        return torch.from_numpy(resize.astype(np.float32))
    taps = kernel.detach().cpu().double().numpy().ravel()
    smooth = np.zeros((n_out, n_out))
    for t, weight in enumerate(taps):
        p = np.arange(n_out) + t - int(pad)  # position in the unpadded signal
        p = np.abs(p)  # reflect at the start
        p = np.where(p > n_out - 1, 2 * (n_out - 1) - p, p)  # and at the end
        np.add.at(smooth, (np.arange(n_out), p), weight)
    return torch.from_numpy((smooth @ resize).astype(np.float32))


def static_dims(*dims: int | torch.Tensor) -> tuple[int, ...]:
    """Shape entries as Python ints, also while ``torch.jit.trace`` runs.

    Traced, a shape entry is a tensor, and turning it into an int bakes the traced size into the
    graph as a constant; torch warns about that (``TracerWarning``) because a traced graph could
    be fed other sizes. An exported bundle's input size is fixed by design (the camera frame is
    resized to it before inference), so the constant is what we want: the warning is silenced
    for these reads only. Unlike reusing an earlier eager call's results, this stays right when
    one module is called on several map sizes in one forward (MKD's layers share one blur).
    """
    if not torch.jit.is_tracing():
        return tuple(int(d) for d in dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(d) for d in dims)


class GaussianBlur(nn.Module):
    """Separable Gaussian smoothing of (N, 1, H, W) maps with reflect padding; sigma 0 = identity.

    The kernel radius is clipped to ``max_size // 2 - 1`` at forward time from the static input
    shape, so tiny test images (64 px) still pad legally.

    ``forward(amap, size)`` (:meth:`upsample_smooth`) is ``forward(upsample(amap, size))``
    computed as two matrix products: both steps are linear and act on rows and columns
    separately, so per axis they collapse into one constant (out, in) matrix. On a 64 -> 256 px
    map that is about 4x fewer multiplications than upsampling and then convolving with a 33-tap
    kernel at full size, and it runs as OpenVINO MatMul, which is far better optimised than
    single-channel Interpolate and Convolution. Call it through ``forward`` so that exported nodes keep the module's name
    (int8 export keeps ``*blur*`` nodes in float). The matrices are cached per shape on the first
    call, so traced graphs hold them as constants; shapes are read through
    :func:`static_dims` (a bundle's input size is fixed).
    """

    kernel: torch.Tensor

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        kernel = gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)
        self._matrices: dict[tuple[int, int, int], torch.Tensor] = {}

    def _clipped(self, size: Sequence[int]) -> tuple[torch.Tensor, int]:
        """The 1-D kernel and its padding for maps of ``size`` (H, W)."""
        k = self.kernel
        pad = int(k.numel()) // 2
        limit = min(static_dims(size[0], size[1])) - 1
        if pad > limit:  # static shapes: resolved at trace time
            k = k[pad - limit : pad + limit + 1]
            k = k / k.sum()
            pad = limit
        return k, pad

    def forward(self, amap: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """Smooth (N, 1, H, W) maps; with ``size`` (H, W), smooth ``upsample(amap, size)`` in
        two matrix products instead (see the class docstring)."""
        if size is not None:
            return self.upsample_smooth(amap, size)
        if self.sigma <= 0:
            return amap
        k, pad = self._clipped(amap.shape[-2:])
        amap = F.conv2d(F.pad(amap, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(amap, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))

    def axis_matrix(self, n_in: int, n_out: int, size: Sequence[int]) -> torch.Tensor:
        """(n_out, n_in) operator of one axis for maps resized to ``size`` (see
        :func:`resize_smooth_matrix`); cached, so traced graphs hold it as a constant."""
        key = (n_in, n_out, min(static_dims(size[0], size[1])))
        if key not in self._matrices:
            k, pad = self._clipped(size) if self.sigma > 0 else (None, 0)
            self._matrices[key] = resize_smooth_matrix(n_in, n_out, k, pad)
        return self._matrices[key]

    def upsample_smooth(self, amap: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """``forward(upsample(amap, size))`` for (N, C, h, w) maps: (N, C, H, W), equal up to
        float rounding (the matrices are built in float64)."""
        h, w, out_h, out_w = static_dims(amap.shape[-2], amap.shape[-1], size[0], size[1])
        rows = self.axis_matrix(h, out_h, (out_h, out_w))
        cols = self.axis_matrix(w, out_w, (out_h, out_w))
        return torch.matmul(torch.matmul(rows.to(amap.device), amap), cols.to(amap.device).T)


def upsample(amap: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size`` (H, W)."""
    return F.interpolate(
        amap, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False
    )


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize square (N, C, H, H) to (N, C, size, size): box filter for integer down-scaling
    (exact area average, exportable), bilinear otherwise; identity when already there.

    The box filter is two means over reshaped axes (columns, then rows) rather than
    ``avg_pool2d``: the same average up to float rounding, but in OpenVINO it reads the planar
    camera input as it is, where pooling first reorders it into a channel-blocked layout
    (reorder and pool: 170 of OC-GAN's 1000 us per 256 px image on one thread; the means: 117).
    """
    side = int(images.shape[-1])
    if side == size:
        return images
    if side > size and side % size == 0:
        k, c = side // size, int(images.shape[1])
        # -1 for the batch: the exported graph keeps a dynamic batch size.
        cols = images.reshape(-1, side, size, k).mean(dim=3)
        return cols.reshape(-1, size, k, size).mean(dim=2).reshape(-1, c, size, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def tanh_range_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised images resized to ``size`` and clamped to [-1, 1]: (N, C, size, size).

    The input and reconstruction target of the autoencoders whose decoder ends in ``tanh``
    (OC-GAN, GANomaly): their papers assume inputs in [-1, 1], which the mean = std = 0.5
    normalisation gives for camera pixels but per-image photometric standardisation does not
    (about 1 % of a standardised magnetic-tile pixel lies outside). Unclamped, those pixels
    cannot be reconstructed at all and their error adds to every score regardless of defects.
    """
    return resize_to(images, size).clamp(-1.0, 1.0)


# -- Gaussian density (Mahalanobis) -----------------------------------------------------------


def fit_gaussian(
    samples: np.ndarray | torch.Tensor, shrinkage: str | float = "ledoit-wolf"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and precision (D, D) of ``samples`` (M, D) with a shrunk covariance.

    ``shrinkage`` is ``"ledoit-wolf"`` (the estimator CutPaste's GDE uses) or a fixed weight
    ``a`` in [0, 1] for ``(1 - a) S + a tr(S)/D I``. Computed in float64, returned float32.
    """
    x = (
        samples.detach().cpu().double().numpy()
        if isinstance(samples, torch.Tensor)
        else np.asarray(samples, np.float64)
    )
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (M >= 2, D) samples for a Gaussian fit, got {x.shape}")
    mean = x.mean(axis=0)
    if shrinkage == "ledoit-wolf":
        from sklearn.covariance import LedoitWolf

        cov = LedoitWolf(assume_centered=False).fit(x).covariance_
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"covariance shrinkage must be in [0, 1], got {a}")
        centred = x - mean
        sample_cov = centred.T @ centred / (len(x) - 1)
        mu = np.trace(sample_cov) / x.shape[1]
        cov = (1 - a) * sample_cov + a * mu * np.eye(x.shape[1])
    cov = cov + 1e-6 * np.eye(cov.shape[0]) * max(np.trace(cov) / cov.shape[0], 1e-12)
    precision = np.linalg.inv(cov)
    precision = 0.5 * (precision + precision.T)
    return torch.from_numpy(mean).float(), torch.from_numpy(precision).float()


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of ``x`` (..., D) to a Gaussian: sqrt((x - m)^T P (x - m)), shape (...)."""
    d = x - mean
    sq = (torch.matmul(d, precision) * d).sum(-1)
    return torch.sqrt(torch.clamp(sq, min=0.0))


# -- Lite0 pieces -----------------------------------------------------------------------------


class Lite0Trunk(nn.Module):
    """Pretrained EfficientNet-Lite0 stem + ``blocks[0..last_block]``, returning chosen stages.

    Args:
        backbone: timm model name (offline weights are installed first).
        out_blocks: indices of blocks whose outputs are returned, in increasing order.
        pretrained: load the ImageNet weights.

    ``forward(x)`` returns a list of feature maps, one per ``out_blocks`` entry (Lite0 blocks
    1 / 2 / 3 / 4 / 5 have 24 / 40 / 80 / 112 / 192 channels at strides 4 / 8 / 16 / 16 / 32).
    ``run(x, start, stop)`` runs blocks ``start..stop-1`` on an intermediate tensor (``start``
    -1 means the stem), used to cache a frozen prefix and train only the tail.
    """

    channels: list[int]

    def __init__(self, backbone: str, out_blocks: Sequence[int], pretrained: bool = True) -> None:
        super().__init__()
        import timm

        if list(out_blocks) != sorted(set(out_blocks)) or not out_blocks:
            raise ValueError(f"out_blocks must be increasing and non-empty, got {out_blocks}")
        if pretrained:
            install_offline_weights(backbone)
        net = timm.create_model(backbone, pretrained=pretrained)
        last = out_blocks[-1]
        if last >= len(net.blocks):
            raise ValueError(f"{backbone} has {len(net.blocks)} blocks, asked for block {last}")
        self.out_blocks = tuple(int(b) for b in out_blocks)
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.blocks = nn.ModuleList(net.blocks[: last + 1])
        self.channels = [_block_channels(self.blocks[b]) for b in self.out_blocks]

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks ``start .. stop - 1`` (``start = -1`` includes the stem)."""
        if start < 0:
            x = self.stem(x)
            start = 0
        for i in range(start, stop):
            x = self.blocks[i](x)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_blocks:
                feats.append(x)
        return feats


def _block_channels(stage: nn.Module) -> int:
    last = list(stage.children())[-1]
    for name in ("conv_pwl", "conv_pw"):
        conv = getattr(last, name, None)
        if isinstance(conv, nn.Conv2d):
            return int(conv.out_channels)
    raise ValueError(f"cannot infer output channels of {type(last).__name__}")


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad = False`` on every parameter and put the module in eval mode."""
    for p in module.parameters():
        p.requires_grad = False
    return module.eval()


@torch.no_grad()
def batched_features(
    fn: nn.Module | object,
    images: torch.Tensor,
    batch_size: int,
    progress: ProgressFn,
    stage: str,
) -> list[torch.Tensor]:
    """Run ``fn`` (images -> tensor or list of tensors) over ``images`` in batches; concatenate."""
    parts: list[list[torch.Tensor]] = []
    for sl in batches(len(images), batch_size):
        out = fn(images[sl])  # type: ignore[operator]
        parts.append(list(out) if isinstance(out, list | tuple) else [out])
        progress(stage, sl.stop, len(images))
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Cosine-annealed learning rate with optional linear warm-up."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class TrainingSchedule(Protocol):
    """The settings :func:`train_epochs` reads (a detector's config)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int


def train_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    n: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor | None],
    cfg: TrainingSchedule,
    progress: ProgressFn,
    name: str,
    *,
    gen: torch.Generator | None = None,
    train_mode: Callable[[], object] | None = None,
) -> None:
    """Mini-batch training of ``model`` on ``n`` samples for ``cfg.epochs``, the learning rate
    cosine-annealed from ``cfg.lr``.

    Per epoch: ``train_mode()`` (default ``model.train()``), a permutation of the samples drawn
    from ``gen`` (default: a generator seeded with ``cfg.seed``), then per batch of
    ``cfg.batch_size`` the mean loss ``batch_loss(index)`` (index (B,) into the samples; None
    skips the batch, e.g. one sample, which BatchNorm cannot take) and one optimiser step;
    ``progress`` gets the epoch's mean loss. Leaves the model in eval mode.
    """
    if gen is None:
        gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.epochs * math.ceil(n / cfg.batch_size)
    step = 0
    for epoch in range(cfg.epochs):
        (train_mode or model.train)()
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for sl in batches(n, cfg.batch_size):
            idx = order[sl]
            loss = batch_loss(idx)
            if loss is None:
                continue
            set_lr(opt, cosine_lr(step, total, cfg.lr))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
            step += 1
        progress(f"{name}: epoch (loss {running / n:.4f})", epoch + 1, cfg.epochs)
    model.eval()
