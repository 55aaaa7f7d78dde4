"""``inspection bench suite --retime``: time the kept bundles of a suite run again.

Training a suite row takes minutes to an hour and gives the same image AUROC on any machine
state (deterministic training); its batch-1 OpenVINO time does not: on this 2-core machine a
PatchCore bundle read 19 ms alone and 108-200 ms while other jobs ran. So a suite run keeps
each cell's exported bundle with the images it was timed on
(:func:`inspection.bench.measure.measure_trained`), and this step times them again in a fresh
torch-free process when the machine is quiet, recording the load average next to each figure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspection.bench.measure import TIMING_IMAGES, retime_bundle
from inspection.bench.report import RESULTS_DIR, stamp, write_results
from inspection.bench.suite import (
    PROTOCOL,
    QUICK_PROTOCOL,
    build_payload,
    heatmap,
)
from inspection.bench.suite_report import render_markdown
from inspection.errors import ConfigError

logger = logging.getLogger(__name__)


def retime_rows(
    json_path: Path,
    bundles_dir: Path,
    save: Callable[[dict[str, Any]], None],
    repeats: int = 90,
) -> list[tuple[str, str]]:
    """Re-time every row of ``json_path`` (a suite-style ``{"datasets": {name: {"detectors":
    {key: row}}}}`` file) whose bundle is kept under ``<bundles_dir>/<name>/<key>``.

    Each row's ``openvino_ms_per_image`` is replaced and ``openvino_timed`` records the commit,
    date, machine and 1-minute load average of the new timing (the row's own ``commit`` stays
    the training commit). ``save`` is called with the whole payload after every row, so an
    interrupted run keeps what it timed. Returns the ``(data set, key)`` pairs re-timed.
    """
    payload = json.loads(json_path.read_text())
    done: list[tuple[str, str]] = []
    for name, section in payload.get("datasets", {}).items():
        for key, row in section.get("detectors", {}).items():
            bundle = bundles_dir / name / key
            if not (bundle / TIMING_IMAGES).is_file():
                logger.info(
                    "no kept bundle for %s on %s (%s): time left as it was", key, name, bundle
                )
                continue
            ms, load = retime_bundle(bundle, repeats)
            logger.info(
                "%s on %s: %.2f ms/image (was %s; load average %.2f)",
                key,
                name,
                ms,
                row.get("openvino_ms_per_image"),
                load,
            )
            row["openvino_ms_per_image"] = round(ms, 2)
            row["openvino_timed"] = {**stamp(), "load_avg_1m": load, "repeats": repeats}
            done.append((name, key))
            save(payload)
    return done


def default_bundles_dir(protocol: str = PROTOCOL) -> Path:
    """Where a suite run keeps its cells' bundles: ``~/.cache/inspection/bench-bundles/<protocol>``
    (outside the repository: hundreds of MB, machine-local)."""
    return Path.home() / ".cache" / "inspection" / "bench-bundles" / protocol


def retime_suite(
    results_dir: Path = RESULTS_DIR, bundles_dir: Path | None = None, quick: bool = False
) -> list[tuple[str, str]]:
    """Time the kept bundles of ``<results_dir>/<protocol>.json`` again (:func:`retime_rows`) and rewrite its markdown; returns the cells re-timed."""
    protocol = QUICK_PROTOCOL if quick else PROTOCOL
    json_path = results_dir / f"{protocol}.json"
    if not json_path.is_file():
        raise ConfigError(f"{json_path} not found: run the suite first")
    bundles = default_bundles_dir(protocol) if bundles_dir is None else bundles_dir
    figures_dir = results_dir / protocol

    def save(payload: dict[str, Any]) -> None:
        fresh = build_payload(protocol, payload["datasets"], quick)
        picture = heatmap(fresh, figures_dir / "auroc.png")
        markdown = render_markdown(fresh, picture.relative_to(results_dir).as_posix())
        write_results(protocol, fresh, markdown, results_dir)

    return retime_rows(json_path, bundles, save, repeats=9 if quick else 90)
