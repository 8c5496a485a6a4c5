"""Batched photometric augmentation: each op against its per-image definition on fixed
parameters, the drawn distribution, and determinism per (seed, epoch, index) whatever the
workers and the split of a batch across ranks. Against OpenCV and albumentations themselves:
tests/test_augment_albumentations.py."""

from __future__ import annotations

import math

import augment_reference as R
import numpy as np
import pytest
import torch
from PIL import Image
from test_images import photo
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.v2 import functional as F

from s4g.data.records import TrainSet
from s4g.distributed import DistEnv, rank_share
from s4g.pipeline import augment as A
from s4g.pipeline import photoops as ops
from s4g.pipeline.dataset import PairDataset, collate_pairs
from s4g.pipeline.jpeg import jpeg_roundtrip
from s4g.pipeline.transforms import TrainTransform, View

N, H, W = 6, 24, 40


@pytest.fixture
def images() -> torch.Tensor:
    return torch.stack([photo(H, W, seed) for seed in range(N)])


@pytest.fixture
def floats(images) -> torch.Tensor:
    return F.to_dtype(images, torch.float32, scale=True)


FACTORS = torch.tensor([0.85, 0.9, 1.0, 1.05, 1.12, 1.15])
HUES = torch.tensor([-0.15, -0.07, 0.0, 0.02, 0.1, 0.15])


@pytest.mark.parametrize(("batched", "one", "factors"), [
    (ops.brightness, F.adjust_brightness, FACTORS), (ops.contrast, F.adjust_contrast, FACTORS),
    (ops.saturation, F.adjust_saturation, FACTORS), (ops.hue_shift, F.adjust_hue, HUES)])
