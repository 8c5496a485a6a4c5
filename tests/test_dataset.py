"""PairDataset / ImageDataset: shapes, determinism per (seed, epoch, index), DataLoader with a
batch sampler and worker processes, and skipping undecodable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from s4g.data.records import TrainSet
from s4g.errors import UserInputError
from s4g.pipeline.augment import PhotoParams
from s4g.pipeline.dataset import (
    BAD_CLASS,
    BadImageWarning,
    ImageDataset,
    PairDataset,
    collate_pairs,
)
from s4g.pipeline.images import load_image
from s4g.pipeline.transforms import View, crop_fov, eval_transform


def make_pairs(root: Path, n: int = 6) -> TrainSet:
    rng = np.random.default_rng(0)
    ground, aerial = [], []
    for i in range(n):
        g, a = root / f"g{i}.jpg", root / f"a{i}.png"
        Image.fromarray((rng.random((16, 64, 3)) * 255).astype(np.uint8)).save(g, quality=95)
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(a)
        ground.append(str(g))
        aerial.append(str(a))
    lat = np.linspace(0, 1, n)
    return TrainSet("t", ground, aerial, np.arange(n, dtype=np.int64), lat, lat)


def test_items_shapes_and_determinism(tmp_path):
    ts = make_pairs(tmp_path)
    ds = PairDataset(ts, View(12, (8, 32), seed=3))
    g, a, c, gp, ap = ds[2]
    assert g.shape == (3, 8, 32) and a.shape == (3, 12, 12) and c == 2 and g.dtype == torch.uint8
    assert isinstance(gp, PhotoParams) and isinstance(ap, PhotoParams)
    torch.manual_seed(123)  # the caller's global RNG neither matters nor is consumed
    before = torch.get_rng_state()
    g2, a2, _, gp2, ap2 = ds[2]
    assert torch.get_rng_state().equal(before)
    assert g.equal(g2) and a.equal(a2)
    assert all(x.equal(y) for x, y in zip(gp + ap, gp2 + ap2))
    ds.set_epoch(1)
    g3, a3, _, gp3, _ = ds[2]
    assert not (g3.equal(g) and a3.equal(a) and all(x.equal(y) for x, y in zip(gp, gp3)))
    other = PairDataset(ts, View(12, (8, 32), seed=4))
    assert not all(x.equal(y) for x, y in zip(other[2][3], gp))


def test_dataloader_batch_sampler_two_workers(tmp_path):
    ts = make_pairs(tmp_path)
    ds = PairDataset(ts, View(12, (8, 64), fov=180, random_heading=True, seed=0))
    batches = np.array([[4, 1, 0], [2, 5, 3]], dtype=np.int64)
    ds.set_epoch(2)
    with torch.random.fork_rng(devices=[]):
        got = list(DataLoader(ds, batch_sampler=batches.tolist(), num_workers=2))
    serial = list(DataLoader(ds, batch_sampler=batches.tolist(), num_workers=0))
    assert len(got) == 2
    for (g, a, c, gp, ap), (sg, sa, sc, sgp, sap), want in zip(got, serial, batches):
        assert g.shape == (3, 3, 8, 32) and a.shape == (3, 3, 12, 12)
        assert c.tolist() == want.tolist()
        assert g.equal(sg) and a.equal(sa) and c.equal(sc)
        assert all(x.equal(y) for x, y in zip(gp + ap, sgp + sap))


def test_bad_image_raises_or_is_skipped(tmp_path):
    ts = make_pairs(tmp_path)
    Path(ts.query_files[1]).write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    with pytest.raises(UserInputError, match="g1.jpg"):
        PairDataset(ts, View(12, (8, 32)))[1]
    ds = PairDataset(ts, View(12, (8, 32)), skip_bad_images=True)
    with pytest.warns(BadImageWarning, match="g1.jpg"):
        item = ds[1]
    assert item[2] == BAD_CLASS and ds.bad_items == 1
    with pytest.warns(BadImageWarning):
        g, a, c, gp, _ = collate_pairs([ds[0], ds[1], ds[2]])
    assert c.tolist() == [0, 2] and g.shape == (2, 3, 8, 32) and a.shape == (2, 3, 12, 12)
    assert gp.holes.shape == (2, 25, 4)
    with pytest.warns(BadImageWarning):
        g, a, c, gp, _ = collate_pairs([ds[1]])
    assert g.shape == (0, 3, 8, 32) and c.numel() == 0 and gp.holes.shape == (0, 25, 4)


def test_drone_pairs_use_square_ground(tmp_path):
    ts = make_pairs(tmp_path)
    drone = TrainSet("u", ts.reference_files, ts.reference_files, ts.pair_class, None, None, query_kind="drone")
    g, a, *_ = PairDataset(drone, View(12, (10, 10), fov=90))[0]  # fov is ignored for drone photos
    assert g.shape == (3, 10, 10) and a.shape == (3, 12, 12)


def test_image_dataset_headings(tmp_path):
    ts = make_pairs(tmp_path)
    files = ts.query_files
    plain = ImageDataset(files, View(16, (16, 64)), "panorama")
    x, i = plain[3]
    torch.testing.assert_close(x, eval_transform((16, 64))(load_image(files[3])))
    assert i == 3
    east = ImageDataset(files, View(16, (16, 64), fov=90, heading_deg=90), "panorama")[0][0]
    want = eval_transform((16, 16))(crop_fov(load_image(files[0]), 90, 90))
    torch.testing.assert_close(east, want)
    random = View(16, (16, 64), fov=90, random_heading=True, seed=5)
    rnd = ImageDataset(files, random, "panorama")
    headings = [rnd.heading(k) for k in range(len(files))]
    assert len(set(headings)) == len(files) and all(0 <= h < 360 for h in headings)
    assert headings == [ImageDataset(files, random, "panorama").heading(k) for k in range(6)]
    with pytest.raises(UserInputError, match="--fov"):
        ImageDataset(files, View(16, (16, 16), random_heading=True), "panorama")
