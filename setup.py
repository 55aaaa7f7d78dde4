"""Only what ``pyproject.toml`` cannot say: the repository's top-level ``migrations/`` (the
Alembic script folder, where new revisions are written) ships inside the wheel as
``inspection/db/migrations`` (:func:`inspection.db.migrate.migrations_dir` finds it there)."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["inspection*"]),
        "inspection.db.migrations",
        "inspection.db.migrations.versions",
    ],
    package_dir={"inspection.db.migrations": "migrations"},
)
