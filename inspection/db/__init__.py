"""Persistence: SQLAlchemy models, Alembic migrations, engine factory and data-access functions.

Nothing here connects to a database at import time; build engines with
:func:`inspection.db.engine.make_engine` and pass sessions into :mod:`inspection.db.repo`.
"""
