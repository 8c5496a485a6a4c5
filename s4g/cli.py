"""The `s4g` command line: parse options, build a config, call the library.

Every command is registered with `@command(...)`, which turns the errors a user can cause
(UserInputError / ValueError / OSError naming a file or option) into a one-paragraph message
and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

import s4g

app = typer.Typer(
    name="s4g",
    help="Sample4Geo cross-view geo-localisation: train, mine hard negatives, evaluate, locate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
console = Console()


def fail(message: str) -> typer.Exit:
    """Print `message` as an error paragraph; return the Exit(2) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def command(*args, **kwargs) -> Callable:
    """app.command(...) whose user-caused errors end with a message and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except (ValueError, OSError) as err:
                raise fail(str(err)) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _version(value: bool) -> None:
    if value:
        console.print(f"s4g {s4g.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Sample4Geo cross-view geo-localisation."""


# ---- commands ------------------------------------------------------------------------------
# Each command lives in its own section below; keep a command's option parsing here and its
# work in the library module it calls.

# ---- section: neighbours (sampling) --------------------------------------------------------

# ---- section: synth (data) -----------------------------------------------------------------

# ---- section: eval, mine (evaluation) ------------------------------------------------------

# ---- section: train ------------------------------------------------------------------------

# ---- section: import-weights, index, locate ------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
