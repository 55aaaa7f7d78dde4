"""``docs/schema.md`` generated from the models, so the documentation cannot drift.

``inspection db schema-doc`` rewrites the file; ``tests/db/test_schema_doc.py`` fails when the
committed file differs from what :func:`render_schema_markdown` produces.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import CheckConstraint, Enum, Index, MetaData, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import CompileError

from inspection.db.models import Base

#: Where the generated document lives, relative to the repository root.
SCHEMA_DOC_PATH = Path("docs/schema.md")


def _type_name(table: Table, column_name: str) -> str:
    column = table.c[column_name]
    if isinstance(column.type, Enum):
        return "enum(" + ", ".join(column.type.enums) + ")"
    try:
        return str(column.type.compile(dialect=postgresql.psycopg.dialect()))
    except CompileError:
        return type(column.type).__name__


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def render_schema_markdown(metadata: MetaData | None = None) -> str:
    """Markdown describing every table: purpose, columns (type, null, key, FK), indexes.

    Types are shown as PostgreSQL spells them; SQLite uses the equivalent affinities.
    Deterministic (tables and indexes sorted by name), so it can be compared in a test.
    """
    metadata = metadata or Base.metadata
    docs = {
        mapper.local_table.name: mapper.class_.__doc__
        for mapper in Base.registry.mappers
        if isinstance(mapper.local_table, Table)
    }
    out = [
        "# Database schema",
        "",
        "Generated from `inspection/db/models.py` by `inspection db schema-doc`; do not edit.",
        "A test fails when this file and the models disagree. Migrations live in `migrations/`.",
        "",
        "Timestamps are timezone-aware UTC. Enumerations are `VARCHAR(16)` with a CHECK "
        "constraint. Types are shown as PostgreSQL spells them; on SQLite, `BIGINT` primary "
        "keys are `INTEGER` (the rowid).",
        "",
    ]
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        out += [f"## `{table.name}`", ""]
        summary = _first_paragraph(docs.get(table.name))
        if summary:
            out += [summary, ""]
        out += ["| column | type | null | key | references |", "|---|---|---|---|---|"]
        for column in table.columns:
            keys = []
            if column.primary_key:
                keys.append("PK")
            if any(
                isinstance(c, UniqueConstraint) and list(c.columns.keys()) == [column.name]
                for c in table.constraints
            ):
                keys.append("unique")
            refs = ", ".join(
                f"`{fk.column.table.name}.{fk.column.name}` on delete {fk.ondelete or 'NO ACTION'}"
                for fk in sorted(column.foreign_keys, key=lambda f: f.target_fullname)
            )
            null = "yes" if column.nullable else "no"
            out.append(
                f"| `{column.name}` | {_type_name(table, column.name)} | {null} | "
                f"{' '.join(keys)} | {refs} |"
            )
        extras = []
        for constraint in sorted(
            (c for c in table.constraints if isinstance(c, UniqueConstraint)),
            key=lambda c: str(c.name),
        ):
            if len(constraint.columns) > 1:
                cols = ", ".join(constraint.columns.keys())
                extras.append(f"- unique `{constraint.name}` ({cols})")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            extras.append(_describe_index(index))
        checks = sorted(
            str(c.name) for c in table.constraints if isinstance(c, CheckConstraint) and c.name
        )
        if checks:
            extras.append("- checks: " + ", ".join(f"`{name}`" for name in checks))
        if extras:
            out += ["", *extras]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _describe_index(index: Index) -> str:
    cols = ", ".join(c.name for c in index.columns)
    kind = "unique index" if index.unique else "index"
    where = index.dialect_options["postgresql"].get("where")
    suffix = f" where `{where}`" if where is not None else ""
    return f"- {kind} `{index.name}` ({cols}){suffix}"


def write_schema_doc(path: Path) -> Path:
    """Write the generated schema document to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_schema_markdown())
    return path
