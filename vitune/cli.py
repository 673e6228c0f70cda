"""The ``vitune`` command line: a thin Typer layer over the library API.

Each command parses flags, calls one library function and prints its result. A
:class:`vitune.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from vitune.errors import UserError

app = typer.Typer(
    help="Fine-tune vision transformers on your own images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("models")
def models_cmd() -> None:
    """List the model aliases with their Hub ids and image sizes."""
    from vitune.models import list_models

    typer.echo(f"{'alias':<16} {'size':>4}  {'hub id':<48} note")
    for alias in list_models():
        typer.echo(f"{alias.name:<16} {alias.image_size:>4}  {alias.hub_id:<48} {alias.note}")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(UserError.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.UsageError):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
