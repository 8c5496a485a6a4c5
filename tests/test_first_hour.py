"""The first hour of a new user: help texts that say what options are, the README's command
list in order, quick and one-line answers to a missing path, Ctrl-C, a resumed run, and the
messages for an s4g checkpoint given as --weights and for a folder that takes no new file."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from probes import TINY_ARGS, child_env, cli_subprocess_args, squash
from typer.testing import CliRunner

from s4g import fileio
from s4g.app.cli import app
from s4g.app.jobs.evaluate import METRICS_FILE, MINED_FILE
from s4g.app.jobs.locate import GEOJSON_FILE
from s4g.app.jobs.neighbours import NEIGHBOURS_FILE
from s4g.app.rundir import is_run
from s4g.app.synth.cache import ensure_world
from s4g.data.registry import load_eval
from s4g.errors import UserInputError
from s4g.fileio import FIGURE, PNG_IMAGE, OutputKind
from s4g.model.checkpoint import CHECKPOINT_FILE
from s4g.retrieval.index import INDEX_EMBEDDINGS, INDEX_FILE
from s4g.retrieval.results import PER_QUERY_FILE

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


# The README's command list, top to bottom ------------------------------------------------------
#
# Every line of the "## Commands" block runs through the CLI in the order written, in one working
# folder, as a new user would type it. A line changes only where it names data or weights a CPU
# test cannot have, or a size such a test cannot afford; the table below says where and why.
# Inputs a line names relative to the working folder (points.csv, cvusa.pth, tiles/, tiles.csv,
# photo.jpg, runs/other) are made there first, so those names stay as written.

CVUSA_WORLD = "data/cvusa-synth"  # the first line's --out
# TINY_ARGS without --locations (a synthetic-only option) and with the ground image 32x128, so
# that `locate --fov 90` leaves the model 32 pixels of width; the paper's ConvNeXt-B, 40 epochs
# and ImageNet download are no test's to afford.
TRAIN_TINY = ("--backbone", "convnext_micro", "--no-pretrained", "--epochs", "1", "--aerial-size", "32",
              "--ground-size", "32", "128", "--batch-size", "8", "--eval-batch-size", "32", "--log-every", "2",
              "--workers", "0", "--device", "cpu")
CPU = ("--device", "cpu")  # the default picks a GPU where there is one; tests run on the CPU


def invoke_ok(words: list[str]) -> None:
    result = runner.invoke(app, words, catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, (words, result.output)


def the_run() -> Path:
    """The run folder the README's `s4g train` line made, named as `runs/cvusa-20261125-130000`."""
    found = sorted(Path("runs").glob("cvusa-*"))
    if not found:
        raise LookupError("no run yet")
    assert len(found) == 1 and re.fullmatch(r"cvusa-\d{8}-\d{6}", found[0].name), found
    return found[0]


def fill(word: str) -> str:
    return word.replace("{run}", str(the_run())) if "{run}" in word else word


def cvusa_test_split(root: str | Path = CVUSA_WORLD):
    return load_eval("cvusa", root)


def make_vigor_world() -> None:
    # 300 panoramas give more tiles than the 128 neighbours `neighbours` finds by default
    invoke_ok(["synth", "--layout", "vigor", "--out", "vigor", "--locations", "300"])


def make_points_csv() -> None:
    data = cvusa_test_split()
    Path("points.csv").write_text("lat,lon\n" + "".join(
        f"{lat},{lon}\n" for lat, lon in zip(data.reference_lat, data.reference_lon)))


def make_released_weights() -> None:
    import torch
    from timm.models.convnext import ConvNeXt

    # Sample4Geo's release: timm's ConvNeXt under DataParallel's `module.` and its `model.`,
    # beside the loss temperature; convnext_micro's depths and widths keep it small.
    model = ConvNeXt(depths=(1, 1, 2, 1), dims=(24, 48, 96, 192), num_classes=0)
    state = {f"module.model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": {**state, "module.logit_scale": torch.tensor(2.659)}}, "cvusa.pth")


