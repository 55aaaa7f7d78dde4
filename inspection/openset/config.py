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
* ``knn`` — deep nearest neighbours: distance of the L2-normalised feature to its k-th nearest
  training feature of the known types (Sun, Ming, Zhu, Li, "Out-of-Distribution Detection with
  Deep Nearest Neighbors", ICML 2022).

The unknown threshold is an *operating point* (:attr:`TyperConfig.known_accept_rate`): the
share of known-type defects the plant accepts being called unknown, turned into a threshold on
out-of-fold scores of the training images only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METHODS: tuple[str, ...] = (
    "msp",
    "max_logit",
    "energy",
    "mahalanobis",
    "metric",
    "openmax",
    "knn",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureConfig(_Strict):
    """Frozen ImageNet backbone -> pooled image descriptor.

    The whole image (the typer's input) is resized to ``image_size`` and passed through the
    backbone; the feature maps named in ``levels`` (default: Lite0's last three stages, 112,
    192 and 320 channels at strides 16, 32, 32) are each pooled and concatenated in that order
    (multi-scale pooling: the stages keep texture and small-defect detail that the ImageNet
    1280-channel head abstracts away).
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
    levels: tuple[Literal["blocks.4", "blocks.5", "blocks.6", "head"], ...] = Field(
        ("blocks.4", "blocks.5", "blocks.6"),
        min_length=1,
        description="Feature maps pooled and concatenated: Lite0 stage outputs blocks.4 (112 ch, "
        "stride 16), blocks.5 (192, 32), blocks.6 (320, 32) and the 1280-channel head. Default: "
        "the three stages (1248-d avg+max); nested leave-one-known-type-out validation on the "
        "training images of mt-open and neu-open preferred them to the head, alone or added "
        "(bench/explore/openset_select.py).",
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


class KnnConfig(_Strict):
    """Deep k-NN (Sun et al., ICML 2022): unknown score = distance of the L2-normalised vector
    to its ``k``-th nearest L2-normalised training vector (all known types, all training views).

    ``space``: frozen backbone features or the metric embedding. ``standardise``: scale each
    backbone dimension by the training statistics before normalising (off by default, as in
    the paper; nested validation on the training images of both protocols preferred it off).
    ``max_bank``: at most this many training vectors are kept (seeded subsample), which bounds
    the bundle size and the station's cost (one (1, D) x (D, M) product per image).
    """

    method: Literal["knn"] = "knn"
    space: Literal["backbone", "embedding"] = "backbone"
    k: int = Field(1, ge=1, le=1000)
    standardise: bool = False
    max_bank: int = Field(16384, ge=16, le=1_000_000)


MethodConfig = Annotated[
    MspConfig
    | MaxLogitConfig
    | EnergyConfig
    | MahalanobisConfig
    | MetricConfig
    | OpenMaxConfig
    | KnnConfig,
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
        "knn": KnnConfig,
    }
    if name not in table:
        from inspection.errors import ConfigError

        raise ConfigError(f"unknown typing method {name!r}; expected one of {METHODS}")
    return table[name]()  # type: ignore[return-value]


class TyperConfig(_Strict):
    """Everything that defines an open-set typer.

    Operating point: ``known_accept_rate`` is the share of known-type defects that should keep
    their type (default 0.95: 5 % of known defects may be called unknown). The unknown
    threshold is that quantile of *known* unknown-scores measured out-of-fold on the training
    images (``calibration_folds``-fold cross-fitting, stratified by type); test data never sets
    it. The rate an operator then sees on known defects is measured the same way and stored
    with the bundle. (Configs written before this setting name it ``quantile``; they load.)
    """

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    method: MethodConfig = Field(
        default_factory=KnnConfig,
        description="Default knn: best unknown AUROC in nested validation on the training images "
        "of both mt-open and neu-open (bench/explore/openset_select.py). Use metric or "
        "mahalanobis to add a class without retraining.",
    )
    known_accept_rate: float = Field(
        0.95,
        gt=0.0,
        lt=1.0,
        description="Share of known-type defects that should keep their type; 1 - this share "
        "may be called unknown. Sets the unknown threshold from training data only.",
    )
    calibration_folds: int = Field(5, ge=2, le=20)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _legacy_quantile(cls, data: object) -> object:
        """Bundles written before the operating point was named store it as ``quantile``."""
        if isinstance(data, dict) and "quantile" in data:
            data = dict(data)
            legacy = data.pop("quantile")
            data.setdefault("known_accept_rate", legacy)
        return data
