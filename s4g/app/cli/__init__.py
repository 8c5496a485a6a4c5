"""The `s4g` command line: parse options, build a config, call the library.

Each command lives in the module of its capability; importing them registers them on the
app in the order `s4g --help` lists them.
"""

# Imported for their side effect, in the order `s4g --help` lists the commands.
from s4g.app.cli import data, train, evaluate, plot, weights, locate  # noqa: F401, I001
from s4g.app.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
