"""Training input path: host cost of a pair per core, and the batched augmentation's time.

Per dataset, at the real sizes (photo-like JPEGs, quality 90, the bench writes itself):
CVUSA 1232×224 panorama + 750² tile -> 140×768 + 384²; VIGOR 2048×1024 + 640² -> 384×768 + 384²;
University-1652 512² drone photo + 512² tile -> 384² + 384². Timed on one thread, as one
DataLoader worker runs, in CPU time per pair (best of --repeats passes over --items items, which
cycle over --pairs distinct files; each item draws its own augmentation, whose cost varies):
- "per image": full-size decode, paired geometry, resize, then the photometric ops per image on
  the host (tests/augment_reference.py, the per-image definition in torchvision ops);
- "s4g host": PairDataset's item (DCT-scaled decode where it applies, geometry, resize to
  uint8, parameter draw): what each worker does;
- "reference": cv2.imread + the reference implementation's albumentations list per view
  (ImageCompression, Resize INTER_LINEAR_EXACT, ColorJitter, AdvancedBlur/Sharpen,
  GridDropout/CoarseDropout, Normalize) and its flip/rot90/roll, when albumentations and
  opencv are installed (`pip install ".[bench]"`).
Then augment_batch on a batch of --batch pairs (ground + aerial) on the CPU with all of torch's
threads, and on CUDA when there is a GPU (with nvjpeg batch decoding of the panoramas beside
the host decode). `--parts augment` times only augment_batch.

    python benches/bench_loader.py [--datasets cvusa vigor university] [--pairs 4] [--items 24]
        [--batch 128] [--repeats 3] [--device cpu|cuda] [--parts host augment] [--out FILE]
Writes benches/results/bench_loader.json (or --out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the per-image oracle lives there

import augment_reference as R
import numpy as np
import torch
from harness import banner, parse, table, timed, write_result
from PIL import Image
from torch.nn import functional as nnf
from torch.utils.data import default_collate

from s4g.data.records import TrainSet
from s4g.pipeline import augment as A
from s4g.pipeline.dataset import PairDataset
from s4g.pipeline.images import load_image
from s4g.pipeline.transforms import View, draw_geometry, paired_geometry, resize, tile_geometry

# name: (query file (H, W), tile side, ground model size (H, W), aerial model side, query kind)
DATASETS = {
    "cvusa": ((224, 1232), 750, (140, 768), 384, "panorama"),
    "vigor": ((1024, 2048), 640, (384, 768), 384, "panorama"),
    "university": ((512, 512), 512, (384, 384), 384, "drone"),
}


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 (h, w, 3): smooth areas, edges and fine texture, a photograph's mix of scales."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((1, 3, h, w), 128.0)
    for cell, amp in ((128, 40), (32, 20), (8, 10), (2, 4)):
        noise = torch.randn(1, 3, h // cell + 2, w // cell + 2, generator=g)
        img += amp * nnf.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def write_pairs(root: Path, name: str, n: int, items: int) -> TrainSet:
    """`items` pairs over n distinct pairs of files written under root."""
    (qh, qw), side, _, _, kind = DATASETS[name]
    ground, aerial = [], []
    for i in range(n):
        ground.append(str(root / f"{name}_q{i}.jpg"))
        aerial.append(str(root / f"{name}_r{i}.jpg"))
        Image.fromarray(photo(qh, qw, i)).save(ground[-1], quality=90)
        Image.fromarray(photo(side, side, 1000 + i)).save(aerial[-1], quality=90)
    ground, aerial = (ground * (items // n + 1))[:items], (aerial * (items // n + 1))[:items]
    lat = np.linspace(0, 1, items)
    return TrainSet(name, ground, aerial, np.arange(items, dtype=np.int64), lat, lat, query_kind=kind)


def per_image(ts: TrainSet, ground_hw, aerial_side: int):
    """Per image on the host: full decode, geometry, resize, photometric ops (float)."""
    def item(i: int):
        rng = np.random.default_rng(i)
        g, a = load_image(ts.query_files[i]), load_image(ts.reference_files[i])
        if ts.query_kind == "panorama":
            g, a = paired_geometry(g, a, *draw_geometry(rng))
        else:
            g, a = tile_geometry(g, *draw_geometry(rng)), tile_geometry(a, *draw_geometry(rng))
        g, a = resize(g, ground_hw), resize(a, (aerial_side, aerial_side))
        return (R.photometric_reference(g, A.draw_photometric(rng, ground_hw, _ground_ratio(ts.query_kind))),
                R.photometric_reference(a, A.draw_photometric(rng, (aerial_side, aerial_side))))
    return item


def reference(ts: TrainSet, ground_hw, aerial_side: int):
    """The reference implementation's per-item work: cv2 decode, albumentations, flip/rot90/roll."""
    import albumentations as alb
    import cv2
    from albumentations.pytorch import ToTensorV2

    cv2.setNumThreads(1)

    def compose(hw, side0, ratio):
        cut = (int(0.1 * side0), int(0.2 * side0))
        unit = max(2, hw[1] // 10)  # albumentations 1.3's fixed square grid, in 2.x's arguments
        return alb.Compose([
            alb.ImageCompression(quality_range=(90, 100), p=0.5),
            alb.Resize(hw[0], hw[1], interpolation=cv2.INTER_LINEAR_EXACT, p=1.0),
            alb.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.15, p=0.5),
            alb.OneOf([alb.AdvancedBlur(p=1.0), alb.Sharpen(p=1.0)], p=0.3),
            alb.OneOf([alb.GridDropout(ratio=ratio, unit_size_range=(unit, unit + 1), random_offset=False, p=1.0),
                       alb.CoarseDropout(num_holes_range=(10, 25), hole_height_range=cut,
                                         hole_width_range=cut, p=1.0)], p=0.3),
            alb.Normalize(A.IMAGENET_MEAN, A.IMAGENET_STD), ToTensorV2()], seed=0)

    ground_tf = compose(ground_hw, ground_hw[0], 0.5)
    sat_tf = compose((aerial_side, aerial_side), aerial_side, 0.4)
    rng = np.random.default_rng(0)

    def item(i: int):
        g = cv2.cvtColor(cv2.imread(ts.query_files[i]), cv2.COLOR_BGR2RGB)
        a = cv2.cvtColor(cv2.imread(ts.reference_files[i]), cv2.COLOR_BGR2RGB)
        if rng.random() < 0.5:
            g, a = cv2.flip(g, 1), cv2.flip(a, 1)
        g, a = ground_tf(image=g)["image"], sat_tf(image=a)["image"]
        if rng.random() < 0.75:
            r = int(rng.integers(1, 4))
            a = torch.rot90(a, k=r, dims=(1, 2))
            g = torch.roll(g, shifts=-(g.shape[-1] // 4) * r, dims=2)
        return g, a
    return item


def _ground_ratio(query_kind: str) -> float:
    return A.GRID_RATIO_PANORAMA if query_kind == "panorama" else A.GRID_RATIO_TILE


def per_pair(item, n: int, repeats: int) -> dict:
    """ms per pair of CPU time (the per-core cost: other jobs on a shared machine inflate the
    wall time, not this) and wall time, of the best of `repeats` passes over items 0..n-1."""
    t = timed(lambda: [item(i) for i in range(n)], repeats, warmup=1)
    return {"ms_per_pair": 1e3 * t.cpu / n, "wall_ms_per_pair": 1e3 * t.best / n, "pairs_per_s_per_core": n / t.cpu}


def host_figures(name: str, root: Path, args) -> dict:
    ts = write_pairs(root, name, args.pairs, args.items)
    _, _, ground_hw, side, _ = DATASETS[name]
    ds = PairDataset(ts, View(side, ground_hw), augment=True)
    paths = {"per image": per_image(ts, ground_hw, side), "s4g host": ds.__getitem__}
    try:
        paths["reference"] = reference(ts, ground_hw, side)
    except ImportError as err:
        print(f"reference pipeline skipped ({err}): pip install '.[bench]'")
    out = {}
    for label, item in paths.items():
        out[label] = per_pair(item, args.items, args.repeats)
    decode = per_pair(lambda i: (load_image(ts.query_files[i], ds._decode_ground),
                                 load_image(ts.reference_files[i], ds._decode_aerial)), args.items, args.repeats)
    out["s4g host"]["decode_ms_per_pair"] = decode["ms_per_pair"]
    return out


def augment_figures(name: str, batch: int, device: torch.device, repeats: int) -> dict:
    """ms for augment_batch on `batch` pairs (ground then aerial), images on the host (uint8)."""
    _, _, ground_hw, side, _ = DATASETS[name]
    rng = np.random.default_rng(0)
    ground = torch.from_numpy(np.stack([photo(*ground_hw, i) for i in range(4)])).permute(0, 3, 1, 2)
    aerial = torch.from_numpy(np.stack([photo(side, side, 9 + i) for i in range(4)])).permute(0, 3, 1, 2)
    ground, aerial = ground.repeat(batch // 4, 1, 1, 1).contiguous(), aerial.repeat(batch // 4, 1, 1, 1).contiguous()
    if device.type == "cuda":
        ground, aerial = ground.pin_memory(), aerial.pin_memory()
    kind = DATASETS[name][4]
    gp = default_collate([A.draw_photometric(rng, ground_hw, _ground_ratio(kind)) for _ in range(len(ground))])
    ap = default_collate([A.draw_photometric(rng, (side, side)) for _ in range(len(aerial))])

    def run():
        A.augment_batch(ground, gp, device), A.augment_batch(aerial, ap, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    t = timed(run, repeats, warmup=1)
    copy = timed(lambda: (ground.to(device), aerial.to(device), torch.cuda.synchronize(device)), repeats, warmup=1) \
        if device.type == "cuda" else None
    return {"device": str(device), "pairs": len(ground), "ms_per_batch": 1e3 * t.best, "cpu_ms": 1e3 * t.cpu,
            "copy_ms": None if copy is None else 1e3 * copy.best, "torch_threads": torch.get_num_threads()}


def nvjpeg_figures(root: Path, batch: int, repeats: int) -> dict:
    """Batch decode of VIGOR panoramas with nvjpeg (torchvision decode_jpeg on CUDA) beside
    one host core's DCT-scaled decode of the same file."""
    from torchvision.io import decode_jpeg

    files = sorted(root.glob("vigor_q*.jpg"))  # the distinct panoramas
    raw = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    data = (raw * (batch // len(raw) + 1))[:batch]
    t = timed(lambda: (decode_jpeg(data, device="cuda"), torch.cuda.synchronize()), repeats, warmup=1)
    host = timed(lambda: load_image(files[0], (384, 768)), repeats, warmup=1)
    return {"images": batch, "nvjpeg_ms_per_batch": 1e3 * t.best, "nvjpeg_images_per_s": batch / t.best,
            "host_scaled_decode_ms_per_image_per_core": 1e3 * host.best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--pairs", type=int, default=4, help="distinct pairs of files per dataset")
    ap.add_argument("--items", type=int, default=24, help="items timed per pass (augmentation draws)")
    ap.add_argument("--batch", type=int, default=128, help="pairs per augmented batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", nargs="+", default=["host", "augment"], choices=["host", "augment"],
                    help="host: per-pair host work; augment: augment_batch on --batch pairs")
    ap.add_argument("--out", default=None)
    args = parse(ap, smoke={"pairs": 1, "items": 2, "batch": 4, "repeats": 1})
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    banner(datasets=",".join(args.datasets), pairs=args.pairs, items=args.items, batch=args.batch, device=device,
           parts=",".join(args.parts))
    figures: dict = {"host": {}, "augment": {}}
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(1)  # one DataLoader worker = one core
        for name in args.datasets if "host" in args.parts else ():
            figures["host"][name] = host_figures(name, Path(tmp), args)
        torch.set_num_threads(threads)
        for name in args.datasets if "augment" in args.parts else ():
            figures["augment"][name] = {"cpu": augment_figures(name, args.batch, torch.device("cpu"), args.repeats)}
            if device.type == "cuda":
                figures["augment"][name]["cuda"] = augment_figures(name, args.batch, device, args.repeats)
        if device.type == "cuda" and "vigor" in args.datasets and "host" in args.parts:
            try:
                figures["nvjpeg"] = nvjpeg_figures(Path(tmp), args.batch, args.repeats)
            except (RuntimeError, TypeError) as err:  # an older torchvision without batched CUDA decode
                figures["nvjpeg"] = {"error": str(err)}
    rows = [(f"{name}: {label}", v["ms_per_pair"], v["pairs_per_s_per_core"], v["wall_ms_per_pair"])
            for name, paths in figures["host"].items() for label, v in paths.items()]
    print("\nhost work per pair, one core (CPU time)")
    table(["path", "ms/pair", "pairs/s/core", "wall ms/pair"], rows)
    rows = [(f"{name} on {dev}", v["pairs"], v["ms_per_batch"], v["cpu_ms"], v["torch_threads"])
            for name, per in figures["augment"].items() for dev, v in per.items()]
    print("\naugment_batch (ground + aerial)")
    table(["batch", "pairs", "wall ms", "cpu ms", "threads"], rows)
    if "nvjpeg" in figures:
        print("nvjpeg:", figures["nvjpeg"])
    write_result("bench_loader", figures, args.out)


if __name__ == "__main__":
    main()
