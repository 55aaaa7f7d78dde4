"""Artifact store: content addressing, path safety, atomic writes, lossless heatmaps."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

from inspection.errors import ArtifactNotFoundError, StorageError, UnsafeArtifactKeyError
from inspection.storage import (
    ArtifactStore,
    LocalArtifactStore,
    content_key,
    decode_heatmap,
    encode_heatmap,
    heatmap_stats,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_put_bytes_is_content_addressed(store: LocalArtifactStore) -> None:
    data = b"frame bytes"
    sha = hashlib.sha256(data).hexdigest()
    obj = store.put_bytes(data, ext=".PNG")
    assert obj.key == f"{sha[:2]}/{sha[2:4]}/{sha}.png"
    assert obj.sha256 == sha
    assert obj.size_bytes == len(data)
    assert store.exists(obj.key)
    assert store.read(obj.key) == data
    with store.open(obj.key) as fh:
        assert fh.read() == data
    assert store.path_for(obj.key) == (store.root / obj.key).resolve()
    assert store.put_bytes(data, ext="png") == obj  # same bytes, same key
    assert _tmp_files(store.root) == []
    assert isinstance(store, ArtifactStore)


def test_put_file_streams_and_matches_put_bytes(store: LocalArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "image.jpg"
    source.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several copy chunks
    obj = store.put_file(source)
    assert obj.key.endswith(".jpg")
    assert store.read(obj.key) == source.read_bytes()
    assert obj == store.put_bytes(source.read_bytes(), ext="jpg")
    assert store.put_file(source) == obj
    assert _tmp_files(store.root) == []
    with pytest.raises(ArtifactNotFoundError):
        store.put_file(tmp_path / "missing.png")
    with pytest.raises(UnsafeArtifactKeyError):
        store.put_file(source, ext="../png")


def test_delete_and_missing(store: LocalArtifactStore) -> None:
    obj = store.put_bytes(b"x", ext="bin")
    assert store.delete(obj.key)
    assert not store.exists(obj.key)
    assert not store.delete(obj.key)
    with pytest.raises(ArtifactNotFoundError):
        store.read(obj.key)


@pytest.mark.parametrize(
    "key",
    [
        "../outside.png",
        "ab/../../outside.png",
        "/etc/passwd",
        "C:/windows/x",
        "ab\\cd\\x.png",
        "ab//x.png",
        "./x.png",
        "",
        "ab/.tmp-123",
        "x\x00.png",
    ],
)
def test_unsafe_keys_are_rejected(store: LocalArtifactStore, key: str) -> None:
    with pytest.raises(UnsafeArtifactKeyError):
        store.exists(key)
    with pytest.raises(UnsafeArtifactKeyError):
        store.read(key)
    with pytest.raises(UnsafeArtifactKeyError):
        store.delete(key)


def test_symlink_escape_is_rejected(store: LocalArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "data.txt").write_text("secret")
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeArtifactKeyError, match="outside"):
        store.read("link/data.txt")
    with pytest.raises(UnsafeArtifactKeyError):
        store.delete("link/data.txt")
    assert (outside / "data.txt").exists()


def test_content_key_validation() -> None:
    with pytest.raises(UnsafeArtifactKeyError):
        content_key("not-hex", "png")
    with pytest.raises(UnsafeArtifactKeyError):
        content_key("a" * 64, "p/ng")


def test_heatmap_round_trip_is_lossless(rng: np.random.Generator) -> None:
    heatmap = rng.random((37, 53), dtype=np.float32) * 7.5
    heatmap[0, 0] = 1e-30
    heatmap[1, 1] = 3.4e38
    data = encode_heatmap(heatmap)
    decoded = decode_heatmap(data)
    assert decoded.dtype == np.float32
    assert decoded.shape == (37, 53)
    np.testing.assert_array_equal(decoded, heatmap)
    stats = heatmap_stats(heatmap)
    assert stats.max == pytest.approx(float(heatmap.max()))
    assert stats.mean == pytest.approx(float(heatmap.mean()), rel=1e-5)


def test_heatmap_written_compressed_by_older_versions_still_decodes(
    rng: np.random.Generator,
) -> None:
    heatmap = rng.random((16, 16), dtype=np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, heatmap=heatmap)
    np.testing.assert_array_equal(decode_heatmap(buffer.getvalue()), heatmap)


def test_heatmap_float64_is_stored_as_float32() -> None:
    decoded = decode_heatmap(encode_heatmap(np.full((4, 4), 0.25)))
    assert decoded.dtype == np.float32
    assert float(decoded[0, 0]) == 0.25


def test_heatmap_errors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_heatmap(np.zeros((2, 3, 3), dtype=np.float32))
    with pytest.raises(StorageError):
        decode_heatmap(b"definitely not npz")


def test_heatmap_stored_in_store(store: LocalArtifactStore) -> None:
    heatmap = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    obj = store.put_bytes(encode_heatmap(heatmap), ext="npz")
    np.testing.assert_array_equal(decode_heatmap(store.read(obj.key)), heatmap)
