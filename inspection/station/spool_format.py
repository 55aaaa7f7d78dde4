"""The spool's file format: one batch of result rows per record, ``MAGIC | payload length |
SHA-256 of the payload | JSON payload``, and the spool's errors (see :mod:`.spool`).

Rows are JSON objects with the fields of :class:`inspection.db.repo.InspectionData` (regions
and artifacts as objects with their dataclass fields; artifacts are references to the artifact
store, not the files).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from inspection.db import repo
from inspection.db.models import ArtifactKind, Verdict
from inspection.errors import StorageError

MAGIC = b"INSPSPOOL1\n"
_HEADER = struct.Struct(">Q32s")  # payload length, sha256 of the payload


class SpoolError(StorageError):
    """The spool cannot take or give back a record (disk full, unwritable, locked)."""


class SpoolFullError(SpoolError):
    """The spool has reached its size limit; results can no longer be kept locally."""


class SpoolLockedError(SpoolError):
    """Another process already uses this spool folder (two stations with one id?)."""


class CorruptRecordError(SpoolError):
    """A spool file is not a complete record (bad header, length or checksum)."""


# -- (de)serialising result rows ---------------------------------------------------------------


def _artifact_to_json(a: repo.ArtifactData) -> dict[str, Any]:
    return {**dataclasses.asdict(a), "kind": str(a.kind)}


def item_to_json(item: repo.InspectionData) -> dict[str, Any]:
    """One result row as a JSON-able dict (artifacts are references to the artifact store)."""
    return {
        "station_id": item.station_id,
        "camera_id": item.camera_id,
        "captured_at": item.captured_at.isoformat(),
        "frame_ref": item.frame_ref,
        "model_version_id": item.model_version_id,
        "raw_score": item.raw_score,
        "norm_score": item.norm_score,
        "verdict": str(item.verdict),
        "latency_ms": item.latency_ms,
        "idempotency_key": item.idempotency_key,
        "regions": [dataclasses.asdict(r) for r in item.regions],
        "artifacts": [_artifact_to_json(a) for a in item.artifacts],
    }


def item_from_json(data: Mapping[str, Any]) -> repo.InspectionData:
    """The inverse of :func:`item_to_json`.

    Raises:
        CorruptRecordError: a field is missing or has the wrong type.
    """
    try:
        return repo.InspectionData(
            station_id=int(data["station_id"]),
            camera_id=None if data["camera_id"] is None else int(data["camera_id"]),
            captured_at=dt.datetime.fromisoformat(data["captured_at"]),
            frame_ref=str(data["frame_ref"]),
            model_version_id=(
                None if data["model_version_id"] is None else int(data["model_version_id"])
            ),
            raw_score=float(data["raw_score"]),
            norm_score=float(data["norm_score"]),
            verdict=Verdict(data["verdict"]),
            latency_ms=float(data["latency_ms"]),
            idempotency_key=str(data["idempotency_key"]),
            regions=tuple(repo.RegionData(**r) for r in data["regions"]),
            artifacts=tuple(
                repo.ArtifactData(**{**a, "kind": ArtifactKind(a["kind"])})
                for a in data["artifacts"]
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecordError(f"spooled result is malformed: {exc!r}") from exc


def encode_record(items: Sequence[repo.InspectionData]) -> bytes:
    """``MAGIC | length | sha256 | JSON payload`` for one batch."""
    payload = json.dumps([item_to_json(i) for i in items], separators=(",", ":")).encode()
    return MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload


def decode_record(data: bytes, name: str = "record") -> list[repo.InspectionData]:
    """The rows of an encoded record.

    Raises:
        CorruptRecordError: truncated, wrong magic, wrong length or checksum, bad JSON.
    """
    head = len(MAGIC) + _HEADER.size
    if len(data) < head or not data.startswith(MAGIC):
        raise CorruptRecordError(f"{name}: not a spool record (bad or truncated header)")
    length, digest = _HEADER.unpack_from(data, len(MAGIC))
    payload = data[head:]
    if len(payload) != length:
        raise CorruptRecordError(
            f"{name}: truncated or padded record ({len(payload)} of {length} bytes)"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptRecordError(f"{name}: checksum mismatch")
    try:
        rows = json.loads(payload)
    except ValueError as exc:
        raise CorruptRecordError(f"{name}: payload is not JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise CorruptRecordError(f"{name}: payload is not a list of results")
    return [item_from_json(r) for r in rows]
