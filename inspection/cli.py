"""Command-line entry point: ``inspection <group> <command>``.

Each group lives beside the code it drives and imports heavy backends (torch, anomalib,
OpenVINO) inside its commands, so ``inspection --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from inspection.api.cli import serve_command, users_app
from inspection.bench.cli import app as bench_app
from inspection.db.cli import app as db_app
from inspection.demo import demo_command
from inspection.loop.cli import app as loop_app
from inspection.station.cli import app as station_app
from inspection.train import train_command

app = typer.Typer(
    name="inspection",
    help="Industrial visual inspection: detect, type, store, review and retrain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold a database URL with its password
)
app.add_typer(bench_app, name="bench")
app.add_typer(db_app, name="db")
app.add_typer(station_app, name="station")
app.add_typer(users_app, name="users")
app.add_typer(loop_app)  # top-level groups: retrain, scheduler
app.command("demo")(demo_command)
app.command("train")(train_command)
app.command("serve")(serve_command)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console-script entry point.

    A command that needs an extra this install lacks (the lean station install has no torch)
    prints which one to install and exits with code 69
    (:data:`inspection.extras.EXIT_MISSING_EXTRA`) instead of an import traceback.
    """
    from inspection.errors import MissingExtraError
    from inspection.extras import EXIT_MISSING_EXTRA, as_missing_extra
    from inspection.quiet import quiet_third_party

    quiet_third_party()
    try:
        app()
    except MissingExtraError as exc:
        _missing_extra(exc)
        sys.exit(EXIT_MISSING_EXTRA)
    except ImportError as exc:
        missing = as_missing_extra(exc)
        if missing is None:
            raise
        _missing_extra(missing)
        sys.exit(EXIT_MISSING_EXTRA)


def _missing_extra(exc: Exception) -> None:
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
