"""The CLI's error contract: a user's mistake is one paragraph and exit 2; a bug in s4g keeps
its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.cli.app import user_error_message
from s4g.errors import UserInputError

runner = CliRunner()


def _coords(tmp_path):
    path = tmp_path / "pts.csv"
    path.write_text("lat,lon\n0,0\n0,1\n1,0\n")
    return path


def test_user_errors_become_one_paragraph(tmp_path):
    assert user_error_message(UserInputError("--k 0: must be at least 1")) == "--k 0: must be at least 1"
    err = FileNotFoundError(2, "No such file or directory", "/data/x.csv")
    assert user_error_message(err) == "/data/x.csv: No such file or directory"
    assert user_error_message(OSError("no file named")) is None
    assert user_error_message(ValueError("bug")) is None
    # an output under a regular file: the file edge names the path
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["neighbours", "--coords", str(_coords(tmp_path)), "--k", "1",
                              "--out", str(blocker / "nn.npz")])
    assert res.exit_code == 2 and str(blocker) in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 3  # one paragraph (rich may wrap it)


@pytest.mark.parametrize("error", ["ValueError('a bug inside s4g')", "OSError('a bug without a file')"])
def test_a_bug_shows_its_traceback(tmp_path, error):
    # A deliberate internal error: the GPS k-NN raises something that is not the user's fault.
    code = (
        "import sys, s4g.sampling\n"
        f"def broken(*a, **k): raise {error}\n"
        "s4g.sampling.gps_neighbours = broken\n"
        "from s4g.app.cli import main\n"
        "sys.argv = ['s4g'] + sys.argv[1:]\n"
        "main()\n"
    )
    args = ["neighbours", "--coords", str(_coords(tmp_path)), "--k", "1", "--out", str(tmp_path / "nn.npz")]
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "Traceback" in out.stderr and "a bug" in out.stderr
    assert not (tmp_path / "nn.npz").exists()
