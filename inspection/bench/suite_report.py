"""The results page of ``inspection bench suite`` (``suite.md``): summary, one table per data
set, notes and citations."""

from __future__ import annotations

from typing import Any

from inspection.bench.report import markdown_table
from inspection.bench.suite import METRIC_SIZE, QUICK_PROTOCOL, DatasetSpec, dataset_specs


def render_markdown(
    payload: dict[str, Any],
    figure: str | None,
    skipped: dict[str, str] | None = None,
    failed: dict[str, str] | None = None,
) -> str:
    """The ``suite.md`` body: summary, picture, one table per data set, notes and citations.

    ``figure`` is the heatmap's path relative to the markdown file (``None``: no picture).
    """
    quick = payload["protocol"] == QUICK_PROTOCOL
    specs = dataset_specs(quick)
    names = list(payload["datasets"])
    parts = [_intro(quick), *_summary(payload, names)]
    if figure is not None:
        parts.append(f"![image AUROC per detector and data set]({figure})")
    parts += [_dataset_section(payload, name, specs.get(name)) for name in names]
    parts.append(_notes(names, figure, skipped, failed))
    citations = list(dict.fromkeys(specs[n].citation for n in names if n in specs))
    if citations:
        parts.append("## Data\n\n" + "\n".join(f"- {c}" for c in citations))
    return "\n\n".join(parts) + "\n"


def _intro(quick: bool) -> str:
    """What the protocol measures and how (or that a quick run says nothing)."""
    return (
        "Protocol `suite` (`../shared/data/README.md`): one-class detection on unlike parts with "
        "the same settings for every data set (no per-set tuning). Image AUROC per data set; "
        "pixel AUROC and AUPRO (FPR <= 0.3) where masks exist; metrics at "
        f"{METRIC_SIZE} x {METRIC_SIZE} (anomaly maps of detectors at another input side "
        "resized bilinearly; masks read at that side); fit time and batch-1 OpenVINO time "
        "(CPU) on the machine of each row's run, in a fresh torch-free process as on a "
        "station. `ov_load` is the machine's 1-minute load average right after that timing "
        "(2 cores: above about 1 other jobs shared the CPU and the time is inflated, up to "
        "5-10x at load 5); `ov_retimed` marks times measured again later on the kept bundle "
        "(`inspection bench suite --retime`, `openvino_timed` in the JSON). Image AUROC does "
        "not depend on the load (deterministic training); `fit_seconds` does."
        if not quick
        else "Quick stand-in of protocol `suite` on synthetic parts (CI smoke run; the numbers "
        "say nothing about real data)."
    )


def _summary(payload: dict[str, Any], names: list[str]) -> list[str]:
    """The summary table (mean, worst and per-set image AUROC), and which rows it lacks."""
    summary = payload["summary"]
    parts: list[str] = []
    summary_rows = []
    for key, s in summary.items():
        cells: dict[str, Any] = {"detector": key, **s}
        for name in names:
            row = payload["datasets"][name]["detectors"].get(key)
            if row is None or row.get("image_auroc") is None:
                cells[name] = None
            elif row.get("chosen"):
                cells[name] = f"{row['image_auroc']:.3f} ({row['chosen']})"
            else:
                cells[name] = f"{row['image_auroc']:.3f}"
        summary_rows.append(cells)
    parts.append(
        "## Summary\n\nMean and worst image AUROC over the data sets each detector has a row "
        "on, then image AUROC per data set (`auto`: the candidate it chose in brackets).\n\n"
        + markdown_table(
            summary_rows,
            ["detector", "mean_image_auroc", "worst_image_auroc", "n_datasets", *names],
        )
    )
    missing = [
        f"- `{key}` has no row on {', '.join(f'`{n}`' for n in absent)}: its mean and worst "
        "are over the other sets only."
        for key in summary
        if (absent := [n for n in names if key not in payload["datasets"][n]["detectors"]])
    ]
    if missing:
        parts.append("\n".join(missing))
    return parts


