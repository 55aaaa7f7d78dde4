"""Specific errors raised across the package, so callers can tell bad input from bugs."""

from __future__ import annotations


class InspectionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(InspectionError):
    """A configuration file or value is malformed or inconsistent."""


class DatasetError(InspectionError):
    """A dataset folder is missing, empty or not in the expected layout."""


class ImageDecodeError(InspectionError):
    """An image file could not be decoded (corrupt, truncated or not an image)."""


class BackboneWeightsError(InspectionError):
    """Pretrained backbone weights are missing or do not match the architecture."""


class ModelFileError(InspectionError):
    """A saved or exported model does not exist, is corrupt, or does not match what was asked."""


class UnknownDetectorError(InspectionError, KeyError):
    """A detector key is not in the registry."""


class NotFittedError(InspectionError):
    """A detector was used before ``fit`` (or ``load``)."""


class DatabaseError(InspectionError):
    """The database is unreachable or its schema is not at the expected revision."""


class SchemaOutOfDateError(DatabaseError):
    """The database schema is not at Alembic head; run ``inspection db upgrade``."""


class StorageError(InspectionError):
    """The artifact store could not read, write or delete an object."""


class UnsafeArtifactKeyError(StorageError, ValueError):
    """An artifact key is absolute, climbs out of the store (``..``, symlinks) or is malformed."""


class ArtifactNotFoundError(StorageError, FileNotFoundError):
    """No artifact is stored under the requested key."""


class NotFoundError(InspectionError, LookupError):
    """A database row that the caller named (station, model version, job, ...) does not exist."""


class InvalidStateError(InspectionError):
    """An operation is not allowed in the entity's current state (e.g. finishing a done job)."""


class PostgresUnavailableError(InspectionError):
    """No PostgreSQL server binaries (or no non-root user to run them) for a throwaway cluster."""


class InvalidCursorError(InspectionError, ValueError):
    """A pagination cursor is malformed or was not produced by this version of the code."""


class CameraError(InspectionError):
    """A camera or frame source cannot be opened, or was lost while streaming."""


class FrameError(InspectionError):
    """A captured frame is unusable: corrupt or truncated file, empty image, wrong shape."""


class MissingExtraError(InspectionError):
    """A command needs an optional part of the package (an extra) that this install lacks.

    The lean station install (``pip install inspection``) has no torch: training, export and
    the benchmarks need ``pip install 'inspection[train]'``. The CLI exits with code 2 on it.
    """

    def __init__(self, feature: str, extra: str = "train", module: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        missing = f" (no module {module!r})" if module else ""
        super().__init__(
            f"{feature} needs the '{extra}' extra, which this install lacks{missing}: "
            f"pip install 'inspection[{extra}]' (or `make setup` in a clone)"
        )


class LoginThrottledError(InspectionError):
    """Too many failed logins for a username; try again after ``retry_after_s`` (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
