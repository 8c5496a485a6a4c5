"""How much two deliberate differences from the Sample4Geo reference code change its inputs.

1. GPS neighbour lists. The reference builds them with scikit-learn's haversine metric fed
   degrees where it expects radians; s4g computes exact great-circle neighbours. Both are
   computed here on the same points (a VIGOR-like city grid, and CVUSA-like points spread
   over the contiguous US) for a sample of queries: the share of k-neighbour sets that are
   identical, and their mean overlap.
2. VIGOR mining. The reference keeps, per tile, the mined list of the tile's *last*
   training panorama (a dict overwritten per panorama); s4g scores the normalised mean of
   the tile's panoramas. On a synthetic VIGOR world embedded by a small model trained for a
   few epochs on it, for tiles with two panoramas: the share of identical top-k lists and
   their mean overlap.

    python benches/bench_reference_differences.py [--queries 1200] [--k 128]
Writes benches/results/bench_reference_differences.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_gps import vigor_like
from harness import banner, parse, table, write_result
from rich.console import Console

from s4g.app.jobs.train import run
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.model.checkpoint import load_checkpoint
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_files
from s4g.retrieval.mining import class_query_embeddings, similar_references
from s4g.sampling import gps_neighbours


def degrees_as_radians_knn(lat: np.ndarray, lon: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The reference's lists: the haversine formula applied to degree values as if they were
    radians (what sklearn's metric computes when given degrees), k smallest other points."""
    out = np.empty((rows.size, k), dtype=np.int64)
    for i, r in enumerate(rows):
        a = np.sin((lat - lat[r]) / 2) ** 2 + np.cos(lat[r]) * np.cos(lat) * np.sin((lon - lon[r]) / 2) ** 2
        d = 2 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
        d[r] = np.inf
        out[i] = np.argsort(d, kind="stable")[:k]
    return out


def set_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(share of rows with the same set of entries, mean share of shared entries)."""
    same, overlap = [], []
    for x, y in zip(a, b):
        sx, sy = set(x.tolist()), set(y.tolist())
        same.append(sx == sy)
        overlap.append(len(sx & sy) / len(sx))
    return float(np.mean(same)), float(np.mean(overlap))


def cvusa_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points spread over the contiguous US, clustered around 60 towns (roads and cities)."""
    rng = np.random.default_rng(seed)
    towns = np.column_stack([rng.uniform(27, 48, 60), rng.uniform(-122, -72, 60)])
    pick = towns[rng.integers(0, 60, n)]
    return pick[:, 0] + rng.normal(0, 0.3, n), pick[:, 1] + rng.normal(0, 0.4, n)


def gps_figures(queries: int, k: int) -> dict:
    out = {}
    for name, (lat, lon) in {"vigor_like": vigor_like(90_618), "cvusa_like": cvusa_like(35_532)}.items():
        rows = np.random.default_rng(1).choice(lat.size, queries, replace=False)
        exact = gps_neighbours(lat, lon, k)[0][rows]
        same, overlap = set_agreement(degrees_as_radians_knn(lat, lon, rows, k), exact)
        out[name] = {"points": int(lat.size), "queries": queries, "k": k,
                     "identical_sets_share": same, "mean_overlap": overlap}
    return out


def mining_figures(tmp: Path, locations: int, epochs: int, k: int) -> dict:
    root = tmp / "vigor"
    write_layout("vigor", root, locations=locations, seed=0)
    cfg = datasets.train_config("vigor-same", data_root=str(root), out=str(tmp / "run"), backbone="convnext_micro_ls1",
                                pretrained=False, aerial_size=64, ground_size=(32, 128), batch_size=32, epochs=epochs,
                                sampling="random", eval_every=epochs, augment=False, workers=0, device="cpu")
    model, _ = load_checkpoint(run(cfg, console=Console(quiet=True)) / "last.pt")
    train = datasets.load_train("vigor-same", root)
    common = dict(device="cpu", batch_size=64, progress=False)
    view = View(64, (32, 128))
    q = embed_files(model, train.query_files, view, "panorama", **common)
    r = embed_files(model, train.reference_files, view, "aerial", **common)
    pair_class = np.asarray(train.pair_class)
    exclude = np.arange(train.num_classes)
    k = min(k, train.num_classes - 1)
    ours = similar_references(class_query_embeddings(q, pair_class, r), r, k, exclude, device="cpu")
    last = np.zeros_like(r)
    last[pair_class] = q  # later panoramas overwrite earlier ones, as the reference's dict does
    theirs = similar_references(last, r, k, exclude, device="cpu")
    two = np.flatnonzero(np.bincount(pair_class, minlength=train.num_classes) == 2)
    same, overlap = set_agreement(ours[two], theirs[two])
    return {"panoramas": int(train.num_pairs), "tiles": int(train.num_classes),
            "tiles_with_two_panoramas": int(two.size),
            "k": int(k), "epochs_trained": epochs, "identical_lists_share": same, "mean_overlap": overlap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1200)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--locations", type=int, default=1600, help="panoramas of the synthetic VIGOR world")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = parse(ap, smoke={"queries": 50, "k": 8, "locations": 80, "epochs": 1})
    banner(queries=args.queries, k=args.k, locations=args.locations)
    torch.manual_seed(0)
    gps = gps_figures(args.queries, args.k)
    with tempfile.TemporaryDirectory() as tmp:
        mining = mining_figures(Path(tmp), args.locations, args.epochs, args.k)
    table(["comparison", "identical", "mean overlap"],
          [(f"GPS lists, {n}", f"{v['identical_sets_share']:.1%}", f"{v['mean_overlap']:.1%}") for n, v in gps.items()]
          + [("VIGOR mining, tiles with 2 panoramas", f"{mining['identical_lists_share']:.1%}",
              f"{mining['mean_overlap']:.1%}")])
    write_result("bench_reference_differences", {"gps": gps, "vigor_mining": mining}, args.out)


if __name__ == "__main__":
    main()
