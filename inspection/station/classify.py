"""Open-set typing for the station: adapters from typing bundles to the pipeline's callable.

The pipeline's classifier is any callable ``(crop (H, W, 3) uint8 RGB, anomaly_map (H, W)
float32) -> (label, confidence, is_unknown)`` (:data:`Classifier`), built by
:func:`load_classifier` from the station config's ``classifier.loader``;
:func:`load_typing_classifier` (the default loader) wraps an exported
:class:`inspection.openset.typer_runtime.TypingRuntime` bundle. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from inspection.errors import ConfigError, InspectionError
from inspection.station.config import StationConfig

#: ``(crop (H, W, 3) uint8 RGB, anomaly_map (H, W) float32) -> (label, confidence, is_unknown)``
Classifier = Callable[[np.ndarray, np.ndarray], tuple[str | None, float, bool]]


def load_typing_classifier(path: str | Path, known_accept_rate: float | None = None) -> Classifier:
    """A station classifier running the typing bundle at ``path`` (one crop per call).

    ``known_accept_rate``: the station's operating point (None: the bundle's), turned into a
    threshold from the bundle's out-of-fold training scores.

    The typer looks at the crop only; the anomaly map is accepted for typers that use it.
    For an unknown defect the label returned is the closest known type (the pipeline stores
    no type and marks the region unknown).
    """
    from inspection.openset.typer_runtime import TypingRuntime

    runtime = TypingRuntime(path, batch_size=1, known_accept_rate=known_accept_rate)

    def classify(crop: np.ndarray, anomaly_map: np.ndarray) -> tuple[str | None, float, bool]:
        result = runtime.predict(crop[None])[0]
        return result.label, float(result.confidence), bool(result.is_unknown)

    return classify


def load_classifier(config: StationConfig) -> Classifier:
    """The open-set typing callable named by ``config.classifier`` (``module:function(path)``).

    Raises:
        ConfigError: the loader cannot be imported or fails.
    """
    import importlib

    cc = config.classifier
    assert cc is not None
    module_name, _, attr = cc.loader.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"station {config.id}: classifier loader {cc.loader!r} is not available: {exc}"
        ) from exc
    kwargs = {} if cc.known_accept_rate is None else {"known_accept_rate": cc.known_accept_rate}
    try:
        classifier: Classifier = factory(cc.path, **kwargs)
    except InspectionError:
        raise
    except Exception as exc:
        raise ConfigError(f"station {config.id}: cannot load classifier {cc.path}: {exc}") from exc
    return classifier
