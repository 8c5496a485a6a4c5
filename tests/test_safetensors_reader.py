"""The .safetensors reader maps the file instead of copying it: every tensor is a view of one
copy-on-write mapping, equal to what the safetensors package writes, and changing a loaded
tensor never changes the file."""

from __future__ import annotations

import pytest
import torch

from s4g.model.weightfile import load_safetensors


def test_tensors_are_views_of_one_mapping(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file  # timm's dependency: an independent writer
    written = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int16),
               "c": torch.randn(2, dtype=torch.float64), "d": torch.tensor([True, False]), "e": torch.empty(0)}
    path = tmp_path / "w.safetensors"
    save_file(written, str(path))
    before = path.read_bytes()
    loaded = load_safetensors(path)
    assert all(torch.equal(written[k], loaded[k]) and written[k].dtype == loaded[k].dtype for k in written)
    storages = {loaded[k].untyped_storage().data_ptr() for k in ("a", "b", "c")}
    assert len(storages) == 1  # one mapping of the file, no copy per tensor
    loaded["a"][0, 0] = 123.0
    assert path.read_bytes() == before