def _dataset_section(payload: dict[str, Any], name: str, spec: DatasetSpec | None) -> str:
    """One data set's table: every detector's row with its metrics, timing and provenance."""
    rows = [{**v, "detector": k} for k, v in payload["datasets"][name]["detectors"].items()]
    for r in rows:
        r["score_mode"] = _score_mode(r)
        timed = r.get("openvino_timed") or {}
        r["ov_load"] = timed.get("load_avg_1m", r.get("openvino_load_avg"))
        r["ov_retimed"] = str(timed["date"])[:10] if timed else None
        r["commit"] = _short_commit(r.get("commit"))
        r["date"] = str(r.get("date", ""))[:10] or None
        r["fit"] = r.get("fit") or "stretch"  # rows from before the suite recorded it: stretched
    columns = ["detector", "image_auroc", "pixel_auroc", "aupro", "image_f1"]
    if any(r.get("image_auroc_same_groups") is not None for r in rows):
        columns.insert(2, "image_auroc_same_groups")
    columns += ["fit_seconds", "openvino_ms_per_image", "ov_load", "ov_retimed"]
    columns += ["input_size", "fit", "score_mode"]
    if any(r.get("chosen") for r in rows):
        columns.insert(1, "chosen")
    columns += ["n_train", "n_test", "commit", "date"]
    masks = any(r.get("pixel_auroc") is not None for r in rows)
    text = f"## {name}\n\n"
    if spec is not None:
        text += f"Data: {spec.citation}"
        text += "" if masks else " Image labels only: pixel AUROC and AUPRO are null."
        text += "\n\n"
    return text + markdown_table(rows, columns)


def _notes(
    names: list[str],
    figure: str | None,
    skipped: dict[str, str] | None,
    failed: dict[str, str] | None,
) -> str:
    """How the rows were made, plus what the last run skipped or failed."""
    notes = [
        "## Notes\n",
        "- Training: `inspection.training.train` with each detector's default config (`--quick`: "
        "its `quick_config()`), thresholds at the 0.99 quantile of a held-out 15 % of the "
        "normal training images; test labels are used only to compute the metrics. "
        "`image_f1`: F1 at that deployed threshold.",
        "- `auto`: `inspection.training.train_auto` trains several candidate detectors on the "
        "normal images and keeps the one a label-free validation ranks best; `chosen` names "
        "it, `auto_selection` in the JSON holds every candidate's validation record. Its "
        "`fit_seconds` is what `train_auto` reports; `train_seconds` in the JSON is the wall "
        "time of the whole training call (every candidate) for every row.",
        "- `score_mode`: the score mode chosen label-free at training (`score_mode: auto`).",
        "- `fit`: how the images became the square input (`inspection.geometry`): `pad` "
        "letterboxes (aspect ratio kept; pixel metrics on each image's valid box, cut from its "
        "map and mask, so the border counts for nothing), `stretch` squashes. The suite gives every set the fit "
        "`inspection train` gives it by default (`--fit auto`: `pad` where the training images "
        "are far from square or vary in shape, as mt-exp's tiles do); rows measured before the "
        "suite recorded the fit were stretched.",
        "- Every row keeps the commit and date it was measured at (`commit`, `date`); rows of "
        "other detectors and data sets are kept when a run covers only some of them.",
    ]
    if "mt-exp" in names:
        notes.append(
            "- `image_auroc_same_groups` (mt-exp): image AUROC on the test images of "
            "acquisition groups exp5 and exp6 only, where normals and defects share exposure "
            "(see `mt-exp.md`); not part of the protocol."
        )
    if figure is not None:
        notes.append(
            "- ROC / PRO / score-histogram figures per cell: `<data set>/<detector>_curves.png` "
            "in the folder of the picture."
        )
    if skipped:
        notes.append(
            "- Not run in the last run: "
            + "; ".join(f"`{n}` ({why})" for n, why in skipped.items())
        )
    if failed:
        notes.append(
            "- Failed in the last run (earlier rows, if any, kept): "
            + "; ".join(f"`{cell}`: {error}" for cell, error in failed.items())
        )
    return "\n".join(notes)


def _short_commit(commit: str | None) -> str:
    if not commit:
        return "-"
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:9] + ("-dirty" if dirty else "")


def _score_mode(row: dict[str, Any]) -> str | None:
    selection = row.get("score_selection")
    return str(selection["chosen"]) if selection and "chosen" in selection else None
