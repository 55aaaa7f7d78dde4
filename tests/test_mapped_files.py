"""Handing back the pages of mapped weight files (:mod:`inspection.mapped_files`)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from inspection.mapped_files import can_page_out, mapped_mib, release_mapped_pages

pytestmark = pytest.mark.skipif(
    not can_page_out(),
    reason="reads /proc/self/maps and advises MADV_PAGEOUT (Linux 5.4 or later)",
)


def test_read_only_mapping_is_released_and_reads_back_the_same(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, 8 * 2**20, dtype=np.uint8)
    weights = tmp_path / "w" / "model.bin"
    weights.parent.mkdir()
    weights.write_bytes(data.tobytes())
    with weights.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        first = int(np.frombuffer(view, np.uint8).astype(np.int64).sum())  # every page resident
        assert mapped_mib([weights.parent]) > 7.0
        assert mapped_mib([tmp_path / "elsewhere"]) == 0.0
        assert release_mapped_pages([tmp_path / "elsewhere"]) == 0
        assert release_mapped_pages([weights.parent]) == 1
        assert mapped_mib([weights.parent]) < 1.0
        again = int(np.frombuffer(view, np.uint8).astype(np.int64).sum())  # faulted back in
        assert again == first == int(data.astype(np.int64).sum())


def test_writable_mappings_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "scratch.bin"
    path.write_bytes(b"\0" * 2**20)
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as view:
        view[:4] = b"abcd"
        assert release_mapped_pages([tmp_path]) == 0
        assert view[:4] == b"abcd"
