"""DataLoader workers started by `spawn`, the default on macOS and Windows: s4g's own loaders
(training pairs, embedding) hand their workers only importable, picklable objects, and the
batches equal those made in-process. Linux defaults to `fork`, which hides a lambda or a
local function; forcing `spawn` here shows it on every platform."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import torch
from test_dataset import make_pairs
from torch.utils.data import DataLoader

import s4g.app.jobs.train.loop
import s4g.retrieval.embed
from s4g.distributed import DistEnv
from s4g.pipeline.dataset import PairDataset
from s4g.pipeline.transforms import View

CPU_ENV = DistEnv(0, 1, 0, torch.device("cpu"))


def spawning(monkeypatch, module) -> None:
    monkeypatch.setattr(module, "DataLoader", functools.partial(DataLoader, multiprocessing_context="spawn"))


def test_training_loader_under_spawn(tmp_path, monkeypatch):
    data = SimpleNamespace(pairs=PairDataset(make_pairs(tmp_path), View(12, (8, 64), fov=180, random_heading=True)))
    batches = np.array([[4, 1, 0], [2, 5, 3]], dtype=np.int64)
    serial = list(s4g.app.jobs.train.loop._loader(SimpleNamespace(workers=0), data, batches, 1, CPU_ENV))
    spawning(monkeypatch, s4g.app.jobs.train.loop)
    loader = s4g.app.jobs.train.loop._loader(SimpleNamespace(workers=2), data, batches, 1, CPU_ENV)
    assert loader.multiprocessing_context is not None
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    got = list(loader)
    assert len(got) == len(serial) == 2
    for batch, want in zip(got, serial):
        for x, y in zip(batch, want):
            if isinstance(x, torch.Tensor):
                assert x.equal(y)
            else:
                assert all(a.equal(b) for a, b in zip(x, y))


def test_embedding_loader_under_spawn(tmp_path, monkeypatch):
    files = make_pairs(tmp_path).reference_files
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    embed = functools.partial(s4g.retrieval.embed.embed_files, model, files, View(8, (8, 8)), "aerial", device="cpu",
                              batch_size=4, progress=False)
    serial = embed(workers=0)
    spawning(monkeypatch, s4g.retrieval.embed)
    got = embed(workers=2)
    assert serial.shape == got.shape == (len(files), 4)
    np.testing.assert_array_equal(got, serial)