def test_colour_ops_match_torchvision_per_image(floats, batched, one, factors):
    out = batched(floats, factors)
    want = torch.stack([one(x, float(f)) for x, f in zip(floats, factors)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


def test_hue_shift_keeps_value_chroma_and_greys(floats):
    turned = ops.hue_shift(floats, HUES)
    assert not turned[0].equal(floats[0])
    for f in (lambda t: t.amax(1), lambda t: t.amax(1) - t.amin(1)):  # HSV value, and chroma = saturation * value
        torch.testing.assert_close(f(turned), f(floats), rtol=0, atol=1e-6)
    grey = torch.full((N, 3, 4, 4), 0.4)
    assert ops.hue_shift(grey, HUES).equal(grey)
    back = ops.hue_shift(ops.hue_shift(floats, HUES), -HUES)  # a shift and its opposite cancel
    torch.testing.assert_close(back, floats, rtol=0, atol=1e-5)


def _blur_draws(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {"ksize": torch.tensor([(3, 5, 7)[i % 3] for i in range(n)]),
            "sigma": torch.tensor(rng.uniform(0.2, 1.0, (n, 2)), dtype=torch.float32),
            "angle": torch.tensor(rng.uniform(-math.pi / 2, math.pi / 2, n), dtype=torch.float32),
            "beta": torch.tensor(rng.uniform(0.5, 8.0, n), dtype=torch.float32),
            "noise": torch.tensor(rng.uniform(0.9, 1.1, (n, A.KERNEL, A.KERNEL)), dtype=torch.float32)}


def _centre(k: torch.Tensor, side: int) -> torch.Tensor:
    cut = (A.KERNEL - side) // 2
    return k[..., cut:A.KERNEL - cut, cut:A.KERNEL - cut]


def test_blur_kernels_match_the_per_image_formula():
    d = _blur_draws(9)
    batched = ops.blur_kernels(**d)
    assert batched.shape == (9, A.KERNEL, A.KERNEL) and batched.dtype == torch.float32
    for i, k in enumerate(d["ksize"].tolist()):
        noise = _centre(d["noise"][i], k).double().numpy()
        one = R.advanced_blur_kernel(k, *d["sigma"][i].tolist(), float(d["angle"][i]), float(d["beta"][i]), noise)
        torch.testing.assert_close(_centre(batched[i], k), torch.from_numpy(one), rtol=0, atol=1e-7)
        assert float(batched[i].sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(batched[i].abs().sum() - _centre(batched[i], k).abs().sum()) == 0  # zero outside k²


def test_blur_kernel_is_a_turned_gaussian_at_beta_one():
    """beta 1, no noise: the Gaussian exp(-0.5 dᵀ Σ⁻¹ d); a quarter turn swaps sigma x and y."""
    ax = np.arange(-3.0, 4.0)
    dy, dx = np.meshgrid(ax, ax, indexing="ij")
    gauss = np.exp(-0.5 * (dx ** 2 / 0.8 ** 2 + dy ** 2 / 0.4 ** 2))
    one = R.advanced_blur_kernel(7, 0.8, 0.4, 0.0, 1.0, np.ones((7, 7)))
    np.testing.assert_allclose(one, gauss / gauss.sum(), rtol=1e-6)
    turned = R.advanced_blur_kernel(7, 0.4, 0.8, math.pi / 2, 1.0, np.ones((7, 7)))
    np.testing.assert_allclose(turned, one, atol=1e-7)
    # beta reshapes the profile around one sigma (the tap there stays at exp(-0.5) of the
    # centre): above 1 it falls off faster beyond, below 1 slower
    shapes = {b: R.advanced_blur_kernel(5, 1.0, 1.0, 0.3, b, np.ones((5, 5))) for b in (0.5, 1.0, 8.0)}
    corner = {}  # the diagonal tap, √2 sigma out, relative to the centre
    for b, k in shapes.items():
        assert k[2, 1] / k[2, 2] == pytest.approx(math.exp(-0.5), rel=1e-5)
        corner[b] = k[1, 1] / k[2, 2]
    assert corner[1.0] == pytest.approx(math.exp(-1), rel=1e-5)
    assert corner[8.0] < 1e-6 and corner[0.5] == pytest.approx(math.exp(-0.5 * 2 ** 0.5), rel=1e-5)


def test_sharpen_kernels_match_the_per_image_formula():
    alpha, light = torch.tensor([0.2, 0.35, 0.5]), torch.tensor([0.5, 0.8, 1.0])
    batched = ops.sharpen_kernels(alpha, light)
    for i in range(3):
        one = R.sharpen_kernel(float(alpha[i]), float(light[i]))
        torch.testing.assert_close(_centre(batched[i], 3), torch.from_numpy(one))
        assert one[1, 1] == pytest.approx(1 - alpha[i] + alpha[i] * (8 + light[i]))
        assert float(batched[i].sum()) == pytest.approx(1 - float(alpha[i]) * (1 - float(light[i])), abs=1e-6)


@pytest.mark.parametrize("side", [3, 5, 7])
def test_filter2d_matches_the_per_image_correlation(floats, side):
    kernels = torch.randn(N, side, side, generator=torch.Generator().manual_seed(side)) * 0.2
    kernels[:, side // 2, side // 2] += 1  # not symmetric: correlation and convolution differ
    out = ops.filter2d(floats, kernels)
    want = torch.stack([R.correlate_one(x, k.numpy()) for x, k in zip(floats, kernels)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


GRIDS = [(4, 4, 1, 1, 0, 0), (5, 7, 2, 3, 1, 2), (24, 40, 9, 15, 0, 0), (6, 6, 5, 5, 0, 0), (7, 3, 3, 1, 4, 2),
         A.grid_geometry(H, W, 0.5)]


def test_grid_dropout_matches_the_listed_holes(floats):
    out = ops.grid_dropout(floats, torch.tensor(GRIDS))
    for x, got, grid in zip(floats, out, GRIDS):
        want = x.clone()
        for x1, y1, x2, y2 in R.grid_holes(H, W, grid):
            want[:, y1:y2, x1:x2] = 0
        assert got.equal(want)
        assert (got == 0).any()


def test_grid_geometry_is_albumentations_default_grid():
    """1.3.1's defaults: units of max(2, W // 10) pixels, square unless the image is lower,
    holes of int(unit * ratio) pixels kept within [1, unit - 1], no shift."""
    assert A.grid_geometry(384, 384, 0.4) == (38, 38, 15, 15, 0, 0)
    assert A.grid_geometry(384, 768, 0.5) == (76, 76, 38, 38, 0, 0)
    assert A.grid_geometry(140, 768, 0.5) == (76, 76, 38, 38, 0, 0)
    assert A.grid_geometry(20, 400, 0.5) == (20, 40, 10, 20, 0, 0)
    assert A.grid_geometry(8, 12, 0.4) == (2, 2, 1, 1, 0, 0)
    holes = R.grid_holes(384, 384, A.grid_geometry(384, 384, 0.4))
    assert len(holes) == 11 * 11 and holes[-1] == (380, 380, 384, 384)  # cut at the far edges


def test_coarse_dropout_matches_torchvision_erase(floats):
    holes = torch.zeros(N, 25, 4, dtype=torch.int64)
    holes[0, 0] = torch.tensor([0, 0, 3, 5])
    holes[0, 1] = torch.tensor([2, 3, 4, 4])  # overlaps the first
    holes[1, 24] = torch.tensor([H - 2, W - 3, 2, 3])  # touches the far corner
    holes[3, :4] = torch.tensor([[5, 6, 1, 1], [10, 0, 7, 2], [0, 30, 9, 10], [12, 12, 12, 12]])
    out = ops.coarse_dropout(floats, holes)
    for x, got, rects in zip(floats, out, holes):
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
    base = A.no_photometric()
    return base._replace(**{k: torch.as_tensor(v, dtype=getattr(base, k).dtype) for k, v in fields.items()})


def _every_op() -> list[A.PhotoParams]:
    """Six images' parameters, every op on for some image, each with its own values."""
    holes = torch.zeros(25, 4, dtype=torch.int64)
    holes[:3] = torch.tensor([[1, 2, 5, 6], [10, 20, 4, 9], [20, 35, 4, 5]])
    d = _blur_draws(3, seed=1)
    blur = [{"filter": A.BLUR, **{k: v[i] for k, v in d.items()}} for i in range(3)]
    return [
        _params(colour=True, order=[2, 0, 3, 1], factors=[1.1, 0.9, 1.14, 0.12], **blur[0]),
        _params(dropout=A.COARSE, holes=holes, **blur[1]),
        _params(colour=True, order=[3, 1, 2, 0], factors=[0.86, 1.05, 0.9, -0.15], filter=A.SHARPEN,
                sharpen=[0.2, 0.9], dropout=A.GRID, grid=A.grid_geometry(H, W, 0.4)),
        _params(),
        _params(colour=True, order=[0, 1, 2, 3], factors=[1.0, 1.15, 0.85, 0.05], dropout=A.GRID,
                grid=(5, 7, 2, 3, 1, 2), **blur[2]),
        _params(filter=A.SHARPEN, sharpen=[0.5, 0.5], dropout=A.COARSE, holes=holes.flip(0)),
    ]


def test_augment_batch_equals_the_per_image_definition(images):
    """The batch equals photometric_reference image by image (its JPEG step, libjpeg, is
    compared above)."""
    per_image = _every_op()
    out = A.augment_batch(images, default_collate(per_image))
    assert out.is_contiguous(memory_format=torch.channels_last)
    for x, got, p in zip(images, out, per_image):
        torch.testing.assert_close(got, R.photometric_reference(x, p), rtol=0, atol=1e-4)
    holes = A.normalise(torch.zeros(3, 1, 1, dtype=torch.uint8))  # black, normalised
    assert out[1][:, 10, 20].equal(holes[:, 0, 0]) and out[2][:, 0, 0].equal(holes[:, 0, 0])
    # the JPEG step is jpeg_roundtrip on the images that ask for it, before everything else
    jpeg = [_params(quality=q) for q in (90, 0, 100, 0, 95, 91)]
    out = A.augment_batch(images, default_collate(jpeg))
    coded = jpeg_roundtrip(images, torch.tensor([90, 90, 100, 100, 95, 91]))
    want = torch.where(torch.tensor([1, 0, 1, 0, 1, 1]).bool().view(-1, 1, 1, 1), coded, images)
    torch.testing.assert_close(out, A.normalise(want), rtol=0, atol=0)
    assert A.augment_batch(images, None).equal(A.normalise(images).contiguous(memory_format=torch.channels_last))
    assert A.augment_batch(images, default_collate([A.no_photometric()] * N)).equal(A.augment_batch(images, None))


def _share(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def test_drawn_distribution():
    """Every probability and range of the module docstring, on a VIGOR panorama's size."""
    h, w, n = 384, 768, 4000
    ps = default_collate([A.draw_photometric(np.random.default_rng(s), (h, w), 0.5) for s in range(n)])
    assert abs(_share(ps.quality > 0) - 0.5) < 0.03
    q = ps.quality[ps.quality > 0]
    assert q.min() == 90 and q.max() == 100 and len(q.unique()) == 11
    assert abs(_share(ps.colour) - 0.5) < 0.03
    assert len({tuple(o) for o in ps.order.tolist()}) == 24  # the four ops in any order
    jitter, hue = ps.factors[:, :3], ps.factors[:, 3]
    assert jitter.min() >= 0.85 and jitter.max() <= 1.15 and abs(float(jitter.std()) - 0.3 / 12 ** 0.5) < 0.005
    assert hue.min() >= -0.15 and hue.max() <= 0.15 and abs(float(hue.std()) - 0.3 / 12 ** 0.5) < 0.005
    assert abs(_share(ps.filter == A.NO_FILTER) - 0.7) < 0.03
    assert abs(_share(ps.filter == A.BLUR) - 0.15) < 0.02 and abs(_share(ps.filter == A.SHARPEN) - 0.15) < 0.02
    for k in (3, 5, 7):
        assert abs(_share(ps.ksize == k) - 1 / 3) < 0.03
    assert ps.sigma.min() >= 0.2 and ps.sigma.max() <= 1.0 and abs(float(ps.sigma.mean()) - 0.6) < 0.01
    assert ps.angle.abs().max() <= math.pi / 2 and ps.angle.abs().max() > 0.99 * math.pi / 2
    assert abs(_share(ps.beta < 1) - 0.5) < 0.03 and ps.beta.min() >= 0.5 and ps.beta.max() <= 8.0
    assert abs(float(ps.beta[ps.beta > 1].mean()) - 4.5) < 0.15
    assert abs(float(ps.beta[ps.beta < 1].mean()) - 0.75) < 0.02
    assert ps.noise.min() >= 0.9 and ps.noise.max() <= 1.1
    alpha, light = ps.sharpen.unbind(1)
    assert alpha.min() >= 0.2 and alpha.max() <= 0.5 and light.min() >= 0.5 and light.max() <= 1.0
    assert abs(_share(ps.dropout == A.NO_DROPOUT) - 0.7) < 0.03
    assert abs(_share(ps.dropout == A.GRID) - 0.15) < 0.02 and abs(_share(ps.dropout == A.COARSE) - 0.15) < 0.02
    assert (ps.grid == torch.tensor(A.grid_geometry(h, w, 0.5))).all()
    count = (ps.holes[:, :, 2] > 0).sum(1)
    assert count.min() == 10 and count.max() == 25 and len(count.unique()) == 16
    assert abs(float(count.float().mean()) - 17.5) < 0.2
    assert (ps.holes[:, :, 2] > 0).cumprod(1).sum(1).equal(count)  # the used holes come first
    top, left, bh, bw = ps.holes[ps.holes[:, :, 2] > 0].unbind(1)
    for side in (bh, bw):  # 10-20 % of the height, int() as the reference writes it
        assert side.min() == 38 and side.max() == 76 and len(side.unique()) == 39
    assert top.min() == 0 and (top + bh).max() == h and left.min() == 0 and (left + bw).max() == w
    assert abs(float((top.float() / (h - bh)).mean()) - 0.5) < 0.01


def test_views_get_the_reference_grid_ratio():
    """GridDropout: ratio 0.5 on panoramas, 0.4 on aerial tiles and drone photos."""
    g = torch.zeros(3, 40, 160, dtype=torch.uint8)
    a = torch.zeros(3, 50, 50, dtype=torch.uint8)
    _, _, gp, ap = TrainTransform(50, (40, 160))(g, a, np.random.default_rng(0))
    assert gp.grid.tolist() == list(A.grid_geometry(40, 160, 0.5)) and gp.grid[2] == 8
    assert ap.grid.tolist() == list(A.grid_geometry(50, 50, 0.4))
    _, _, dp, _ = TrainTransform(50, (50, 50), query_kind="drone")(a, a, np.random.default_rng(0))
    assert dp.grid.tolist() == list(A.grid_geometry(50, 50, 0.4))


def test_holes_fit_a_narrow_view():
    """A field-of-view crop narrower than the largest hole: holes are cut to the view."""
    ps = default_collate([A.draw_photometric(np.random.default_rng(s), (384, 40)) for s in range(50)])
    used = ps.holes[ps.holes[:, :, 2] > 0]
    assert used[:, 3].max() == 40 and (used[:, 1] + used[:, 3] <= 40).all() and used[:, 1].min() == 0


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
    ds = PairDataset(_pairs(tmp_path), View(12, (8, 32), seed=5))
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
    per_image = [p._replace(quality=torch.tensor(q)) for p, q in zip(_every_op(), (90, 0, 97, 0, 100, 91))]
    params = default_collate(per_image)
    on_cpu = A.augment_batch(images, params)
    on_gpu = A.augment_batch(images, params, "cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.is_contiguous(memory_format=torch.channels_last)
    diff = (on_gpu.cpu() - on_cpu).abs()
    assert diff.mean() < 2e-3 and (diff > 1e-4).float().mean() < 0.02
    coded = jpeg_roundtrip(images.cuda(), torch.tensor([90, 95, 100, 91, 99, 92])).cpu()
    gap = (coded.float() - jpeg_roundtrip(images, torch.tensor([90, 95, 100, 91, 99, 92])).float()).abs()
    assert gap.mean() < 0.05 and gap.max() <= 2
