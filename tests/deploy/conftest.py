"""Fixtures shared with the station tests (a migrated SQLite database)."""

from __future__ import annotations

from tests.station.conftest import db

__all__ = ["db"]
