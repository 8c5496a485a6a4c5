"""Batched photometric augmentation: each op against its per-image definition on fixed
parameters, the drawn distribution, and determinism per (seed, epoch, index) whatever the
workers and the split of a batch across ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import photo
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.v2 import functional as F

from s4g.data import augment as A
from s4g.data.dataset import PairDataset, collate_pairs
from s4g.data.jpeg import jpeg_roundtrip
from s4g.data.records import TrainSet
from s4g.distributed import DistEnv, rank_share

N, H, W = 6, 24, 40


@pytest.fixture
def images() -> torch.Tensor:
    return torch.stack([photo(H, W, seed) for seed in range(N)])


@pytest.fixture
def floats(images) -> torch.Tensor:
    return F.to_dtype(images, torch.float32, scale=True)


FACTORS = torch.tensor([0.85, 0.9, 1.0, 1.05, 1.12, 1.15])


@pytest.mark.parametrize(("batched", "one"), [
    (A.brightness, F.adjust_brightness), (A.contrast, F.adjust_contrast), (A.saturation, F.adjust_saturation)])
def test_colour_ops_match_torchvision_per_image(floats, batched, one):
    out = batched(floats, FACTORS)
    want = torch.stack([one(x, float(f)) for x, f in zip(floats, FACTORS)])
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


def _hue_one(x: torch.Tensor, theta: float) -> torch.Tensor:
    """One image's hue rotation written out: RGB -> YIQ, turn (I, Q) by theta, back, clamp."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = math.cos(theta), math.sin(theta)
    m = np.linalg.inv(to_yiq) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ to_yiq
    return torch.einsum("ij,jhw->ihw", torch.as_tensor(m, dtype=torch.float32), x).clamp(0, 1)


def test_hue_rotation_matches_its_definition_keeps_luma_and_greys(floats):
    theta = torch.linspace(-0.3 * math.pi, 0.3 * math.pi, N)
    out = A.hue_rotate(floats, theta)
    want = torch.stack([_hue_one(x, float(t)) for x, t in zip(floats, theta)])
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    low_chroma = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4  # stays in [0, 1]
    luma = torch.tensor([0.299, 0.587, 0.114])
    turned = A.hue_rotate(low_chroma, theta)
    assert not turned.equal(low_chroma)
    torch.testing.assert_close(torch.einsum("c,nchw->nhw", luma, turned),
                               torch.einsum("c,nchw->nhw", luma, low_chroma), atol=1e-4, rtol=0)
    grey = torch.full((N, 3, 4, 4), 0.4)
    torch.testing.assert_close(A.hue_rotate(grey, theta), grey, atol=1e-5, rtol=0)


def test_blur_and_sharpen_match_torchvision_per_image(floats):
    sigma = torch.tensor([0.1, 0.4, 0.7, 1.0, 1.3, 1.5])
    out = A.gaussian_blur(floats, sigma)
    want = torch.stack([F.gaussian_blur(x, [5, 5], [float(s)] * 2) for x, s in zip(floats, sigma)])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    want = torch.stack([F.adjust_sharpness(x, 2.0) for x in floats])
    torch.testing.assert_close(A.sharpen(floats), want, rtol=1e-5, atol=1e-5)


def test_erase_matches_torchvision_per_image(floats):
    boxes = torch.zeros(N, 8, 4, dtype=torch.int64)
    boxes[0, 0] = torch.tensor([0, 0, 3, 5])
    boxes[0, 1] = torch.tensor([2, 3, 4, 4])  # overlaps the first
    boxes[1, 7] = torch.tensor([H - 2, W - 3, 2, 3])  # touches the far corner
    boxes[3, :4] = torch.tensor([[5, 6, 1, 1], [10, 0, 7, 2], [0, 30, 9, 10], [12, 12, 12, 12]])
    out = A.erase(floats, boxes)
    for x, got, rects in zip(floats, out, boxes):
        for top, left, h, w in rects.tolist():
            if h:
                x = F.erase(x, top, left, h, w, torch.tensor(0.0))
        assert got.equal(x)


