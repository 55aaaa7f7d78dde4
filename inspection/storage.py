"""Artifact store: frames, heatmaps, overlays and crops, content-addressed by SHA-256.

:class:`ArtifactStore` is the interface stations, the API and jobs use; :class:`LocalArtifactStore`
keeps objects under a root folder as ``ab/cd/<sha256>.<ext>``. An S3-compatible store can
implement the same protocol later (``path_for`` would then return a local cache path).

Keys are relative POSIX paths. Every key is checked before use: absolute paths, ``..``,
backslashes, empty segments and anything that resolves (through symlinks) outside the root are
rejected with :class:`~inspection.errors.UnsafeArtifactKeyError`. Writes are atomic (temporary
file in the target folder, fsync, rename), so a reader never sees half an object.

Heatmaps are stored losslessly as NumPy (``.npz``) float32 arrays: :func:`encode_heatmap` /
:func:`decode_heatmap`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from inspection.errors import ArtifactNotFoundError, StorageError, UnsafeArtifactKeyError

_EXT_RE = re.compile(r"[a-z0-9]{1,10}")
_CHUNK = 1 << 20
HEATMAP_EXT = "npz"
HEATMAP_MEDIA_TYPE = "application/x-npz"


@dataclass(frozen=True)
class StoredObject:
    """What a put returned: the key to read it back, its SHA-256 (hex) and size in bytes."""

    key: str
    sha256: str
    size_bytes: int


@runtime_checkable
class ArtifactStore(Protocol):
    """Where artifact bytes live. Keys are relative POSIX paths chosen by the store."""

    def put_bytes(self, data: bytes, *, ext: str) -> StoredObject:
        """Store ``data`` (idempotent: the same bytes give the same key)."""
        ...

    def put_file(self, path: str | os.PathLike[str], *, ext: str | None = None) -> StoredObject:
        """Store a copy of the file at ``path``; ``ext`` defaults to the file's suffix."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the object for binary reading (caller closes)."""
        ...

    def read(self, key: str) -> bytes:
        """The object's bytes."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the object; False when it was not there."""
        ...

    def path_for(self, key: str) -> Path:
        """A local filesystem path holding the object's bytes (for OpenCV and friends)."""
        ...


