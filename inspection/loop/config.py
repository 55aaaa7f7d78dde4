"""Settings of a retraining job; the whole object is stored in the job's ``config`` column.

Defaults are what the scheduler uses. A station file does not carry these (its ``retrain`` block
only has the schedule); pass a YAML/JSON file to ``inspection retrain --settings`` to change
them. Units are stated per field; fractions are in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Gate metrics and whether larger values are better.
GATE_METRICS: dict[str, bool] = {
    "fpr_at_threshold": False,
    "fpr_at_recall": False,
    "auroc": True,
    "recall_at_threshold": True,
    "f1_at_threshold": True,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorUpdate(_Strict):
    """How the candidate's one-class detector is obtained.

    ``update``: add the operator-confirmed normals to the *root* model (the station's newest
    model that the loop did not build) in closed form — exact for PaDiM, whose fit is a
    per-position mean and covariance, and needs no old training images. ``refit``: train a new
    detector (``config`` overrides the root's settings) on the base normal images plus the
    confirmed normals. ``auto``: ``update`` when the root detector supports it, else ``refit``.
    """

    strategy: Literal["auto", "update", "refit"] = "auto"
    config: dict[str, Any] = Field(default_factory=dict)


class HoldoutConfig(_Strict):
    """The evaluation set frozen per job (seeded; the ids are recorded with the job).

    ``fraction`` of the labelled inspections (stratified: normals, each defect type) and
    ``base_normal_fraction`` of the root model's own validation normals (never fitted by either
    model) form the holdout; ``seed`` None derives the seed from the job id.
    """

    fraction: float = Field(0.3, gt=0.0, lt=1.0)
    base_normal_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    seed: int | None = None


class GateConfig(_Strict):
    """Promotion gate: the candidate is promoted only if it is not worse than the active model.

    ``metric`` on the holdout: ``fpr_at_threshold`` (the default: false-positive rate of the
    holdout normals at each model's own deployed threshold; lower is better), ``fpr_at_recall``
    (false-positive rate at the threshold that catches ``target_recall`` of the labelled
    defects), ``auroc``, ``recall_at_threshold`` or ``f1_at_threshold``. ``tolerance`` is how
    much worse, in the metric's units, the candidate may be and still be promoted.

    Whatever the metric, the candidate must also catch at least ``min_recall`` of the holdout's
    labelled defects at its deployed threshold (an absolute floor, not a comparison). Why the
    default compares false positives at the deployed thresholds and only floors recall: the
    labelled defects are mostly parts the *active* model flagged (operators label what the
    station sends them), so on them the active model's recall is 1 and its ranking near
    perfect by construction; a relative recall or rank comparison there would keep any active
    model forever. Without enough holdout items (``min_defects`` / ``min_normals``) nothing is
    promoted automatically. With no active model the candidate is promoted when
    ``promote_without_active``.
    """

    metric: Literal[
        "fpr_at_threshold", "fpr_at_recall", "auroc", "recall_at_threshold", "f1_at_threshold"
    ] = "fpr_at_threshold"
    target_recall: float = Field(0.95, gt=0.0, le=1.0)
    min_recall: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Fraction of the holdout's labelled defects the candidate must flag at its "
        "deployed threshold (0: no floor).",
    )
    tolerance: float = Field(0.0, ge=0.0)
    min_defects: int = Field(3, ge=1)
    min_normals: int = Field(5, ge=1)
    promote_without_active: bool = True


class RefinerConfig(_Strict):
    """Supervised refinement of the one-class score from labelled defects.

    ``mode``: ``patch`` (PaDiM only; :mod:`inspection.loop.patch_refiner`) — a logistic
    regression per feature-map position on PaDiM's embedding and Mahalanobis distance, trained
    on the ``top_k`` most anomalous positions of labelled defects vs every position of normal
    images, with inverse L2 strength ``c``; ``image`` (any detector;
    :mod:`inspection.loop.refiner`) — a logistic regression per image on the one-class score,
    two map statistics and ``components`` principal components of pooled backbone features,
    its strength chosen by cross-validation among ``c_grid``; ``auto``: ``patch`` for PaDiM,
    else ``image``. Either runs inside the exported graph, so stations need nothing new.

    A refiner is trained only with at least ``min_defects`` labelled defects and
    ``min_normals`` normal images; otherwise the candidate keeps the plain one-class score.
    Thresholds come from ``cv_folds``-fold out-of-fold scores. ``guard_quantile``: images whose
    one-class score is above that quantile of held-out normal scores stay anomalous whatever
    the regression says (None: off, the default — in production normals drift above held-out
    ones, see ``bench/results/loop.md``).
    """

    enabled: bool = True
    mode: Literal["auto", "patch", "image"] = "auto"
    min_defects: int = Field(10, ge=2)
    min_normals: int = Field(10, ge=2)
    top_k: int = Field(8, ge=1, le=4096)
    c: float = Field(1.0, gt=0.0)
    max_normal_patches: int = Field(400_000, ge=1000)
    components: int = Field(16, ge=0, le=256)
    c_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    cv_folds: int = Field(3, ge=2, le=20)
    guard_quantile: float | None = Field(None, gt=0.5, le=1.0)


class TyperSettings(_Strict):
    """Open-set typer trained on the crops of labelled defects (station typing step).

    Trained when at least ``min_types`` defect types have ``min_per_type`` labelled crops each;
    crops are resized to ``image_size``. ``views``: dihedral training views per crop (1..8),
    ``random_views`` extra augmented ones; ``epochs`` of the small typing head.
    ``known_accept_rate``: the operating point stored with the typer (share of known-type
    defects that keep their type; older settings call it ``quantile``). ``method``: the
    unknown score, ``knn`` by default as in :class:`inspection.openset.config.TyperConfig`
    (best on both ``mt-open`` and ``neu-open``, ``bench/results/``).
    """

    enabled: bool = True
    min_types: int = Field(2, ge=2)
    min_per_type: int = Field(3, ge=2)
    image_size: int = Field(128, ge=32, le=512)
    views: int = Field(8, ge=1, le=8)
    random_views: int = Field(2, ge=0, le=16)
    epochs: int = Field(30, ge=1, le=1000)
    method: Literal["msp", "max_logit", "energy", "mahalanobis", "metric", "knn"] = "knn"
    known_accept_rate: float = Field(0.95, gt=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _legacy_quantile(cls, data: object) -> object:
        if isinstance(data, dict) and "quantile" in data:
            data = dict(data)
            data.setdefault("known_accept_rate", data.pop("quantile"))
        return data


class RetrainSettings(_Strict):
    """Everything one retraining job needs besides the database and the station.

    ``quantile``: fraction of held-out normals that must pass the candidate's threshold;
    ``target_recall``: with enough labelled defects the threshold is lowered (never raised) until
    that fraction of them (out-of-fold) is caught. ``min_new_labels``: a job with fewer current
    labels than this ends without training (``skipped``). ``models_dir``: candidate bundles go
    to ``models_dir/<station>/job-<id>``. ``normals_dir``: a folder of normal images the root
    model was trained on (needed by ``refit`` and for the refiner's normals when the root
    bundle has no stored normal reference). ``max_runtime_h``: a job running longer is taken for
    dead (its worker crashed) and no longer blocks the station.
    """

    detector: DetectorUpdate = Field(default_factory=DetectorUpdate)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    refiner: RefinerConfig = Field(default_factory=RefinerConfig)
    typer: TyperSettings = Field(default_factory=TyperSettings)
    quantile: float = Field(0.99, gt=0.5, lt=1.0)
    target_recall: float = Field(0.95, gt=0.0, le=1.0)
    min_new_labels: int = Field(1, ge=0)
    precision: Literal["fp32", "fp16"] = "fp32"
    models_dir: Path = Path("var/models/loop")
    normals_dir: Path | None = None
    max_runtime_h: float = Field(12.0, gt=0.0)

    @model_validator(mode="after")
    def _sane(self) -> RetrainSettings:
        if self.typer.min_per_type < 2:
            raise ValueError("typer.min_per_type must be at least 2")
        return self


def load_settings(path: str | Path | None) -> RetrainSettings:
    """Settings from a YAML/JSON file (None: defaults).

    Raises:
        ConfigError: unreadable file or invalid settings.
    """
    import yaml
    from pydantic import ValidationError

    from inspection.errors import ConfigError

    if path is None:
        return RetrainSettings()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read retrain settings {path}: {exc}") from exc
    try:
        return RetrainSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid retrain settings:\n{exc}") from None