def test_jpeg_batch_equals_per_image_and_stays_close_to_libjpeg(images):
    quality = torch.tensor([90, 92, 95, 97, 99, 100])
    out = jpeg_roundtrip(images, quality)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for x, got, q in zip(images, out, quality):
        assert got.equal(jpeg_roundtrip(x[None], q.view(1))[0])  # no image depends on another
    odd = photo(37, 53, 9)  # sizes off the 16-pixel macroblock grid
    gaps = []
    for img, q in [*zip(images, quality.tolist()), (odd, 93)]:
        ours = jpeg_roundtrip(img[None], torch.tensor([q]))[0].float()
        libjpeg = F.jpeg(img, q).float()
        # The stated amount: ~0.6 grey levels from libjpeg on average (up to ~1 on an image
        # this small, most of it in blue, where Cb counts 1.77 times), and the error against
        # the input within 3 % of libjpeg's own: the same degradation, computed in float.
        gaps.append(float((ours - libjpeg).abs().mean()))
        err_ours, err_lib = (ours - img.float()).abs().mean(), (libjpeg - img.float()).abs().mean()
        assert abs(err_ours - err_lib) <= 0.03 * err_lib
    assert max(gaps) < 1.25 and np.mean(gaps) < 0.8


def _params(**fields) -> A.PhotoParams:
    return A.no_photometric()._replace(**{k: torch.as_tensor(v) for k, v in fields.items()})


def test_augment_batch_equals_the_per_image_definition(images):
    """Every op on for some image, each with its own values: the batch equals
    photometric_reference image by image (its JPEG step, libjpeg, is compared above)."""
    boxes = torch.zeros(8, 4, dtype=torch.int64)
    boxes[:2] = torch.tensor([[1, 2, 5, 6], [10, 20, 4, 9]])
    per_image = [
        _params(colour=True, order=[2, 0, 1], factors=[1.1, 0.9, 1.14], hue=0.5),
        _params(filter=A.BLUR, sigma=0.8, erase=boxes),
        _params(colour=True, order=[1, 2, 0], factors=[0.86, 1.05, 0.9], hue=-0.9, filter=A.SHARPEN),
        _params(),
        _params(colour=True, order=[0, 1, 2], factors=[1.0, 1.15, 0.85], hue=0.1, filter=A.BLUR, sigma=1.4,
                erase=boxes.flip(0)),
        _params(filter=A.SHARPEN, erase=boxes),
    ]
    out = A.augment_batch(images, default_collate(per_image))
    assert out.is_contiguous(memory_format=torch.channels_last)
    for x, got, p in zip(images, out, per_image):
        torch.testing.assert_close(got, A.photometric_reference(x, p), rtol=1e-5, atol=1e-5)
    # the JPEG step is jpeg_roundtrip on the images that ask for it, before everything else
    jpeg = [_params(quality=q) for q in (90, 0, 100, 0, 95, 91)]
    out = A.augment_batch(images, default_collate(jpeg))
    coded = jpeg_roundtrip(images, torch.tensor([90, 90, 100, 100, 95, 91]))
    want = torch.where(torch.tensor([1, 0, 1, 0, 1, 1]).bool().view(-1, 1, 1, 1), coded, images)
    torch.testing.assert_close(out, A.normalise(want), rtol=0, atol=0)
    assert A.augment_batch(images, None).equal(A.normalise(images).contiguous(memory_format=torch.channels_last))


def test_drawn_distribution():
    rng = np.random.default_rng(0)
    n = 4000
    ps = default_collate([A.draw_photometric(rng, (60, 120)) for _ in range(n)])
    share = lambda mask: float(mask.float().mean())  # noqa: E731
    assert abs(share(ps.quality > 0) - 0.5) < 0.03
    q = ps.quality[ps.quality > 0]
    assert q.min() == 90 and q.max() == 100 and len(q.unique()) == 11
    assert abs(share(ps.colour) - 0.5) < 0.03
    orders = {tuple(o) for o in ps.order.tolist()}
    assert len(orders) == 6
    assert ps.factors.min() >= 0.85 and ps.factors.max() <= 1.15 and ps.factors.std() > 0.08
    assert ps.hue.abs().max() <= 0.15 * 2 * math.pi and ps.hue.abs().max() > 0.14 * 2 * math.pi
    assert abs(share(ps.filter == A.NO_FILTER) - 0.7) < 0.03
    assert abs(share(ps.filter == A.BLUR) - 0.15) < 0.02 and abs(share(ps.filter == A.SHARPEN) - 0.15) < 0.02
    assert ps.sigma.min() >= 0.1 and ps.sigma.max() <= 1.5
    erased = (ps.erase[:, :, 2] > 0).any(1)
    assert abs(share(erased) - 0.3) < 0.03
    boxes = ps.erase[erased].view(-1, 4).double()
    assert (boxes[:, 2] > 0).all()  # a 60 × 120 image always fits a box
    area = boxes[:, 2] * boxes[:, 3] / (60 * 120)
    assert area.min() > 0.001 and area.max() < 0.016  # scale (0.002, 0.012), after rounding the sides
    assert (boxes[:, 0] + boxes[:, 2] <= 60).all() and (boxes[:, 1] + boxes[:, 3] <= 120).all()


