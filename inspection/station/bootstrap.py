"""First models for stations that have none: train on the synthetic line, export, register.

This module imports torch (through :mod:`inspection.training`), so stations never import it: the
runner calls :func:`run_bootstrap_subprocess`, which runs ``python -m inspection.station.bootstrap``
with the station config as JSON on stdin and the database URL in the environment (never on the
command line, where other users could read it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from inspection.errors import ConfigError, InspectionError
from inspection.station.config import StationConfig

logger = logging.getLogger(__name__)

#: Training parts are rendered from this index on, so they never appear in the camera's stream.
TRAIN_INDEX_OFFSET = 1_000_000


def default_bundle_dir(config: StationConfig) -> Path:
    """Where a bootstrapped model goes when ``detector.path`` is not set."""
    return config.detector.path or Path("var/models") / config.line / config.id


def needs_bootstrap(config: StationConfig, session_factory: sessionmaker[Session]) -> bool:
    """True when the station has ``detector.bootstrap`` and no model to run yet."""
    det = config.detector
    if det.bootstrap is None:
        return False
    if det.source == "bundle":
        return not (default_bundle_dir(config) / "model.json").is_file()
    from inspection.db import repo

    with session_factory() as session:
        try:
            station = repo.get_station_by_name(session, config.id)
        except InspectionError:
            return True
        return repo.get_active_model(session, station.id) is None


#: Prefix of the progress lines the bootstrap subprocess writes to stderr for its parent.
PROGRESS_PREFIX = "bootstrap-progress "
#: Prefix of the line the bootstrap subprocess writes to stderr when one station's model is
#: trained and registered (its result as JSON), so that station can start scoring at once.
READY_PREFIX = "bootstrap-ready "


class _ProgressLines:
    """A training progress callback writing a line to stderr per stage, at most every 2 s."""

    def __init__(self, station: str, every_s: float = 2.0) -> None:
        self.station = station
        self.every_s = every_s
        self._stage = ""
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self._stage and done < total and now - self._last < self.every_s:
            return
        self._stage, self._last = stage, now
        _tell_parent(
            PROGRESS_PREFIX, {"station": self.station, "stage": stage, "done": done, "total": total}
        )


def _tell_parent(prefix: str, payload: dict[str, Any]) -> None:
    """One line for the parent process on stderr: ``prefix`` and ``payload`` as JSON."""
    sys.stderr.write(f"{prefix}{json.dumps(payload)}\n")
    sys.stderr.flush()


def train_bundle(
    config: StationConfig, out: Path, progress: Callable[[str, int, int], None] | None = None
) -> Path:
    """Train ``detector.bootstrap`` on good parts of the station's synthetic line; export.

    The fit (:func:`inspection.geometry.choose_fit`) is chosen from the shape of the region the
    station scores (the frame or its region of interest) and recorded in the bundle.
    """
    from inspection import training
    from inspection.data.imageset import from_samples
    from inspection.data.synthetic import SyntheticLine
    from inspection.detectors import registry
    from inspection.geometry import choose_fit, roi_shape
    from inspection.runtime import preprocess_box

    cam = config.camera
    spec = config.detector.bootstrap
    if cam.type != "synthetic" or spec is None:
        raise ConfigError(f"station {config.id}: bootstrap needs a synthetic camera")
    size = spec.image_size or config.resize or cam.size
    candidates = training.auto_candidates(size) if spec.detector == "auto" else None
    load_size = max(c.image_size for c in candidates) if candidates else size
    line = SyntheticLine(family=cam.family, size=cam.size, seed=cam.seed)
    samples = line.normals(spec.normals, start=TRAIN_INDEX_OFFSET)
    roi = config.roi.as_tuple() if config.roi is not None else None
    fit = choose_fit([roi_shape(s.image.shape[:2], roi) for s in samples])
    done = [preprocess_box(s.image, load_size, roi, fit) for s in samples]
    images = [d[0] for d in done]
    masks = [np.zeros(img.shape[:2], bool) for img in images]
    train_set = from_samples(
        images,
        masks,
        [None] * len(images),
        [str(s.index) for s in samples],
        fit,
        [d[1] for d in done] if fit == "pad" else None,
    )
    logger.info(
        "station %s: training %s on %d synthetic %s parts at %d px (fit %s)",
        config.id,
        spec.detector,
        len(images),
        cam.family,
        size,
        fit,
    )
    if progress is None:
        progress = _no_progress
    if candidates:
        trained = training.train_auto(train_set, candidates=candidates, progress=progress)
    else:
        detector = registry.create({**spec.config, "type": spec.detector, "image_size": size})
        trained = training.train(detector, train_set, progress=progress)
    progress("export to OpenVINO", 0, 1)
    extra = {"trained_for": config.id, "bootstrap": True}
    return training.export_openvino(trained, out, extra_metadata=extra)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def bootstrap_station(
    config: StationConfig,
    session_factory: sessionmaker[Session],
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train and export the station's first model; in database mode register and activate it."""
    from inspection.db import repo
    from inspection.db.engine import run_in_transaction
    from inspection.db.models import ModelStatus
    from inspection.runtime import read_metadata
    from inspection.station.persist import register_station

    out = default_bundle_dir(config)
    bundle = train_bundle(config, out, progress)
    result: dict[str, Any] = {"station": config.id, "bundle": str(bundle)}
    if config.detector.source == "database":
        meta = read_metadata(bundle)
        actor = f"station:{config.id}"

        def register(session: Session) -> int:
            ids = register_station(session, config)
            version = repo.register_model_version(
                session,
                station_id=ids.station_id,
                name=f"{meta['detector']}-bootstrap",
                detector_type=str(meta["detector"]),
                artifact_path=str(bundle.resolve()),
                config={
                    "bundle_created": meta.get("created"),
                    "bootstrap": True,
                    "auto_selection": meta.get("auto_selection"),
                },
                metrics={"calibration": meta.get("calibration", {})},
                registered_by=actor,
            )
            repo.set_model_status(
                session, model_version_id=version.id, status=ModelStatus.ACTIVE, changed_by=actor
            )
            return version.id

        result["model_version_id"] = run_in_transaction(session_factory, register)
    return result