def make_tiles() -> None:
    data = cvusa_test_split()
    Path("tiles").mkdir()
    rows = ["file,lat,lon"]
    for path, lat, lon in zip(data.reference_files, data.reference_lat, data.reference_lon):
        shutil.copy(path, Path("tiles") / Path(path).name)
        rows.append(f"{Path(path).name},{lat},{lon}")
    Path("tiles.csv").write_text("\n".join(rows) + "\n")


def make_photo() -> None:
    shutil.copy(cvusa_test_split().query_files[0], "photo.jpg")


def make_second_run() -> None:
    invoke_ok(["train", "--dataset", "cvusa", "--data-root", CVUSA_WORLD, *TRAIN_TINY, "--seed", "1",
               "--out", "runs/other"])


def written_as(kind: OutputKind) -> Callable[[Path], None]:
    """A check that s4g wrote a file as `kind` (the rule by which --overwrite replaces it)."""

    def check(path: Path) -> None:
        assert path.is_file() and kind.matches(path), f"{path} is not {kind.description}"

    return check


def a_world(path: Path) -> None:
    manifest = json.loads((path / "s4g_synth_manifest.json").read_text())
    assert manifest["complete"] is True and len(cvusa_test_split(path).query_files) > 0


def a_run(path: Path) -> None:
    assert is_run(path) and (path / "best.pt").is_file() and (path / "metrics.jsonl").stat().st_size > 0


@dataclasses.dataclass(frozen=True)
class Line:
    """How the test runs the README lines that start with its key. replace: a word of the line
    -> the word used instead ("" drops it; {run} is the run folder the train line made); add:
    arguments appended; before: makes the inputs the line names; writes: each output -> the
    check that s4g wrote it; with_options: the same with the optional [...] parts included."""

    why: str
    replace: dict[str, str] = dataclasses.field(default_factory=dict)
    add: tuple[str, ...] = ()
    before: Callable[[], None] | None = None
    writes: dict[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict)
    with_options: dict[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict)


RUN_AS = {
    "s4g synth --layout cvusa": Line(
        "a world a CPU trains on in seconds, with more than the 128 training tiles `mine --k 128` needs",
        replace={"1000": "180"}, writes={CVUSA_WORLD: a_world}),
    "s4g train --dataset cvusa": Line(
        "the first line's world stands in for CVUSA; a tiny model, one epoch, no download",
        replace={"/data/CVUSA": CVUSA_WORLD}, add=TRAIN_TINY, writes={"{run}": a_run}),
    "s4g eval --checkpoint": Line(
        "train names its run folder by the time it started",
        replace={"runs/cvusa-20261125-130000/best.pt": "{run}/best.pt"}, add=CPU,
        writes={"{run}/eval-cvusa-test.json": written_as(METRICS_FILE)}),
    "s4g eval --overwrite": Line(
        "as written (on the CPU)", add=CPU, writes={"{run}/eval-cvusa-test.json": written_as(METRICS_FILE)}),
    "s4g eval --overwrite --per-query": Line(
        "as written (on the CPU)", add=CPU,
        writes={"{run}/eval-cvusa-test.json": written_as(METRICS_FILE), "per_query.csv": written_as(PER_QUERY_FILE),
                "examples.png": written_as(PNG_IMAGE)}),
    "s4g mine": Line(
        "`...` stands for the run folder", replace={"runs/.../best.pt": "{run}/best.pt"}, add=CPU,
        writes={"hard.npz": written_as(MINED_FILE)}),
    "s4g plot": Line(
        "the run folder by its real name; runs/other is a second run made first; `...` (more runs) dropped",
        replace={"runs/cvusa-20261125-130000": "{run}", "...": ""}, before=make_second_run,
        writes={"{run}/curves.png": written_as(FIGURE)}, with_options={"curves.png": written_as(FIGURE)}),
    "s4g neighbours --dataset vigor-same": Line(
        "a world in VIGOR's layout from `s4g synth --layout vigor` stands in for VIGOR",
        replace={"/data/VIGOR": "vigor"}, before=make_vigor_world, writes={"gps.npz": written_as(NEIGHBOURS_FILE)}),
    "s4g neighbours --coords": Line(
        "points.csv: the lat, lon of the world's test tiles", before=make_points_csv,
        writes={"nn.npz": written_as(NEIGHBOURS_FILE)}),
    "s4g import-weights": Line(
        "cvusa.pth: a random ConvNeXt-micro in the released Sample4Geo layout", before=make_released_weights,
        writes={"cvusa-s4g.pt": written_as(CHECKPOINT_FILE)}),
    "s4g index": Line(
        "ckpt.pt: the trained run's checkpoint; tiles/ and tiles.csv: the world's test tiles and centres",
        replace={"ckpt.pt": "{run}/best.pt"}, add=CPU, before=make_tiles,
        writes={"tiles.json": written_as(INDEX_FILE), "tiles.npy": written_as(INDEX_EMBEDDINGS)}),
    "s4g locate": Line(
        "photo.jpg: a test panorama of the world", add=CPU, before=make_photo,
        with_options={"found.geojson": written_as(GEOJSON_FILE), "found.png": written_as(PNG_IMAGE)}),
}


