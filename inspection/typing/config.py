"""Configuration of the open-set defect typer: features, head, scoring method, calibration.

One :class:`TyperConfig` fully describes a typer. The scoring method is a discriminated union on
``method``, so a YAML/JSON config selects it with ``method: {method: energy, temperature: 1}``.
Every method scores from the same trained network (frozen backbone features, a two-head MLP):

* ``msp`` — maximum softmax probability (Hendrycks & Gimpel, ICLR 2017), the baseline.
* ``max_logit`` — maximum logit (Vaze et al., "Open-Set Recognition: a Good Closed-Set Classifier
  is All You Need", ICLR 2022).
* ``energy`` — free energy ``-T logsumexp(logits / T)`` (Liu et al., NeurIPS 2020).
* ``mahalanobis`` — class-conditional Gaussians with a tied, shrunk covariance on backbone
  features (Lee et al., NeurIPS 2018; on pretrained features as in MOOD, Li et al., CVPR 2023).
* ``metric`` — nearest class mean in a metric embedding trained with a prototype + centre loss,
  rejection by distance (Masana et al., BMVC 2018, two-head variant; Wen et al., ECCV 2016).
* ``openmax`` — Weibull models of distances to mean activation vectors (Bendale & Boult,
  CVPR 2016), fitted with ``scipy.stats.weibull_min``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

METHODS: tuple[str, ...] = ("msp", "max_logit", "energy", "mahalanobis", "metric", "openmax")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureConfig(_Strict):
    """Frozen ImageNet backbone -> pooled image descriptor.

    The whole image (the typer's input) is resized to ``image_size`` and passed through the
    backbone; the last feature map (1280 channels for Lite0, stride 32) is pooled.
    """

    backbone: str = "tf_efficientnet_lite0"
    image_size: int = Field(256, ge=32, le=1024, description="Square input side in pixels.")
    pooling: Literal["avg", "max", "avgmax"] = Field(
        "avgmax",
        description="avg: global average; max: global max (keeps tiny defects); avgmax: both.",
    )
    dihedral_views: int = Field(
        8, ge=1, le=8, description="Training views from flips / 90 degree rotations (1 = none)."
    )
    random_views: int = Field(
        4, ge=0, le=64, description="Extra training views from random albumentations transforms."
    )
    backend: Literal["openvino", "torch"] = Field(
        "openvino", description="Engine that runs the frozen backbone (same numbers, OV faster)."
    )
    batch_size: int = Field(16, ge=1, le=256)


class HeadConfig(_Strict):
    """Two-head MLP trained on frozen features (Masana et al., BMVC 2018, two-head variant).

    Shared trunk ``D -> hidden``; a classification head ``hidden -> C`` trained with
    cross-entropy, and a metric head ``hidden -> embed_dim`` trained with a distance-based
    (prototype) cross-entropy plus a centre loss (Wen et al., ECCV 2016).
    """

    hidden: int = Field(256, ge=8, le=4096)
    embed_dim: int = Field(32, ge=2, le=1024)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    input_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    centre_weight: float = Field(0.05, ge=0.0, description="Weight of the centre loss.")
    balanced: bool = Field(True, description="Weight classes by inverse frequency in the losses.")


class MspConfig(_Strict):
    """Maximum softmax probability; unknown score = 1 - max softmax."""

    method: Literal["msp"] = "msp"


class MaxLogitConfig(_Strict):
    """Maximum logit (Vaze et al., ICLR 2022); unknown score = -max logit."""

    method: Literal["max_logit"] = "max_logit"


class EnergyConfig(_Strict):
    """Free energy (Liu et al., NeurIPS 2020); unknown score = -T logsumexp(logits / T)."""

    method: Literal["energy"] = "energy"
    temperature: float = Field(1.0, gt=0.0)


class MahalanobisConfig(_Strict):
    """Tied-covariance Gaussian class model (Lee et al., NeurIPS 2018); score = min distance².

    ``space`` picks the vectors: frozen backbone features (MOOD-style) or the metric embedding.
    ``shrinkage`` None = Ledoit-Wolf; a number in [0, 1] = fixed shrinkage towards scaled I.
    """

    method: Literal["mahalanobis"] = "mahalanobis"
    space: Literal["backbone", "embedding"] = "backbone"
    shrinkage: float | None = Field(None, ge=0.0, le=1.0)
    max_samples: int = Field(
        1024, ge=8, description="At most this many training vectors estimate the covariance."
    )


class MetricConfig(_Strict):
    """Nearest class mean in the metric embedding; unknown score = distance to nearest mean."""

    method: Literal["metric"] = "metric"
    temperature: float = Field(
        1.0, gt=0.0, description="Confidence = softmax(-d² / temperature) over class means."
    )


class OpenMaxConfig(_Strict):
    """OpenMax (Bendale & Boult, CVPR 2016) on logits as activation vectors.

    ``tail_size`` largest training distances per class fit a Weibull; the ``alpha`` top-ranked
    classes are recalibrated. Distance ``eucos`` = euclidean / 200 + cosine, as in the paper.
    """

    method: Literal["openmax"] = "openmax"
    tail_size: int = Field(20, ge=3, le=10_000)
    alpha: int = Field(2, ge=1, le=1000)
    distance: Literal["euclidean", "cosine", "eucos"] = "eucos"


MethodConfig = Annotated[
    MspConfig | MaxLogitConfig | EnergyConfig | MahalanobisConfig | MetricConfig | OpenMaxConfig,
    Field(discriminator="method"),
]


def method_config(name: str) -> MethodConfig:
    """Default config of method ``name`` (one of :data:`METHODS`)."""
    table: dict[str, type[_Strict]] = {
        "msp": MspConfig,
        "max_logit": MaxLogitConfig,
        "energy": EnergyConfig,
        "mahalanobis": MahalanobisConfig,
        "metric": MetricConfig,
        "openmax": OpenMaxConfig,
    }
    if name not in table:
        from inspection.errors import ConfigError

        raise ConfigError(f"unknown typing method {name!r}; expected one of {METHODS}")
    return table[name]()  # type: ignore[return-value]


class TyperConfig(_Strict):
    """Everything that defines an open-set typer.

    The unknown threshold is the ``quantile`` of *known* unknown-scores measured out-of-fold on
    the training images (``calibration_folds``-fold cross-fitting, grouped by source image), so
    about ``1 - quantile`` of known defects are rejected; test data never sets it.
    """

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    method: MethodConfig = Field(
        default_factory=MetricConfig,
        description="Default metric: best unknown AUROC on mt-open (bench/results/mt-open.md) "
        "and it can add a class without retraining.",
    )
    quantile: float = Field(0.95, gt=0.0, lt=1.0)
    calibration_folds: int = Field(5, ge=2, le=20)
    seed: int = 0
