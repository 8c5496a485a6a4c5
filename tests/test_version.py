"""`s4g --version`: the package version and, where known, the git commit it was built from."""

from __future__ import annotations

import re
from importlib.metadata import version

from typer.testing import CliRunner

import s4g
from s4g.app.cli import app


def test_version_names_the_release_and_the_commit():
    commit = s4g.git_commit()
    assert re.fullmatch(r"([0-9a-f]{12})?", commit), commit
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"s4g {version('s4g')}" + (f" (commit {commit})" if commit else "") + "\n"
