"""The detector benchmark's --quick mode runs end to end on synthetic data (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from inspection.bench import detectors as bench


def test_quick_bench_writes_results_and_figures(tmp_path: Path) -> None:
    payload = bench.run(["padim"], bench.QUICK_PROTOCOL, None, quick=True, results_dir=tmp_path)
    row = payload["detectors"]["padim"]
    for field in (
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "image_f1",
        "fit_seconds",
        "torch_ms_per_image",
        "openvino_ms_per_image",
        "peak_rss_mb",
    ):
        assert isinstance(row[field], float | int), field
    assert row["per_type"]
    saved = json.loads((tmp_path / f"{bench.QUICK_PROTOCOL}.json").read_text())
    assert saved["commit"] and saved["machine"] and saved["date"]
    assert (tmp_path / f"{bench.QUICK_PROTOCOL}.md").read_text().startswith("#")
    assert (tmp_path / bench.QUICK_PROTOCOL / "padim_curves.png").stat().st_size > 0
    assert (tmp_path / bench.QUICK_PROTOCOL / "padim_overlays.png").stat().st_size > 0