def _log_progress(payload: str) -> None:
    try:
        step = json.loads(payload)
        logger.info(
            "station %s: first model: %s %d/%d",
            step["station"],
            step["stage"],
            step["done"],
            step["total"],
        )
    except (ValueError, KeyError, TypeError):
        logger.debug("unreadable bootstrap progress line %r", payload)


def run_bootstrap_subprocess(config: StationConfig, db_url: str) -> dict[str, Any]:
    """Run :func:`bootstrap_station` in a fresh Python process (keeps torch out of this one)."""
    return run_bootstraps_subprocess([config], db_url)[0]


def run_bootstraps_subprocess(
    configs: Sequence[StationConfig],
    db_url: str,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run :func:`bootstrap_station` for each config, one after the other, in one fresh Python
    process (keeps torch out of this one; torch and the backbone load once for all of them).

    Its training progress is logged here (``station X: first model: STAGE done/total``, a line
    per stage at most every 2 s), so a first start that trains for a minute says what it does.
    ``on_ready`` is called here with each station's result as soon as its model is registered,
    while the next one trains (e.g. to start that station scoring).

    Raises:
        InspectionError: training failed (the subprocess's last output lines are included).
    """
    names = ", ".join(c.id for c in configs)
    env = {**os.environ, "INSPECTION_DATABASE_URL": db_url}
    tail: deque[str] = deque(maxlen=15)
    ready_error: Exception | None = None
    # stdout (the result) goes to a file, so only stderr is a pipe: read as it comes, it can
    # never fill while the child blocks on the other one.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inspection.station.bootstrap"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if proc.stdin is None or proc.stderr is None:  # pragma: no cover - PIPE gives both
            raise InspectionError("bootstrap subprocess has no pipes")
        proc.stdin.write(json.dumps([c.model_dump(mode="json") for c in configs]))
        proc.stdin.close()
        for line in proc.stderr:  # the subprocess's log; its progress lines are passed on
            if line.startswith(PROGRESS_PREFIX):
                _log_progress(line[len(PROGRESS_PREFIX) :])
            elif line.startswith(READY_PREFIX):
                if on_ready is not None and ready_error is None:
                    try:  # keep reading: the child must never block on a full pipe
                        on_ready(json.loads(line[len(READY_PREFIX) :]))
                    except Exception as exc:
                        ready_error = exc
            elif line.strip():
                tail.append(line.rstrip())
        code = proc.wait()
        out.seek(0)
        stdout = out.read()
    if code != 0:
        text = "\n".join(tail) or stdout.strip()
        raise InspectionError(f"station {names}: bootstrap training failed:\n{text}")
    if ready_error is not None:
        raise ready_error
    lines = stdout.strip().splitlines()
    results: list[dict[str, Any]] = json.loads(lines[-1]) if lines else []
    if len(results) != len(configs):
        raise InspectionError(f"station {names}: bootstrap returned {len(results)} results")
    return results


def main() -> None:
    """Subprocess entry: a JSON list of station configs (or one config) on stdin, the database
    from the environment; a JSON list of results, one per config, on stdout."""
    from inspection.db.engine import make_engine, make_session_factory
    from inspection.db.settings import get_settings
    from inspection.quiet import quiet_third_party
    from inspection.station.config import parse_station_config

    quiet_third_party()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    data = json.loads(sys.stdin.read())
    configs = [parse_station_config(c) for c in (data if isinstance(data, list) else [data])]
    engine = make_engine(get_settings().database_url)
    try:
        factory = make_session_factory(engine)
        results = []
        for config in configs:
            result = bootstrap_station(config, factory, _ProgressLines(config.id))
            _tell_parent(READY_PREFIX, result)
            results.append(result)
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
