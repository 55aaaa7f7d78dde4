"""First models for stations that have none: train on the synthetic line, export, register.

This module imports torch (through :mod:`inspection.engine`), so stations never import it: the
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


def train_bundle(config: StationConfig, out: Path) -> Path:
    """Train ``detector.bootstrap`` on good parts of the station's synthetic line; export.

    The fit (:func:`inspection.geometry.choose_fit`) is chosen from the shape of the region the
    station scores (the frame or its region of interest) and recorded in the bundle.
    """
    from inspection import engine
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
    candidates = engine.auto_candidates(size) if spec.detector == "auto" else None
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
    if candidates:
        trained = engine.train_auto(train_set, candidates=candidates)
    else:
        detector = registry.create({**spec.config, "type": spec.detector, "image_size": size})
        trained = engine.train(detector, train_set)
    extra = {"trained_for": config.id, "bootstrap": True}
    return engine.export_openvino(trained, out, extra_metadata=extra)


def bootstrap_station(
    config: StationConfig, session_factory: sessionmaker[Session]
) -> dict[str, Any]:
    """Train and export the station's first model; in database mode register and activate it."""
    from inspection.db import repo
    from inspection.db.engine import run_in_transaction
    from inspection.db.models import ModelStatus
    from inspection.runtime import read_metadata
    from inspection.station.persist import register_station

    out = default_bundle_dir(config)
    bundle = train_bundle(config, out)
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


def run_bootstrap_subprocess(config: StationConfig, db_url: str) -> dict[str, Any]:
    """Run :func:`bootstrap_station` in a fresh Python process (keeps torch out of this one).

    Raises:
        InspectionError: training failed (the subprocess's last output lines are included).
    """
    env = {**os.environ, "INSPECTION_DATABASE_URL": db_url}
    proc = subprocess.run(
        [sys.executable, "-m", "inspection.station.bootstrap"],
        input=config.model_dump_json(),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise InspectionError(f"station {config.id}: bootstrap training failed:\n{tail}")
    lines = proc.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return result


def main() -> None:
    """Subprocess entry: station config JSON on stdin, database from the environment."""
    from inspection.db.engine import make_engine, make_session_factory
    from inspection.db.settings import get_settings
    from inspection.quiet import quiet_third_party
    from inspection.station.config import parse_station_config

    quiet_third_party()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = parse_station_config(json.loads(sys.stdin.read()))
    engine = make_engine(get_settings().database_url)
    try:
        result = bootstrap_station(config, make_session_factory(engine))
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