def _pairs(root, n: int = 8) -> TrainSet:
    ground, aerial = [], []
    for i in range(n):
        ground.append(str(root / f"g{i}.jpg"))
        aerial.append(str(root / f"a{i}.png"))
        Image.fromarray(photo(16, 64, i).permute(1, 2, 0).numpy()).save(ground[-1], quality=95)
        Image.fromarray(photo(20, 20, 100 + i).permute(1, 2, 0).numpy()).save(aerial[-1])
    lat = np.linspace(0, 1, n)
    return TrainSet("t", ground, aerial, np.arange(n, dtype=np.int64), lat, lat)


def _augmented(ds, batches, workers: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Pair index -> (ground, aerial) as the training loop feeds them to the model."""
    out = {}
    loader = DataLoader(ds, batch_sampler=batches.tolist(), num_workers=workers, collate_fn=collate_pairs)
    for g, a, cls, gp, ap in loader:
        g, a = A.augment_batch(g, gp), A.augment_batch(a, ap)
        out.update({int(c): (x, y) for c, x, y in zip(cls, g, a)})
    return out


def test_determinism_across_workers_and_rank_splits(tmp_path):
    ds = PairDataset(_pairs(tmp_path), 12, (8, 32), seed=5)
    ds.set_epoch(3)
    batches = np.array([[6, 1, 3, 0], [2, 7, 5, 4]], dtype=np.int64)
    whole = _augmented(ds, batches, workers=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(999)  # the global RNG plays no part
        two_workers = _augmented(ds, batches, workers=2)
    ranks = {}
    for rank in range(2):
        env = DistEnv(rank, 2, rank, torch.device("cpu"))
        ranks.update(_augmented(ds, rank_share(batches, env), workers=0))
    assert sorted(whole) == list(range(8))
    for i, (g, a) in whole.items():
        for other in (two_workers, ranks):
            assert other[i][0].equal(g) and other[i][1].equal(a)
    assert any(not whole[i][0].equal(A.normalise(ds[i][0])) for i in range(8))  # augmentation happened
    ds.set_epoch(4)
    assert any(not _augmented(ds, batches, 0)[i][0].equal(whole[i][0]) for i in range(8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_augment_matches_cpu(images):
    """The same batch and parameters on the GPU and on the CPU: equal up to float rounding
    (which may move a JPEG-coded pixel by one grey level)."""
    boxes = torch.zeros(8, 4, dtype=torch.int64)
    boxes[:2] = torch.tensor([[1, 2, 5, 6], [10, 20, 4, 9]])
    per_image = [
        _params(quality=90, colour=True, order=[2, 0, 1], factors=[1.1, 0.9, 1.14], hue=0.5),
        _params(filter=A.BLUR, sigma=0.8, erase=boxes),
        _params(quality=97, colour=True, order=[1, 2, 0], factors=[0.86, 1.05, 0.9], hue=-0.9, filter=A.SHARPEN),
        _params(),
        _params(quality=100, filter=A.BLUR, sigma=1.4, erase=boxes.flip(0)),
        _params(colour=True, order=[0, 1, 2], factors=[1.0, 1.15, 0.85], hue=0.1, filter=A.SHARPEN),
    ]
    params = default_collate(per_image)
    on_cpu = A.augment_batch(images, params)
    on_gpu = A.augment_batch(images, params, "cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.is_contiguous(memory_format=torch.channels_last)
    diff = (on_gpu.cpu() - on_cpu).abs()
    assert diff.mean() < 2e-3 and (diff > 1e-4).float().mean() < 0.02
    coded = jpeg_roundtrip(images.cuda(), torch.tensor([90, 95, 100, 91, 99, 92])).cpu()
    gap = (coded.float() - jpeg_roundtrip(images, torch.tensor([90, 95, 100, 91, 99, 92])).float()).abs()
    assert gap.mean() < 0.05 and gap.max() <= 2