def readme_commands() -> list[str]:
    """The lines of the first ```bash block under the README's "## Commands"."""
    section = README.read_text().split("\n## Commands\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def variants(line: str) -> list[list[str]]:
    """The words of a README line without its optional [...] parts and, if it has any, with them."""
    words: list[tuple[str, bool]] = []
    depth = 0
    for word in shlex.split(line, comments=True):
        if word.startswith("["):
            depth, word = depth + 1, word[1:]
        closes = word.endswith("]")
        words.append((word[:-1] if closes else word, depth > 0))
        depth -= closes
    assert depth == 0, f"unbalanced [ ] in {line!r}"
    plain = [w for w, optional in words if not optional]
    return [plain] if len(plain) == len(words) else [plain, [w for w, _ in words]]


def stamp(path: str) -> tuple[int, int] | None:
    """(inode, mtime) of an output before a line runs; None when it does not exist yet."""
    try:
        st = Path(fill(path)).stat()
    except (LookupError, FileNotFoundError):
        return None
    return st.st_ino, st.st_mtime_ns


def test_the_readme_command_list_runs_top_to_bottom(tmp_path, monkeypatch):
    """Every line of the README's "## Commands" block, in order, with only the changes RUN_AS lists."""
    pytest.importorskip("matplotlib", reason="`s4g plot` needs the plot extra (in the test extra)")
    pytest.importorskip("timm", reason="the released Sample4Geo layout is timm's ConvNeXt (in the test extra)")
    monkeypatch.chdir(tmp_path)  # the lines name their files relative to the working folder
    lines = readme_commands()
    assert lines and all(line.startswith("s4g ") for line in lines), lines
    used = set()
    for line in lines:
        text = " ".join(variants(line)[-1])
        keys = [key for key in RUN_AS if text == key or text.startswith(key + " ")]
        assert keys, f"README line {line!r} has no entry in RUN_AS: say how the test runs it"
        key = max(keys, key=len)
        used.add(key)
        how = RUN_AS[key]
        missing = set(how.replace) - set(variants(line)[-1])
        assert not missing, f"RUN_AS[{key!r}] replaces {missing}, which {line!r} no longer has"
        if how.before:
            how.before()
        for words, writes in zip(variants(line), (how.writes, how.with_options)):
            before = {path: stamp(path) for path in writes}
            args = [fill(how.replace.get(w, w)) for w in words[1:] if how.replace.get(w, w)]
            invoke_ok([*args, *how.add])
            for path, check in writes.items():
                assert stamp(path) not in (None, before[path]), f"{words}: did not write {path}"
                check(Path(fill(path)))
    assert used == set(RUN_AS), f"RUN_AS entries no README line uses: {set(RUN_AS) - used}"
