"""Station-side defect typing with the typer that travels in a model bundle (no torch).

A bundle built by the loop may hold ``typing/`` (an :class:`~inspection.openset.typer_runtime.
TypingRuntime` bundle: OpenVINO graph + NumPy scorer) trained on the crops operators labelled.
Two ways for a station to use it, both giving the pipeline's ``Classifier`` callable
``(crop (H, W, 3) uint8, anomaly_map (H, W) float32) -> (label, confidence, is_unknown)``:

* :func:`load_station_classifier` — for the station config's ``classifier`` block
  (``loader: inspection.loop.station_typing:load_station_classifier``, ``path``: a typing bundle
  or a model bundle with ``typing/``);
* :class:`ActiveModelClassifier` — follows the station's *active model version* in the
  database: it re-reads which version is active every ``poll_s`` seconds and switches to that
  bundle's typer, so a promotion or rollback changes typing together with the detector. Pass
  it as ``Station(..., classifier=ActiveModelClassifier(...))``. A bundle without a typer types
  nothing (label None, not unknown): the region is stored untyped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from inspection.errors import ModelFileError

logger = logging.getLogger(__name__)

TYPING_DIR = "typing"

#: ``(crop, anomaly_map) -> (label, confidence, is_unknown)``, as the station pipeline expects.
StationClassifier = Callable[[np.ndarray, np.ndarray], tuple[str | None, float, bool]]


def typing_dir(path: str | Path) -> Path | None:
    """The typing bundle for ``path`` (itself, or its ``typing/``); None when there is none."""
    p = Path(path)
    if (p / "runtime.json").is_file():
        return p
    if (p / TYPING_DIR / "runtime.json").is_file():
        return p / TYPING_DIR
    return None


class BundleClassifier:
    """Types crops with one typing bundle (:class:`~inspection.openset.typer_runtime.TypingRuntime`)."""

    def __init__(
        self, directory: str | Path, device: str = "CPU", known_accept_rate: float | None = None
    ) -> None:
        from inspection.openset.typer_runtime import TypingRuntime

        self.directory = Path(directory)
        self.runtime = TypingRuntime(
            self.directory, device=device, batch_size=1, known_accept_rate=known_accept_rate
        )

    @property
    def classes(self) -> list[str]:
        """Defect types the typer knows."""
        return list(self.runtime.classes)

    def __call__(self, crop: np.ndarray, anomaly_map: np.ndarray) -> tuple[str | None, float, bool]:
        result = self.runtime.predict(crop[None])[0]
        return result.label, float(result.confidence), bool(result.is_unknown)


def load_station_classifier(
    path: str | Path, known_accept_rate: float | None = None
) -> StationClassifier:
    """Station ``classifier.loader`` entry: the typer of a typing or model bundle at ``path``,
    at the station's operating point ``known_accept_rate`` (None: the bundle's).

    Raises:
        ModelFileError: ``path`` holds no typing bundle.
    """
    found = typing_dir(path)
    if found is None:
        raise ModelFileError(f"no typing bundle at {path} (expected runtime.json or typing/)")
    return BundleClassifier(found, known_accept_rate=known_accept_rate)


def _no_typing(crop: np.ndarray, anomaly_map: np.ndarray) -> tuple[str | None, float, bool]:
    return None, 0.0, False


class ActiveModelClassifier:
    """Types crops with the typer of the station's active model version, following changes.

    Args:
        session_factory: database sessions.
        station_id: the station's database id.
        poll_s: how often (seconds) the active version is re-read; the check happens inside a
            call, so the first frame after a promotion pays for loading the new typer.
        loader: typing bundle folder -> classifier (default: :class:`BundleClassifier`).
        clock: monotonic clock (tests).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        station_id: int,
        *,
        poll_s: float = 5.0,
        loader: Callable[[Path], StationClassifier] = BundleClassifier,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_factory = session_factory
        self.station_id = station_id
        self.poll_s = poll_s
        self.loader = loader
        self.clock = clock
        self.version_id: int | None = None
        self.bundle: Path | None = None
        self._classifier: StationClassifier = _no_typing
        self._next_check = -float("inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Re-read the active version now and load its typer when it changed."""
        from inspection.db import repo

        with self.session_factory() as session:
            active = repo.get_active_model(session, self.station_id)
            version_id = active.id if active is not None else None
            path = active.artifact_path if active is not None else None
        if version_id == self.version_id:
            return
        classifier: StationClassifier = _no_typing
        found = typing_dir(path) if path else None
        if found is not None:
            classifier = self.loader(found)
        self._classifier = classifier
        self.version_id = version_id
        self.bundle = found
        logger.info(
            "station %s: typing follows model version %s (%s)",
            self.station_id,
            version_id,
            found or "no typer",
        )

    def __call__(self, crop: np.ndarray, anomaly_map: np.ndarray) -> tuple[str | None, float, bool]:
        now = self.clock()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + self.poll_s
                    try:
                        self.refresh()
                    except Exception as exc:  # keep typing with the last typer
                        logger.warning("station %s: typer refresh failed: %s", self.station_id, exc)
        return self._classifier(crop, anomaly_map)
