"""Persistence: SQLAlchemy models, Alembic migrations, engine factory and data-access functions.

Nothing here connects to a database at import time; build engines with
:func:`inspection.db.engine.make_engine` and pass sessions into :mod:`inspection.db.repo`.

Data-access modules (one per aggregate: :mod:`.plant`, :mod:`.users`, :mod:`.logins`,
:mod:`.model_versions`, :mod:`.ingest`, :mod:`.review`, :mod:`.jobs`, shared helpers in
:mod:`.common`): every function
takes an open :class:`~sqlalchemy.orm.Session` first and keyword arguments after it; none
commits (the caller owns the transaction: a use case's unit of work in
:mod:`inspection.services.uow`, or :func:`inspection.db.engine.run_in_transaction`).
"""