def content_key(sha256_hex: str, ext: str) -> str:
    """The content address ``ab/cd/<sha256>.<ext>`` of an object."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise UnsafeArtifactKeyError(f"not a lowercase hex SHA-256: {sha256_hex!r}")
    return f"{sha256_hex[:2]}/{sha256_hex[2:4]}/{sha256_hex}.{normalize_ext(ext)}"


def normalize_ext(ext: str) -> str:
    """``ext`` without a leading dot, lower-cased; only ``[a-z0-9]{1,10}`` is accepted."""
    clean = ext.lower().lstrip(".")
    if not _EXT_RE.fullmatch(clean):
        raise UnsafeArtifactKeyError(f"invalid file extension {ext!r} (want [a-z0-9]{{1,10}})")
    return clean


def validate_key(key: str) -> PurePosixPath:
    """Check ``key`` is a safe relative path; return it parsed.

    Raises:
        UnsafeArtifactKeyError: empty, absolute, containing ``..``/``.``/empty segments,
            backslashes or NUL bytes.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeArtifactKeyError("artifact key must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise UnsafeArtifactKeyError(f"artifact key {key!r} contains NUL or backslash")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise UnsafeArtifactKeyError(f"artifact key {key!r} is absolute")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeArtifactKeyError(f"artifact key {key!r} has an empty, '.' or '..' segment")
    if parts[-1].startswith(".tmp-"):
        raise UnsafeArtifactKeyError(f"artifact key {key!r} names a temporary file")
    return PurePosixPath(key)


class LocalArtifactStore:
    """Content-addressed objects in a local folder (``<root>/ab/cd/<sha256>.<ext>``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_cache: Path | None = None

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------

    def _resolved_root(self) -> Path:
        # Resolved once per store (a realpath per artifact is measurable on the station's
        # hot path); made again if the folder has gone.
        resolved = self._root_cache
        if resolved is None or not resolved.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            resolved = self.root.resolve()
            self._root_cache = resolved
        return resolved

    def path_for(self, key: str) -> Path:
        """The absolute path of ``key`` inside the root, after resolving symlinks.

        Raises:
            UnsafeArtifactKeyError: the key is malformed or resolves outside the root.
        """
        rel = validate_key(key)
        root = self._resolved_root()
        path = (root / Path(*rel.parts)).resolve()
        if not path.is_relative_to(root):
            raise UnsafeArtifactKeyError(f"artifact key {key!r} resolves outside the store")
        return path

    # -- writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, *, ext: str) -> StoredObject:
        """Store ``data`` under its content address; a no-op when it is already there."""
        digest = hashlib.sha256(data).hexdigest()
        key = content_key(digest, ext)
        # A content key is safe by construction (hex segments): no per-object realpath, which
        # costs more than the rest of a small heatmap's write on the station's hot path.
        target = self._resolved_root().joinpath(*key.split("/"))
        if not target.exists():
            self._atomic_write(target, io.BytesIO(data))
        return StoredObject(key=key, sha256=digest, size_bytes=len(data))

    def put_file(self, path: str | os.PathLike[str], *, ext: str | None = None) -> StoredObject:
        """Copy the file at ``path`` in (hashing while copying, so it is read once)."""
        source = Path(path)
        suffix = ext if ext is not None else source.suffix
        if not suffix:
            raise UnsafeArtifactKeyError(f"{source} has no extension; pass ext=")
        clean_ext = normalize_ext(suffix)
        root = self._resolved_root()
        staging = root / ".staging"
        staging.mkdir(exist_ok=True)
        hasher = hashlib.sha256()
        size = 0
        try:
            src = source.open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"cannot store {source}: no such file") from exc
        with src, _temporary_file(staging) as (tmp_path, tmp):
            while chunk := src.read(_CHUNK):
                hasher.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
            digest = hasher.hexdigest()
            key = content_key(digest, clean_ext)
            target = self.path_for(key)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, target)
        return StoredObject(key=key, sha256=digest, size_bytes=size)

    def _atomic_write(self, target: Path, data: BinaryIO) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _temporary_file(target.parent) as (tmp_path, tmp):
            while chunk := data.read(_CHUNK):
                tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.replace(tmp_path, target)

    # -- reading and deleting ------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Open ``key`` for reading.

        Raises:
            ArtifactNotFoundError: nothing stored under ``key``.
        """
        path = self.path_for(key)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact stored under {key!r}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read artifact {key!r}: {exc.strerror}") from exc

    def read(self, key: str) -> bytes:
        """The bytes stored under ``key`` (see :meth:`open`)."""
        with self.open(key) as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (False for unsafe keys is not offered: they raise)."""
        return self.path_for(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns False when it did not exist. Empty ``ab/cd`` folders stay."""
        path = self.path_for(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete artifact {key!r}: {exc.strerror}") from exc
        return True


@contextlib.contextmanager
def _temporary_file(folder: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A temporary file in ``folder`` (same filesystem as the target, so rename is atomic);
    removed on exit unless it was renamed away."""
    fd, name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    tmp_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield tmp_path, fh
    finally:
        tmp_path.unlink(missing_ok=True)


# -- heatmaps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatmapStats:
    """Summary of a heatmap kept in the database so lists need not load the array."""

    max: float
    mean: float


def _as_heatmap(array: npt.ArrayLike) -> npt.NDArray[np.float32]:
    heatmap = np.asarray(array)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {heatmap.shape}")
    if not np.issubdtype(heatmap.dtype, np.floating) and not np.issubdtype(
        heatmap.dtype, np.integer
    ):
        raise ValueError(f"heatmap must be numeric, got dtype {heatmap.dtype}")
    return np.ascontiguousarray(heatmap, dtype=np.float32)


def encode_heatmap(array: npt.ArrayLike) -> bytes:
    """Lossless bytes of an ``(H, W)`` anomaly map as float32 in an uncompressed ``.npz``.

    Values are stored exactly as float32 (the detectors' native precision); no scaling. Not
    compressed on purpose: the low mantissa bits of a float map are noise to zlib, which saved
    16 % of the bytes of a 256 px map for 11 ms of CPU (0.2 ms uncompressed) on the station's
    hot path. :func:`decode_heatmap` reads both, so older compressed files still load.
    """
    heatmap = _as_heatmap(array)
    buffer = io.BytesIO()
    np.savez(buffer, heatmap=heatmap)
    return buffer.getvalue()


def decode_heatmap(data: bytes) -> npt.NDArray[np.float32]:
    """The ``(H, W)`` float32 array :func:`encode_heatmap` stored.

    Raises:
        StorageError: the bytes are not an encoded heatmap.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            heatmap = npz["heatmap"]
    except (ValueError, KeyError, OSError, EOFError) as exc:
        raise StorageError(f"not an encoded heatmap: {exc}") from exc
    if heatmap.ndim != 2 or heatmap.dtype != np.float32:
        raise StorageError(f"encoded heatmap has shape {heatmap.shape}, dtype {heatmap.dtype}")
    return np.asarray(heatmap, dtype=np.float32)


def heatmap_stats(array: npt.ArrayLike) -> HeatmapStats:
    """Max and mean of a heatmap (NaNs ignored; an all-NaN map gives NaN)."""
    heatmap = _as_heatmap(array)
    if heatmap.size == 0:
        return HeatmapStats(max=float("nan"), mean=float("nan"))
    top, mean = float(heatmap.max()), float(heatmap.mean())
    if not (np.isnan(top) or np.isnan(mean)):  # no NaN: skip nanmax/nanmean's copies (10x)
        return HeatmapStats(max=top, mean=mean)
    if np.isnan(heatmap).all():
        return HeatmapStats(max=float("nan"), mean=float("nan"))
    return HeatmapStats(max=float(np.nanmax(heatmap)), mean=float(np.nanmean(heatmap)))
