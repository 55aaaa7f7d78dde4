"""docs/schema.md must be what the models generate (regenerate: ``inspection db schema-doc``)."""

from __future__ import annotations

from pathlib import Path

from inspection.db.models import Base
from inspection.db.schema_doc import SCHEMA_DOC_PATH, render_schema_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_doc_is_current() -> None:
    committed = (REPO_ROOT / SCHEMA_DOC_PATH).read_text()
    assert committed == render_schema_markdown(), (
        "docs/schema.md is out of date; run `inspection db schema-doc` and commit it"
    )


def test_schema_doc_covers_every_table_and_column() -> None:
    doc = render_schema_markdown()
    for table in Base.metadata.tables.values():
        assert f"## `{table.name}`" in doc
        for column in table.columns:
            assert f"| `{column.name}` |" in doc
