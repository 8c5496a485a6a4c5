"""The first hour of a new user: help texts that say what options are, the README's command
list in order, quick and one-line answers to a missing path, Ctrl-C, a resumed run, and the
messages for an s4g checkpoint given as --weights and for a folder that takes no new file."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
from probes import TINY_ARGS, child_env, cli_subprocess_args, squash
from typer.testing import CliRunner

from s4g import fileio
from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world
from s4g.errors import UserInputError

runner = CliRunner()
COMMANDS = ("synth", "neighbours", "train", "eval", "mine", "plot", "import-weights", "index", "locate")
README = Path(__file__).resolve().parents[1] / "README.md"


def help_of(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_keeps_brackets_and_shows_no_python_types():
    assert 's4g[plot]' in help_of("plot") and "s4g[timm]" in help_of("train")
    for command in COMMANDS:
        text = help_of(command)
        assert "<bool>" not in text and "<list[" not in text, command


def test_train_help_says_what_preset_options_are_and_their_values():
    from s4g.data import registry as datasets
    from s4g.model.encoder import BACKBONES

    text = squash(help_of("train"))
    from s4g.app.cli.options import BACKBONES as CLI_BACKBONES

    assert set(CLI_BACKBONES) == set(BACKBONES)  # the help's list is the model registry's
    assert all(name in text for name in BACKBONES)
    for option, field in (("--epochs", "epochs"), ("--aerial-size", "aerial_size"), ("--eval-split", "eval_split")):
        value = getattr(datasets.get("cvusa").preset, field)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        segment = text.split(option, 1)[1][:400]  # the option's own help, then the next ones'
        assert squash(f"{shown} (cvusa") in segment, option
    assert all(squash(words) in text for words in ("Training epochs", "Peak learning rate", "weight decay"))


def test_the_default_workers_fit_the_machine():
    from s4g.config import usable_cpus
    from s4g.data import registry as datasets

    for name in ("cvusa", "vigor-same", "university-d2s"):
        assert datasets.train_config(name).workers <= usable_cpus()
    assert datasets.train_config("cvusa", workers=7).workers == 7


def test_a_missing_path_is_answered_before_torch_loads(tmp_path):
    prelude = "import atexit, sys\natexit.register(lambda: print('torch loaded:', 'torch' in sys.modules))"
    for args in (["eval", "--checkpoint", "missing.pt"], ["mine", "--checkpoint", "missing.pt", "--out", "x.npz"],
                 ["train", "--resume", "missing-run"], ["import-weights", "missing.pth", "--out", "x.pt"]):
        done = subprocess.run(cli_subprocess_args(*args, prelude=prelude), capture_output=True, text=True,
                              env=child_env(), cwd=tmp_path, timeout=600)
        assert done.returncode == 2 and "missing" in done.stderr, done.stderr
        assert "torch loaded: False" in done.stdout, (args, done.stdout)


def test_output_that_is_not_a_terminal_keeps_long_lines_whole(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "points.csv"
    deep.parent.mkdir()
    deep.write_text("lat,lon\n" + "".join(f"{i * 0.01},{i * 0.02}\n" for i in range(10)))
    done = subprocess.run(cli_subprocess_args("neighbours", "--coords", str(deep), "--k", "2", "--out",
                                              str(deep.parent / "nn.npz")),
                          capture_output=True, text=True, env={**child_env(), "COLUMNS": "80"}, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "points from" in x)
    assert str(deep) in line and str(deep.parent / "nn.npz") in line


def test_ctrl_c_says_one_line_and_exits_130(tmp_path, monkeypatch):
    import s4g.sampling

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(s4g.sampling, "gps_neighbours", interrupted)
    pts = tmp_path / "pts.csv"
    pts.write_text("lat,lon\n" + "".join(f"{i * 0.01},{i * 0.02}\n" for i in range(10)))
    result = runner.invoke(app, ["neighbours", "--coords", str(pts), "--k", "2", "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 130
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0]
    assert not (tmp_path / "o.npz").exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return ensure_world(tmp_path_factory.mktemp("synth") / "world", locations=60, seed=0)


def test_best_r1_counts_epoch_0_and_resume_names_its_epoch(world, tmp_path, monkeypatch):
    import s4g.app.jobs.train.loop as loop

    real = loop._evaluate

    def scored(*args, epoch, **kwargs):  # an untrained model that scores better than the trained one
        r1 = real(*args, epoch=epoch, **kwargs)
        return 99.0 if epoch == 0 else min(r1, 1.0)

    monkeypatch.setattr(loop, "_evaluate", scored)
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--data-root", str(world), "--out", str(out), *TINY_ARGS]
    result = runner.invoke(app, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert squash("R@1 99.00 at epoch 0, before training") in squash(result.output)
    monkeypatch.setattr(loop, "_evaluate", real)
    result = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert squash(f"resuming {out / 'last.pt'}: epoch 1 of 2 done, continuing with epoch 2") in squash(result.output)
    # eval's table shows AP, as training's log line does
    result = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--device", "cpu"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert re.search(r"\bAP\b", result.output)


def test_an_s4g_checkpoint_given_as_weights_is_named(world, tmp_path):
    from s4g.model.checkpoint import save_checkpoint
    from s4g.model.encoder import build_model
    from s4g.model.weights import initial_model

    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, build_model("convnext_micro"), {"dataset": "synthetic"}, epoch=3)
    with pytest.raises(UserInputError) as caught:
        initial_model("convnext_micro", weights_file=ckpt)
    message = str(caught.value)
    assert "is an s4g checkpoint" in message and f"--resume {ckpt}" in message and "epoch 3" in message
    assert len(message) < 600  # one paragraph, not the model's key names


def test_offline_hub_is_asked_once_then_left(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    from s4g.model import weights

    def no_network(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights.socket, "create_connection", no_network)
    with pytest.raises(UserInputError, match="--weights FILE"):
        weights._timm_state_dict("convnext_tiny")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_folder_that_takes_no_new_file_is_named_not_the_temporary(tmp_path, monkeypatch):
    out = tmp_path / "ro" / "metrics.json"
    out.parent.mkdir()

    def refused(prefix, suffix, dir):
        raise PermissionError(errno.EPERM, "Operation not permitted", os.path.join(dir, f"{prefix}abcd1234{suffix}"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refused)
    with pytest.raises(OSError) as caught:
        fileio.save_json(out, {"a": 1})
    assert caught.value.filename == str(out) and "could not be written" in caught.value.strerror
    assert "tmp" not in caught.value.strerror


def test_the_readme_eval_lines_run_in_order(world, tmp_path, monkeypatch):
    """The README's `s4g eval` lines, one after the other, on a run of the synthetic world."""
    block = README.read_text().split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("s4g eval")]
    assert len(lines) >= 3
    monkeypatch.chdir(tmp_path)  # the lines name their outputs relative to the working folder
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--data-root", str(world), "--out",
                                 str(runs / "cvusa-20261125-130000"), "--epochs", "1", *TINY_ARGS])
    assert result.exit_code == 0, result.output
    for words in lines:
        args = [w.replace("runs/", f"{runs}/") for w in words[1:]]
        result = runner.invoke(app, [*args, "--device", "cpu", "--runs-dir", str(runs)], catch_exceptions=False)
        assert result.exit_code == 0, (words, result.output)
