"""The detector contract every registered detector implements.

A detector is two parts, as in anomalib: an exportable ``torch_model`` (an ``nn.Module`` whose
eval-mode forward takes a normalised batch ``(N, 3, H, W)`` and returns anomalib's
:class:`~anomalib.data.InferenceBatch` with ``pred_score`` (N,) and ``anomaly_map`` (N, 1, H, W))
and a thin training wrapper (:class:`Detector`) that knows how to fit it on normal images.

Everything else — batching, input normalisation, save/load, the deployable graph that OpenVINO
runs on the station — is shared here, so one engine trains, evaluates and exports every detector.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from inspection.backbone import LITE0_MEAN, LITE0_STD
from inspection.detectors.augment import AugmentKind, ImageAugment, augment_batch, build_augment
from inspection.errors import ModelFileError, NotFittedError

logger = logging.getLogger(__name__)

#: Callback for long work: (stage, done, total). ``total`` 0 means unknown.
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """Default progress callback: say nothing."""


class DetectorOutput(NamedTuple):
    """Raw (un-normalised) detector output for a batch.

    Attributes:
        score: (N,) float32 image anomaly score, higher = more anomalous.
        anomaly_map: (N, 1, H, W) float32 per-pixel anomaly at input resolution.
    """

    score: np.ndarray
    anomaly_map: np.ndarray


class DetectorConfig(BaseModel):
    """Settings every detector shares. Subclasses add their own fields and a ``type`` literal."""

    model_config = ConfigDict(extra="forbid")

    type: str
    image_size: int = Field(256, ge=32, le=1024, description="Square input side in pixels.")
    batch_size: int = Field(16, ge=1, le=256)
    seed: int = 0
    backbone: str = "tf_efficientnet_lite0"
    mean: tuple[float, float, float] = LITE0_MEAN
    std: tuple[float, float, float] = LITE0_STD
    photometric: Literal["auto", "none", "standardize"] = Field(
        "auto",
        description="Per-image brightness/contrast standardisation before the backbone "
        "normalisation: 'standardize' (each image to mean 0.5, std 0.2: removes exposure and "
        "gain drift), 'none', or 'auto' (decided at fit from the normal images alone: "
        "standardise when their mean brightness varies by more than EXPOSURE_CV_LIMIT).",
    )


class TrainedDetectorConfig(DetectorConfig):
    """Settings of the detectors trained by gradient descent over normal images.

    ``augment`` (:mod:`inspection.detectors.augment`): ``nuisance`` shows the network small,
    layout-preserving placement, lighting and sensor variation while it trains; ``none`` trains
    on the images as they are.
    """

    augment: AugmentKind = Field(
        "nuisance",
        description="Training-time augmentation of the normal images: 'nuisance' (small shift, "
        "rotation, gamma, noise, blur; see inspection.detectors.augment) or 'none'.",
    )


#: ``photometric: auto`` standardises when the per-image mean brightness of the normal training
#: images varies by more than this coefficient of variation (std / mean): exposure drift the
#: model would otherwise have to learn as "normal", and fail on when it drifts further.
EXPOSURE_CV_LIMIT = 0.1
#: Target of per-image standardisation (inputs in [0, 1]).
STANDARD_MEAN, STANDARD_STD = 0.5, 0.2


def exposure_cv(images: np.ndarray) -> float:
    """Coefficient of variation of per-image mean brightness of (N, H, W, 3) uint8 images."""
    means = images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)
    return float(means.std() / max(means.mean(), 1e-9))


class Normalize(nn.Module):
    """Input normalisation on (N, 3, H, W) in [0, 1]; travels inside the exported graph.

    With ``standardize``, each image is first brought to mean 0.5 and standard deviation 0.2
    over all its pixels and channels (exposure and gain drop out); then ``(x - mean) / std``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: tuple[float, ...], std: tuple[float, ...], standardize: bool = False
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.standardize = standardize

    @classmethod
    def for_config(cls, config: DetectorConfig) -> Normalize:
        """The normalisation ``config`` asks for (``auto`` not yet resolved by a fit: none)."""
        return cls(config.mean, config.std, config.photometric == "standardize")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = torch.sqrt(((x - m) ** 2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
            x = (x - m) / sd * STANDARD_STD + STANDARD_MEAN
        return (x - self.mean) / self.std


#: Score mode shared by map-based detectors: the maximum of the anomaly map after standardising
#: every position by the normal training images' maps there (:class:`PositionStats`).
STANDARDIZED_MAX = "map_max_std"
#: Score modes of the reconstruction detectors (Mem-AE, OC-GAN): the mean reconstruction error
#: (the papers' score), the map's maximum, and the standardised maximum.
RECONSTRUCTION_SCORE_MODES: tuple[str, ...] = ("mean", "map_max", STANDARDIZED_MAX)


def model_score_mode(mode: str) -> str:
    """The score mode the torch model itself runs (``map_max_std`` standardises its map)."""
    return "map_max" if mode == STANDARDIZED_MAX else mode


class PositionStats(nn.Module):
    """Per-position normal statistics of the anomaly map, applied inside the exported graph.

    A reconstruction or distillation error map is high at some positions on every normal part
    (edges, borders, fine texture the model never reproduces), which hides a defect elsewhere
    whose error is smaller in absolute terms. Standardising each position by the mean and
    standard deviation of the normal training images' maps there (as PaDiM models each patch
    position) removes that fixed pattern. Not in the detectors' papers; a score mode the engine
    may choose on synthetic defects like the others.

    Attributes:
        mean: (1, 1, H, W) mean map of the normal training images.
        inv_std: (1, 1, H, W) 1 / their standard deviation (floored at 1e-3 of its mean).
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        floor = 1e-3 * float(std.mean()) + 1e-12
        self.register_buffer("mean", mean.reshape(1, 1, *mean.shape[-2:]).float())
        self.register_buffer(
            "inv_std", 1.0 / std.reshape(1, 1, *std.shape[-2:]).float().clamp_min(floor)
        )

    @classmethod
    def of_maps(cls, maps: np.ndarray) -> PositionStats:
        """Statistics of normal maps (N, 1, H, W)."""
        m = torch.from_numpy(maps.astype(np.float64))
        return cls(m.mean(dim=0), m.std(dim=0))

    def forward(self, anomaly_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) raw map -> (score (N,) = max of the standardised map, that map)."""
        amap = (anomaly_map - self.mean) * self.inv_std
        return amap.amax(dim=(1, 2, 3)), amap


class DeployableModel(nn.Module):
    """What the station runs: raw [0, 1] RGB in, (score (N,), anomaly_map (N, 1, H, W)) out.

    Input normalisation (and, for ``map_max_std``, the map standardisation) lives in the graph,
    so the exported file is self-contained.
    """

    def __init__(
        self,
        torch_model: nn.Module,
        normalize: Normalize,
        map_stats: PositionStats | None = None,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.model = torch_model
        self.map_stats = map_stats

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(self.normalize(image))
        if self.map_stats is not None:
            return self.map_stats(out.anomaly_map)
        return out.pred_score.reshape(-1), out.anomaly_map


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected (N, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}"
        )
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def load_state_resizing_buffers(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that first resizes buffers fitted after construction.

    Closed-form fits (PaDiM's Gaussian, CutPaste's density) fill buffers whose shape is only
    known after ``fit``; a freshly built module holds empty placeholders for them.
    """
    buffers = dict(module.named_buffers())
    for name, value in state.items():
        if name in buffers and buffers[name].shape != value.shape:
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            owner.register_buffer(attr, torch.empty_like(value))
    module.load_state_dict(state)


class Detector(ABC):
    """Training wrapper around an exportable ``torch_model``.

    Subclasses set ``key`` and ``Config`` and implement :meth:`build_model` and :meth:`fit_model`.
    ``fit`` takes normal images only.
    """

    key: ClassVar[str]
    Config: ClassVar[type[DetectorConfig]]
    #: Paper the implementation follows (shown in docs and bench reports).
    paper: ClassVar[str] = ""
    #: Torch-vs-OpenVINO parity tolerance, relative to the map's value range (FP32 export).
    export_rtol: ClassVar[float] = 1e-3
    export_atol: ClassVar[float] = 1e-4
    #: Image-score reductions the detector offers, the paper's first. With two or more, a
    #: ``score_mode`` config field may say ``"auto"``: :func:`inspection.training.train` then picks
    #: one on synthetic defects painted onto the validation normals (:mod:`inspection.validation`).
    score_modes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def quick_config(cls) -> DetectorConfig:
        """Tiny, fast settings for contract tests and ``--quick`` benchmarks (64 px)."""
        return cls.Config(type=cls.key, image_size=64)

    #: Set by :func:`inspection.training.train` before fitting when a validation set exists:
    #: scores the model as it stands on synthetic defects painted onto held-out normals
    #: (:func:`inspection.validation.make_validator`), for detectors that pick their epoch.
    validator: Callable[[], dict[str, float]] | None = None
    #: What epoch selection did during the last fit (None: it did not run).
    epoch_selection: dict[str, Any] | None = None

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else self.Config(type=self.key)
        if not isinstance(cfg, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs {self.Config.__name__}, got {type(cfg).__name__}"
            )
        self.config = cfg
        torch.manual_seed(cfg.seed)
        self.torch_model: nn.Module = self.build_model()
        self.normalize = Normalize.for_config(cfg)
        #: Normal map statistics, fitted for detectors offering ``map_max_std``.
        self.map_stats: PositionStats | None = None
        self.fitted = False
        self._train_raw: np.ndarray | None = None
        self._train_augment: ImageAugment | None = None

    # -- subclass hooks ---------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the (untrained) exportable network for ``self.config``."""

    @abstractmethod
    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        """Fit ``self.torch_model`` on normalised normal images (N, 3, H, W)."""

    # -- shared behaviour -------------------------------------------------------------------
    def _prepare(self, images: np.ndarray) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[1:3] != (size, size):
            raise ValueError(
                f"{self.key}: expected images of {size}x{size}, got {images.shape[1:3]}"
            )
        return self.normalize(images_to_tensor(images))

    def fit(self, images: np.ndarray, progress: ProgressFn = no_progress) -> None:
        """Fit on normal images (N, H, W, 3) uint8 RGB at ``config.image_size``."""
        if len(images) == 0:
            raise ValueError(f"{self.key}: cannot fit on zero images")
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)
        if self.config.photometric == "auto":
            self._resolve_photometric(images)
        self._train_raw = images
        self._train_augment = build_augment(
            getattr(self.config, "augment", "none"), self.config.seed
        )
        self.map_stats = None
        try:
            self.fit_model(self._prepare(images), progress)
        finally:
            self._train_raw, self._train_augment = None, None
        self.torch_model.eval()
        if STANDARDIZED_MAX in self.score_modes:
            self.map_stats = PositionStats.of_maps(self.predict_unchecked(images).anomaly_map)
        self.fitted = True

    @property
    def _standardizing(self) -> bool:
        return (
            self.map_stats is not None
            and getattr(self.config, "score_mode", None) == STANDARDIZED_MAX
        )

    def training_batch(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The normalised training batch ``images[index]`` (B, 3, H, W), augmented if configured.

        For use inside :meth:`fit_model`: ``images`` is the normalised tensor it was given,
        ``index`` (B,) positions in it. With ``augment: nuisance`` the batch is re-made from
        the raw images, augmented afresh (so every epoch sees other variations), then
        normalised like any input; otherwise it is the plain slice.
        """
        if self._train_augment is None or self._train_raw is None:
            return images[index]
        raw = self._train_raw[index.cpu().numpy()]
        return self._prepare(augment_batch(self._train_augment, raw))

    @property
    def training_images(self) -> np.ndarray | None:
        """Inside :meth:`fit`: the raw (N, H, W, 3) uint8 images being fitted; else None.

        For training steps that must start from the camera image (e.g. CutPaste's pastes),
        not from the normalised tensor.
        """
        return self._train_raw

    @property
    def augmenting(self) -> bool:
        """True inside :meth:`fit` when training batches are augmented."""
        return self._train_augment is not None

    def predict(self, images: np.ndarray, progress: ProgressFn = no_progress) -> DetectorOutput:
        """Raw scores (N,) and anomaly maps (N, 1, H, W) for (N, H, W, 3) uint8 images."""
        if not self.fitted:
            raise NotFittedError(f"{self.key}: call fit() or load() before predict()")
        return self.predict_unchecked(images, progress)

    def _resolve_photometric(self, images: np.ndarray) -> None:
        """Decide ``photometric: auto`` from the normal training images' brightness spread."""
        cv = exposure_cv(images)
        chosen = "standardize" if cv > EXPOSURE_CV_LIMIT else "none"
        self.config = self.config.model_copy(update={"photometric": chosen})
        self.normalize = Normalize.for_config(self.config)
        logger.info(
            "%s: photometric %s (brightness varies by %.1f %% across %d normal images; limit %.0f %%)",
            self.key,
            chosen,
            100 * cv,
            len(images),
            100 * EXPOSURE_CV_LIMIT,
        )

    @torch.no_grad()
    def predict_unchecked(
        self, images: np.ndarray, progress: ProgressFn = no_progress
    ) -> DetectorOutput:
        """:meth:`predict` without the fitted check: for validation between training epochs.

        Leaves the model in eval mode; a training loop puts it back with ``train()``.
        """
        self.torch_model.eval()
        scores: list[np.ndarray] = []
        maps: list[np.ndarray] = []
        stats = self.map_stats if self._standardizing else None
        for k, sl in enumerate(batches(len(images), self.config.batch_size)):
            out = self.torch_model(self._prepare(images[sl]))
            score, amap = (
                stats(out.anomaly_map) if stats is not None else (out.pred_score, out.anomaly_map)
            )
            scores.append(score.reshape(-1).float().numpy())
            maps.append(amap.float().numpy())
            progress("predict", min(sl.stop, len(images)), len(images))
            del k
        return DetectorOutput(np.concatenate(scores), np.concatenate(maps))

    def deployable(self) -> DeployableModel:
        """The graph the station runs (normalisation included), in eval mode."""
        if not self.fitted:
            raise NotFittedError(f"{self.key}: nothing to export before fit() or load()")
        stats = self.map_stats if self._standardizing else None
        return DeployableModel(self.torch_model, Normalize.for_config(self.config), stats).eval()

    def set_score_mode(self, mode: str) -> None:
        """Switch the image-score reduction of the model (no refit); recorded in the config."""
        if mode not in self.score_modes:
            raise ValueError(
                f"{self.key}: unknown score mode {mode!r}; expected one of {self.score_modes}"
            )
        if mode == STANDARDIZED_MAX and self.map_stats is None:
            raise NotFittedError(f"{self.key}: {mode} needs the normal map statistics of a fit")
        self.torch_model.score_mode = model_score_mode(mode)  # type: ignore[assignment]
        self.config = self.config.model_copy(update={"score_mode": mode})

    def built_score_mode(self) -> str:
        """The score mode a new torch model is built with, as the model runs it: the configured
        one, or the paper's (the first of ``score_modes``) while ``auto`` waits for the engine."""
        mode = getattr(self.config, "score_mode", "auto")
        return model_score_mode(self.score_modes[0] if mode == "auto" else mode)

    @property
    def score_mode_pending(self) -> bool:
        """True while ``config.score_mode`` is ``"auto"`` (the engine has not chosen yet)."""
        return getattr(self.config, "score_mode", None) == "auto"

    # -- persistence ------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state a subclass must persist (override when needed)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`extra_state` returned."""

    @classmethod
    def saved_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config read from ``detector.json``, with whatever a detector whose defaults
        changed since it was saved needs to behave as it did then (default: as it is)."""
        return config

    def save(self, directory: str | Path) -> Path:
        """Write ``detector.json`` (key + config) and ``weights.pt`` to ``directory``."""
        if not self.fitted:
            raise NotFittedError(f"{self.key}: nothing to save before fit()")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"key": self.key, "config": self.config.model_dump(mode="json")}
        (out / "detector.json").write_text(json.dumps(meta, indent=2))
        state: dict[str, Any] = {
            "model": self.torch_model.state_dict(),
            "extra": self.extra_state(),
        }
        if self.map_stats is not None:
            state["map_stats"] = self.map_stats.state_dict()
        torch.save(state, out / "weights.pt")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Detector:
        """Rebuild a saved detector; raises :class:`ModelFileError` on a mismatching file."""
        path = Path(directory)
        try:
            meta = json.loads((path / "detector.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"cannot read detector metadata in {path}: {exc}") from exc
        if meta.get("key") != cls.key:
            raise ModelFileError(f"{path} holds a {meta.get('key')!r} detector, not {cls.key!r}")
        detector = cls(cls.Config.model_validate(cls.saved_config(meta["config"])))
        try:
            state = torch.load(path / "weights.pt", map_location="cpu", weights_only=False)
            load_state_resizing_buffers(detector.torch_model, state["model"])
            detector.load_extra_state(state.get("extra", {}))
            if "map_stats" in state:
                stats = state["map_stats"]
                detector.map_stats = PositionStats(stats["mean"], 1.0 / stats["inv_std"])
                detector.map_stats.load_state_dict(stats)
        except (OSError, RuntimeError, KeyError, EOFError) as exc:
            raise ModelFileError(
                f"weights in {path} do not match a {cls.key} detector: {exc}"
            ) from exc
        if getattr(detector.config, "score_mode", None) == STANDARDIZED_MAX and (
            detector.map_stats is None
        ):
            raise ModelFileError(f"{path}: score mode {STANDARDIZED_MAX} without map statistics")
        detector.torch_model.eval()
        detector.fitted = True
        return detector
