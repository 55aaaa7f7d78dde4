"""``inspection db`` commands (stub; filled in by the persistence issue)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Database schema: upgrade, downgrade, current revision, schema doc.")
