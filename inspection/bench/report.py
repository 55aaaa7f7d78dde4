"""Writing benchmark results: JSON + markdown table, stamped with commit, date and machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench/results")


def git_commit(short: bool = False) -> str:
    """Commit the numbers were measured on (``-dirty`` when the tree has local changes).

    Changes under ``bench/results`` (the results being written) do not count as dirty.
    """
    try:
        args = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
        sha = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_description() -> str:
    """One line naming the machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, {mem_gib:.0f} GiB, {platform.system()} {platform.release()}"


def stamp() -> dict[str, str]:
    """The provenance fields every results file starts with."""
    return {
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    if value is None:
        return "-"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (None: every key of any
    row, in the order they first appear)."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_results(
    name: str,
    payload: dict[str, Any],
    markdown: str,
    results_dir: Path = RESULTS_DIR,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md``; ``payload`` must already hold the stamp."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    header = (
        f"# {name}\n\ncommit `{payload.get('commit')}` · {payload.get('date')} · "
        f"{payload.get('machine')}\n\n"
    )
    md_path.write_text(header + markdown.rstrip() + "\n")
    return json_path, md_path


def previous_section(json_path: Path, protocol: str, section: str) -> dict[str, Any]:
    """``section`` of a results file written earlier for ``protocol`` ({} when the file is
    absent or holds another protocol): the rows a new run merges into."""
    if not json_path.is_file():
        return {}
    previous = json.loads(json_path.read_text())
    if previous.get("protocol") != protocol:
        return {}
    rows: dict[str, Any] = previous.get(section, {})
    return rows
