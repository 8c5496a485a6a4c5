"""The `s4g` Typer app and its error contract.

A command turns a user's mistake into one paragraph on stderr and exit code 2: a
UserInputError (raised wherever s4g checks its input), or an OSError on a named file (the
file edge: a missing input, an unwritable output, a full disk). Anything else is a bug in
s4g and keeps its traceback.

Command modules import the library (and with it torch) inside each command, so that
`s4g --help` and option errors answer without loading torch; the registry of datasets and
the config types they need for choices and help text are light and imported at the top.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Annotated

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

import s4g
from s4g.errors import UserInputError
from s4g.flags import Flag

app = typer.Typer(
    name="s4g",
    help="Sample4Geo cross-view geo-localisation: train, mine hard negatives, evaluate, locate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: "s4g[plot]" and "[lon, lat]" are not rich markup
    rich_markup_mode=None,
)
err_console = Console(stderr=True)
console = Console()
for _console in (console, err_console):
    # Output read by a program or saved to a file keeps its lines whole, not cut at 80 columns.
    _console.soft_wrap = not _console.is_terminal

# typer labels an argument by its annotation ("<list[Path]>"); an argument's metavar
# (RUN_DIR..., PHOTO...) names it better, so one given replaces the label.
_argument_type = typer.core.TyperArgument.display_type_rich
typer.core.TyperArgument.display_type_rich = (  # type: ignore[method-assign]
    lambda self, ctx: None if self.metavar else _argument_type(self, ctx))

def fail(message: str) -> typer.Exit:
    """Print `message` as an error paragraph; return the Exit(2) to raise."""
    # escaped: a message may hold square brackets (an extra's name, a file name) that rich
    # would otherwise read as markup and drop
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def user_error_message(err: BaseException) -> str | None:
    """The paragraph for an error the user caused, or None for a bug (keep its traceback)."""
    if isinstance(err, UserInputError):
        # A DataLoader worker's error comes back as "Caught ... Original Traceback ...": keep
        # the message the worker raised.
        text = str(err)
        marker = f"{UserInputError.__module__}.{UserInputError.__name__}: "
        return text.rsplit(marker, 1)[1].strip() if text.startswith("Caught ") and marker in text else text
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return None


def command(*args, **kwargs) -> Callable:
    """app.command(...) whose user-caused errors end with a paragraph and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                    return fn(*a, **kw)
            except (UserInputError, OSError) as err:
                message = user_error_message(err)
                if message is None:
                    raise
                raise fail(message) from None
            except KeyboardInterrupt:
                err_console.print("interrupted (Ctrl-C): every file s4g wrote is whole; a training run "
                                  f"continues with {Flag.RESUME} RUN_DIR", soft_wrap=True, highlight=False)
                raise typer.Exit(code=130) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def require_paths(*given: tuple) -> None:
    """UserInputError naming the first of the (option as spelled, path[, what it should be])
    whose path is given but does not exist; called first, so the answer does not wait for
    torch to load."""
    for option, path, *what in given:
        if path is not None and not path.exists():
            raise UserInputError(f"{option} {path}: no such {what[0] if what else 'file or folder'}")


def _show_warning(default: Callable, message, category, *args, **kwargs) -> None:
    """s4g's own warnings as one "warning:" paragraph; others as Python shows them."""
    if category.__module__.split(".")[0] != "s4g":
        return default(message, category, *args, **kwargs)
    err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        commit = s4g.git_commit()
        console.print(f"s4g {s4g.__version__}" + (f" (commit {commit})" if commit else ""), highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(Flag.VERSION, callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Sample4Geo cross-view geo-localisation."""
