"""Checkpoints carry a SHA-256 of their content, checked at every load: a changed byte, a
removed entry or a crafted pickle is one paragraph naming the file, never a silently
different model or a KeyError."""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from probes import assert_unchanged, error_paragraph, snapshot
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.errors import UserInputError
from s4g.model.checkpoint import (
    CHECKPOINT_VERSION,
    UnverifiedCheckpointWarning,
    load_checkpoint,
    payload_digest,
    read_checkpoint,
    save_checkpoint,
)
from s4g.model.encoder import build_model

runner = CliRunner()
CONFIG = {"dataset": "cvusa", "data_root": "/nowhere", "aerial_size": 64, "ground_size": [32, 128]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, build_model("convnext_micro"), CONFIG, epoch=3, extra={"ids": (1, 2), "none": None})
    return path


def flip_a_weight_byte(src: Path, dest: Path) -> Path:
    """A copy of `src` with one byte changed in the middle of its largest tensor record."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        record = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len
    data[start + record.file_size // 2] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def resave(src: Path, dest: Path, change, *, seal: bool = True) -> Path:
    payload = torch.load(src, weights_only=True)
    change(payload)
    if seal:
        payload["sha256"] = payload_digest(payload)
    torch.save(payload, dest)
    return dest


def test_the_digest_survives_save_and_load_and_sees_every_change(saved):
    loaded = torch.load(saved, weights_only=True)
    assert loaded["version"] == CHECKPOINT_VERSION and loaded["sha256"] == payload_digest(loaded)
    tensors = {"bf16": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "scalar": torch.tensor(1.5),
               "empty": torch.zeros(0), "flags": torch.tensor([True, False])}
    base = {"a": 1, "b": [1.0, None, "x", (2, 3)], 7: tensors}
    digest = payload_digest(base)
    for changed in ({**base, "a": True}, {**base, "a": 1.0}, {**base, "b": [1.0, None, "x", (2, 4)]},
                    {**base, 7: {**tensors, "scalar": torch.tensor(1.5000001)}},
                    {**base, 7: {**tensors, "bf16": tensors["bf16"].reshape(3, 2)}},
                    {**base, 7: {**tensors, "flags": torch.tensor([1, 0], dtype=torch.uint8)}}):
        assert payload_digest(changed) != digest
    assert payload_digest({**base, "sha256": "ignored"}) == digest


def test_a_changed_weight_byte_is_refused(saved, tmp_path):
    damaged = flip_a_weight_byte(saved, tmp_path / "damaged.pt")
    before = snapshot(tmp_path)
    message = error_paragraph(runner.invoke(app, ["eval", "--checkpoint", str(damaged), "--device", "cpu"]))
    assert str(damaged) in message and "checksum mismatch" in message
    assert_unchanged(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.pt"]  # no eval file written


@pytest.mark.parametrize("entry", ["model", "config", "backbone"])
def test_a_missing_entry_is_named(saved, tmp_path, entry):
    for seal in (True, False):  # with a matching checksum, and as an old file without one
        def drop(p, seal=seal):
            del p[entry]
            if not seal:
                p.update(version=1)
                p.pop("sha256")
        path = resave(saved, tmp_path / f"no-{entry}-{seal}.pt", drop, seal=seal)
        before = snapshot(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
            result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--device", "cpu"])
        message = error_paragraph(result)
        assert f"'{entry}' entry" in message and str(path) in message and "KeyError" not in message
        assert_unchanged(before)


def test_a_model_entry_that_is_not_a_state_dict(saved, tmp_path):
    path = resave(saved, tmp_path / "odd.pt", lambda p: p["model"].update({"stem": 3}))
    with pytest.raises(UserInputError, match="'stem' is not a tensor"):
        load_checkpoint(path)


def test_resume_needs_the_training_state(saved, tmp_path):
    with pytest.raises(UserInputError, match="'loss' entry .* cannot resume"):
        read_checkpoint(saved, run_state=True)
    result = runner.invoke(app, ["train", "--resume", str(saved)])
    assert "'loss' entry" in error_paragraph(result)


def test_a_removed_checksum_and_a_newer_version_are_refused(saved, tmp_path):
    unsealed = resave(saved, tmp_path / "unsealed.pt", lambda p: p.pop("sha256"), seal=False)
    with pytest.raises(UserInputError, match="checksum entry has been removed"):
        load_checkpoint(unsealed)
    newer = resave(saved, tmp_path / "newer.pt", lambda p: p.update(version=CHECKPOINT_VERSION + 1))
    with pytest.raises(UserInputError, match="newer than this s4g reads"):
        load_checkpoint(newer)


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(saved, tmp_path):
    def old(p):
        p.pop("sha256")
        p["version"] = 1
    path = resave(saved, tmp_path / "old.pt", old, seal=False)
    with pytest.warns(UnverifiedCheckpointWarning, match="cannot be detected"):
        model, config = load_checkpoint(path)
    want, _ = load_checkpoint(saved)
    assert config == CONFIG
    for key, value in want.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_a_crafted_pickle_is_refused_with_the_informative_line(tmp_path):
    class Crafted:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "crafted.pt"
    torch.save({"format": "s4g-checkpoint", "model": Crafted()}, path)
    message = error_paragraph(runner.invoke(app, ["eval", "--checkpoint", str(path), "--device", "cpu"]))
    assert "posix.system" in message and str(path) in message
    assert "weights_only" not in message and "arbitrary code" not in message


def test_save_and_load_at_a_path_that_is_not_utf8(tmp_path):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.pt"))
    try:
        path.write_bytes(b"")
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    save_checkpoint(path, build_model("convnext_micro"), CONFIG)
    assert load_checkpoint(path)[1] == CONFIG


@pytest.mark.parametrize("value, named", [(np.float64(0.5), "numpy.float64"), (np.int64(3), "numpy.int64"),
                                          (np.bool_(True), "numpy.bool"), (np.str_("a"), "numpy.str_")])
def test_a_value_that_would_not_load_again_is_refused_at_save_time(tmp_path, value, named):
    """numpy.float64 and numpy.str_ subclass float and str, yet torch.load(weights_only=True)
    refuses them: saving one must fail then, naming the entry, not leave a file that never loads."""
    path = tmp_path / "best.pt"
    with pytest.raises(TypeError, match=rf"the checkpoint\['config'\]\['lr'\]\[1\] is a {named}") as caught:
        save_checkpoint(path, build_model("convnext_micro"), {**CONFIG, "lr": [0.1, value]})
    assert not isinstance(caught.value, UserInputError)  # a bug in the caller, with its traceback
    assert not path.exists() and list(tmp_path.iterdir()) == []
