"""Open-set defect typing: name known defect types, flag unknown ones.

Light to import (no torch): the result type and the configuration live here. Training and
export (torch) are in :mod:`inspection.openset.classifier` (:class:`OpenSetTyper`); the station
runs exported bundles with :class:`inspection.openset.typer_runtime.TypingRuntime` (OpenVINO + NumPy).
"""

from __future__ import annotations

from inspection.openset.config import (
    METHODS,
    EnergyConfig,
    FeatureConfig,
    HeadConfig,
    KnnConfig,
    MahalanobisConfig,
    MaxLogitConfig,
    MethodConfig,
    MetricConfig,
    MspConfig,
    OpenMaxConfig,
    TyperConfig,
    method_config,
)
from inspection.openset.scoring import TypingResult

__all__ = [
    "METHODS",
    "EnergyConfig",
    "FeatureConfig",
    "HeadConfig",
    "KnnConfig",
    "MahalanobisConfig",
    "MaxLogitConfig",
    "MethodConfig",
    "MetricConfig",
    "MspConfig",
    "OpenMaxConfig",
    "TyperConfig",
    "TypingResult",
    "method_config",
]
