"""Write the tables of docs/speed.md from benches/results/*.json.

Each table sits between `<!-- speed:NAME -->` and `<!-- /speed:NAME -->` in docs/speed.md and is
regenerated whole from the bench JSON it names, so every figure on the page traces to a committed
result: the bench, its command, the machine, its load and the commit are printed under each table.

    python scripts/speed_tables.py            # rewrite the tables in docs/speed.md
    python scripts/speed_tables.py --check    # exit 1 when the page and the JSON disagree
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results"
PAGE = ROOT / "docs" / "speed.md"
MARKER = re.compile(r"(<!-- speed:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /speed:(?P=name) -->)", re.S)


def _s(seconds: float) -> str:
    """Seconds as the page prints them: ms below one second, three significant digits."""
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MB"


def _gib(nbytes_gib: float) -> str:
    return f"{nbytes_gib:.2f} GiB"


def _rows(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _provenance(d: dict[str, Any]) -> str:
    m = d["machine"]
    src = d.get("source") or {}
    commit = src.get("commit")
    dirty = "" if src.get("clean") else " (uncommitted changes)"
    where = f"commit {commit[:10]}{dirty}" if commit else "commit not recorded"
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    return (f"`{d['command']}` — {m['cpus']} CPUs{gpu}, load {m['load_avg_1min']}, "
            f"{d['finished'][:10]}, {where} ([JSON](../benches/results/{d['bench']}.json))")


def gps(d: dict[str, Any]) -> list[str]:
    s, a = d["seconds"], d["agreement"]
    rows = [["s4g `gps_neighbours` (k-d tree, Rust)", _s(s["s4g"]), "1×", "—"],
            ["scikit-learn BallTree (haversine)", _s(s["balltree"]), f"{s['balltree'] / s['s4g']:.1f}×",
             f"{a['balltree_idx_equal_share']:.2%}"],
            ["SciPy cKDTree on 3-D unit vectors, 2 workers", _s(s["ckdtree_workers2"]),
             f"{s['ckdtree_workers2'] / s['s4g']:.1f}×", f"{a['ckdtree_idx_equal_share']:.2%}"]]
    title = f"Exact GPS k-NN, {d['points']:,} VIGOR-like points, k = {d['k']}"
    return [title, "", *_rows(["method", "wall time", "time / s4g", "same neighbours"], rows)]


def pack(d: dict[str, Any]) -> list[str]:
    best = d["seconds_best"]
    rows = [[name, _s(best[key]), f"{d['placed_share'][key]:.2%}", f"{d['via_neighbour_share'][key]:.1%}"]
            for name, key in (("s4g `pack_batches` (Rust)", "s4g"), ("the same rule in plain Python", "python"))]
    title = (f"Batch packing, {d['pairs']:,} pairs of {d['classes']:,} classes, batch {d['batch_size']}, "
             f"neighbour select {d['neighbour_select']}: s4g {best['python'] / best['s4g']:.0f}× faster")
    return [title, "", *_rows(["packer", "time an epoch (best)", "pairs placed", "placed through a neighbour list"],
                              rows)]


def evaluation(d: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in d["results"].items():
        ratio = "" if r.get("vs_bare") is None else f"{r['vs_bare']:.2f}×"
        rows.append([name, _s(r["seconds"]), _mb(r["extra_bytes"]), ratio])
    title = (f"Evaluation and mining, {d['Q']:,} queries × {d['R']:,} references, D = {d['D']}, k = {d['k']} "
             f"(the dense rows at {d['dense_scale']:g} of that)")
    return [title, "", *_rows(["step", "time", "extra memory", "time / bare matmuls"], rows)]


def synth(d: dict[str, Any]) -> list[str]:
    base = d["baseline_1_worker"]
    rows = [[f"{d['locations']:,} locations, {d['workers']} workers", _s(d["seconds"]),
             _s(d["seconds"] / d["locations"] * 1000)],
            [f"{base['locations']:,} locations, 1 worker", _s(base["seconds"]), _s(base["seconds_per_1000"])]]
    title = (f"A synthetic {d['layout'].upper()} world at the release's image sizes; one panorama "
             f"{_s(d['panorama_vectorised_s'])} vectorised against {_s(d['panorama_plain_python_s'])} in plain Python")
    return [title, "", *_rows(["run", "time", "time per 1,000 locations"], rows)]


def loader_host(d: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in d["host"].items():
        cells = [name]
        for key in ("per image", "s4g host", "reference"):
            # "today" names the per-image path in JSON of earlier bench versions
            x = r.get(key, r.get("today")) if key == "per image" else r.get(key)
            cells.append("—" if x is None else f"{x['ms_per_pair']:.3g} ms ({x['pairs_per_s_per_core']:.0f}/s)")
        rows.append(cells)
    title = "Host work per pair on one core (CPU time; pairs a second a core in brackets)"
    return [title, "", *_rows(["dataset", "per image, full decode", "s4g host", "reference (OpenCV + albumentations)"],
                              rows)]


def loader_augment(d: dict[str, Any]) -> list[str]:
    rows = []
    for name, devices in d["augment"].items():
        for device, r in devices.items():
            rows.append([name, device, r["pairs"], _s(r["ms_per_batch"] / 1e3), _s(r["cpu_ms"] / 1e3)])
    title = "`augment_batch` on a batch of pairs (ground + aerial)"
    return [title, "", *_rows(["dataset", "device", "pairs", "time a batch", "CPU time"], rows)]


def chunked(d: dict[str, Any]) -> list[str]:
    rows = []
    for r in d["results"]:
        backbone, aerial, ground = d["configs"][r["config"]]
        sizes = f"{aerial}² / {ground[0]}×{ground[1]}"
        label = f"{r['config']} ({backbone}, {sizes}), {r['batch']} pairs, chunk {r['chunk']}"
        if r.get("out_of_memory"):
            rows.append([label, "out of memory", "", ""])
        else:
            rows.append([label, _gib(r["step_gib"]), _gib(r["peak_gib"]), f"{r['cpu_s_per_step']:.3g}"])
    title = (f"Chunked step on {d['device']}: step memory (peak during a step minus what stays resident) "
             f"and time, {d['steps']} timed steps")
    return [title, "", *_rows(["run", "step memory", "peak", "CPU s a step"], rows)]


def safety(d: dict[str, Any]) -> list[str]:
    im, ck = d["images"], d["checkpoint"]
    per, est = im["seconds_per_file"], im["cvusa_train_estimate_s"]
    rows = [["read every image's header", _s(per["header"]), _s(est["header"])],
            ["decode every image", _s(per["decode"]), _s(est["decode"])]]
    sec = ck["seconds"]
    rows2 = [[name, _s(sec[key]["best"])] for name, key in (
        ("s4g save (checksum, flush, rename)", "save_checkpoint"), ("torch.save", "torch.save"),
        ("s4g read (checksum verified)", "read_checkpoint"), ("torch.load", "torch.load"))]
    return [f"Image checks ({im['files']:,} files timed; the estimate is for CVUSA's 71,064 training files)", "",
            *_rows(["check", "per file", "CVUSA training set"], rows), "",
            f"A {ck['backbone']} run checkpoint of {ck['bytes'] / 1e9:.2f} GB", "",
            *_rows(["operation", "time (best)"], rows2)]


def dist_eval(d: dict[str, Any]) -> list[str]:
    rows = [[mode, r["threads_per_process"], _s(r["evaluation"]["best_s"]), _s(r["mining"]["best_s"])]
            for mode, r in d["modes"].items()]
    im = d["images"]
    title = (f"Sharded evaluation of a synthetic VIGOR world ({im['eval_queries']} queries, "
             f"{im['eval_references']} references, {d['backbone']}); metrics equal across modes: "
             f"{'yes' if d['metrics_equal'] else 'NO'}, "
             f"neighbour lists equal: {'yes' if d['neighbours_equal'] else 'NO'}")
    return [title, "", *_rows(["mode", "threads a process", "evaluation", "mining"], rows)]


def sampling(d: dict[str, Any]) -> list[str]:
    rows = []
    for name, runs in d["results"].items():
        final = [r["final_r1"] for r in runs]
        sd = statistics.stdev(final) if len(final) > 1 else 0.0
        rows.append([name, len(final), f"{statistics.mean(final):.1f} ± {sd:.1f}"])
    cfg = d["config"]
    title = (f"Test R@1 of the synthetic preset after {cfg['epochs']} epochs by sampling, seeds "
             f"{', '.join(str(r['seed']) for r in next(iter(d['results'].values())))} "
             f"(a colour-histogram matcher: {d['colour_baseline_r1']:.1f})")
    return [title, "", *_rows(["sampling", "runs", "test R@1 (mean ± sd)"], rows)]


def reference_differences(d: dict[str, Any]) -> list[str]:
    rows = [[f"GPS lists, {name.replace('_', '-')} points ({g['points']:,}, {g['queries']:,} lists of {g['k']})",
             f"{g['identical_sets_share']:.0%}", f"{g['mean_overlap']:.0%}"] for name, g in d["gps"].items()]
    v = d["vigor_mining"]
    rows.append([f"VIGOR mining, tiles with two panoramas ({v['tiles_with_two_panoramas']} of {v['tiles']}, "
                 f"top-{v['k']}, a model trained {v['epochs_trained']} epochs)",
                 f"{v['identical_lists_share']:.0%}", f"{v['mean_overlap']:.0%}"])
    return ["s4g's lists against the reference code's", "",
            *_rows(["lists", "identical", "mean overlap"], rows)]


def released_lists(d: dict[str, Any]) -> list[str]:
    runs, cfg = d["runs"], d["settings"]
    diff = d["s4g_minus_released_final_R@1"]
    rows = [[seed, f"{a['final_R@1']:.1f}", f"{b['final_R@1']:.1f}", f"{x:+.1f}"]
            for seed, (a, b, x) in enumerate(zip(runs["s4g"], runs["released"], diff))]
    mean = statistics.mean(diff)
    sd = statistics.stdev(diff) if len(diff) > 1 else float("nan")
    se = sd / len(diff) ** 0.5
    rows.append(["mean", f"{d['mean_final_R@1']['s4g']:.1f}", f"{d['mean_final_R@1']['released']:.1f}",
                 f"{mean:+.1f} ± {sd:.1f} (sd)"])
    verdict = ("one seed: no estimate of the noise" if len(diff) < 2 else
               f"the mean difference is {'within' if abs(mean) <= 2 * se else 'beyond'} two standard "
               f"errors ({2 * se:.1f} points) of its {len(diff)} seeds")
    title = (f"Final test R@1, s4g's lists against `--lists released`, {d['dataset']}, "
             f"{cfg['locations']} locations, {cfg['epochs']} epochs (GPS lists until the evaluation "
             f"after epoch {cfg['eval_every']}, mined lists after), gps_k {cfg['gps_k']}, "
             f"neighbour_range {cfg['neighbour_range']}: {verdict}")
    return [title, "", *_rows(["seed", "s4g's lists", "released lists", "difference"], rows)]


def backbone_cost(d: dict[str, Any]) -> list[str]:
    timed, counted = d["results"], d["counted"]
    sizes = d["args"]
    rows = [[name, f"{r['parameters'] / 1e6:.1f}", f"{r['trained_parameters'] / 1e6:.2f}",
             f"{r['flops_per_pair_paper_sizes'] / 1e9:.0f}", _s(r["s_per_step"]), _gib(r["peak_memory_bytes"] / 2**30)]
            for name, r in timed.items()]
    rows += [[name, f"{r['parameters'] / 1e6:.1f}", "", f"{r['flops_per_pair_paper_sizes'] / 1e9:.0f}", "", ""]
             for name, r in counted.items()]
    title = (f"Encoders with their heads: parameters, those trained, GFLOP of the forward and backward pass of "
             f"one pair at the paper's sizes (counted on the meta device), and one s4g step at batch "
             f"{sizes['batch_size']} and {sizes['aerial_size']} / {sizes['ground_size'][0]}×"
             f"{sizes['ground_size'][1]} px (rounded to a ViT's patch): seconds and peak memory")
    return [title, "", *_rows(["encoder", "parameters (M)", "trained (M)", "GFLOP per pair", "s / step",
                               "peak memory"], rows)]


def backbone_learning(d: dict[str, Any]) -> list[str]:
    runs = {name: r for name, r in d.items() if not name.startswith("_")}
    setup = d["_setup"]
    baseline = {r["colour_baseline_R@1"] for r in runs.values()}
    rows = [[name, len(r["R@1_by_epoch"]) - 1, f"{r['R@1_by_epoch'][-1]:.0f}",
             next((str(e) for e, v in enumerate(r["R@1_by_epoch"]) if v > r["colour_baseline_R@1"]), "never")]
            for name, r in runs.items()]
    title = (f"A DINOv2-S-shaped ViT from random initialisation ({' '.join(setup['vit'][1:])}) on a "
             f"{setup['locations']}-location synthetic world, batch {setup['batch_size']}, lr {setup['lr']}: "
             f"test R@1 after the last epoch, and the first epoch above the colour-histogram baseline "
             f"(R@1 {', '.join(f'{b:.0f}' for b in sorted(baseline))})")
    provenance = (f"`python benches/check_backbones_synthetic.py` (`--epochs 30 --tag \"30 epochs\"` for the "
                  f"longer runs) — {setup['cpus']} CPUs, load {setup['load_avg_1min_at_start']:.1f} at the start, "
                  "commit not recorded ([JSON](../benches/results/backbones_synthetic.json))")
    return [title, "", *_rows(["run", "epochs", "R@1", "first epoch above the baseline"], rows), "", provenance]


TABLES: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "gps": ("bench_gps", gps),
    "pack": ("bench_pack", pack),
    "eval": ("bench_eval", evaluation),
    "synth": ("bench_synth", synth),
    "loader_host": ("bench_loader", loader_host),
    "loader_augment": ("bench_loader", loader_augment),
    "chunked": ("bench_chunked_step", chunked),
    "safety": ("bench_safety", safety),
    "dist_eval": ("bench_dist_eval", dist_eval),
    "sampling": ("bench_sampling", sampling),
    "reference_differences": ("bench_reference_differences", reference_differences),
    "released_lists": ("bench_released_lists", released_lists),
    "backbone_cost": ("bench_train_step_backbones", backbone_cost),
    "backbone_learning": ("backbones_synthetic", backbone_learning),
}


def table(name: str, results: Path = RESULTS) -> str:
    """The markdown between the markers of table `name`: title, table, provenance line."""
    bench, make = TABLES[name]
    d = json.loads((results / f"{bench}.json").read_text())
    # a check that is no timed bench (backbones_synthetic) writes its own provenance line
    return "\n".join([*make(d), *(["", _provenance(d)] if "machine" in d else [])]) + "\n"


def render(page: str, results: Path = RESULTS) -> str:
    """page with every marked table regenerated; an unknown name is an error."""
    def one(m: re.Match[str]) -> str:
        if m["name"] not in TABLES:
            raise SystemExit(f"{PAGE}: unknown table {m['name']!r}; known: {', '.join(TABLES)}")
        return m.group(1) + table(m["name"], results) + m.group(4)

    return MARKER.sub(one, page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/speed.md differs from the JSON")
    args = ap.parse_args(argv)
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} differs from benches/results/*.json: run python scripts/speed_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != page:
        tmp = PAGE.with_name(f".{PAGE.name}.tmp")
        tmp.write_text(new)
        tmp.replace(PAGE)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
