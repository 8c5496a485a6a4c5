#!/usr/bin/env bash
# One-shot GPU check of s4g on a machine with one H100/H200, no network and no Rust: python 3.12
# with torch, torchvision, typer, rich, pillow, numpy, pytest and timm. Run from the checkout:
#
#   bash benches/gpu_check.sh [WHEEL]        # WHEEL: `maturin build --release -o dist` output
#                                            # (default: the newest dist/*.whl)
#   bash benches/gpu_check.sh --cpu [WHEEL]  # the same steps at toy sizes on the CPU (script check)
#
# Installs the wheel with `pip install --no-deps --target` into a scratch folder (nothing
# else on the machine changes), then: the CUDA tests; bench_train_step.py at the paper's sizes
# (ConvNeXt-B, bf16, channels-last; images/s and % of the GPU's dense bf16 peak) and a DINOv2-B
# step (timm, 392 and 140x770: the sizes rounded to its 14-pixel patch); the loader bench with
# the augmentation on the GPU; evaluation and mining at VIGOR-test scale (52,605 ×
# 90,618, D = 1024, random unit embeddings); a short synthetic training on CUDA with
# augmentation on; the chunked step's memory and time (bench_chunked_step.py). Each step has a
# time limit and a failing step does not stop the others.
# Writes one JSON of all figures to $OUT/gpu_check.json ($OUT unset: benches/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
if [[ "${1:-}" == "--cpu" ]]; then MODE=cpu; shift; fi
WHEEL=${1:-$(ls -t dist/*.whl 2>/dev/null | head -n 1)}
PY=${PYTHON:-python3}
if [[ -z "$WHEEL" || ! -f "$WHEEL" ]]; then
    echo "gpu_check: no wheel; build one with 'maturin build --release -o dist' and pass its path" >&2
    exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/s4g-gpu-check.XXXXXX")
RESULTS=${OUT:-$REPO/benches/results}
mkdir -p "$RESULTS" "$WORK/parts"
START=$(date +%s)
"$PY" -m pip install -q --no-deps --no-index --target "$WORK/site" "$WHEEL" || exit 1
# The installed wheel, never the source tree (which has no compiled extension); -P keeps the
# current directory off sys.path for `python -c` and `-m`.
export PYTHONPATH="$WORK/site" XDG_CACHE_HOME="$WORK/cache" PYTHONDONTWRITEBYTECODE=1
declare -A STATUS

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to parts/NAME.log
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$WORK/parts/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$WORK/parts/$name.log"
    STATUS[$name]="rc=$rc seconds=$((SECONDS - t0))"
    echo "-- $name: ${STATUS[$name]}"
}

if [[ $MODE == gpu ]]; then
    DEVICE=cuda; BACKBONE=convnext_base; EVAL_ARGS=(--repeat 1)
    # 32 VIGOR pairs, the bench's default (the paper spreads its 128 over several GPUs)
    VIGOR_STEP=(--batch-size 32 --aerial-size 384 --ground-size 384 768 --rounds 2)
    CVUSA_STEP=(--batch-size 64 --aerial-size 384 --ground-size 140 768 --rounds 2)
    LOADER=(--pairs 4 --items 24 --batch 128 --repeats 2); LOCATIONS=600; EPOCHS=2; BATCH=64
    CHUNK_ARGS=(--configs paper --steps 3)  # ConvNeXt-B bf16, plain/8/32/128 and auto under memory caps
    # DINOv2-B at the paper's CVUSA sizes rounded to its 14-pixel patch, 64 pairs as CVUSA_STEP
    DINO=timm/vit_base_patch14_dinov2; DINO_STEP=(--batch-size 64 --aerial-size 392 --ground-size 140 770 --rounds 2)
else
    DEVICE=cpu; BACKBONE=convnext_micro; EVAL_ARGS=(--scale 0.005 --quick --repeat 1 --no-torch-mining)
    VIGOR_STEP=(--batch-size 2 --aerial-size 64 --ground-size 64 128 --rounds 1 --steps 2 --warmup 1)
    CVUSA_STEP=(--batch-size 2 --aerial-size 64 --ground-size 32 128 --rounds 1 --steps 2 --warmup 1)
    LOADER=(--pairs 1 --items 2 --batch 4 --repeats 1 --datasets vigor); LOCATIONS=60; EPOCHS=1; BATCH=16
    CHUNK_ARGS=(--configs synthetic --runs 8:plain 8:4 --steps 1 --warmup 0)
    DINO=timm/vit_small_patch14_dinov2
    DINO_STEP=(--batch-size 2 --aerial-size 56 --ground-size 28 112 --rounds 1 --steps 2 --warmup 1)
fi
PEAK=$("$PY" -P -c "
import os, torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ''
# dense bf16 tensor-core peaks, TFLOP/s: SXM 989, NVL 835, H100 PCIe 756
peak = 835 if 'NVL' in name else 756 if 'PCIe' in name else 989 if ('H100' in name or 'H200' in name) else 0
print(os.environ.get('PEAK_TFLOPS', peak))")
PEAK_ARG=(); [[ "$PEAK" != 0 ]] && PEAK_ARG=(--peak-tflops "$PEAK")

step cuda_tests 150 "$PY" -P -m pytest -q -p no:cacheprovider tests/test_evaluate.py tests/test_mining.py \
    tests/test_augment.py tests/test_chunked.py -k "gpu_path or cuda or capped_gpu"
step train_step_vigor 150 "$PY" benches/bench_train_step.py --backbone "$BACKBONE" --device "$DEVICE" \
    "${VIGOR_STEP[@]}" "${PEAK_ARG[@]}" --out "$WORK/parts/train_step_vigor.json"
step train_step_cvusa 120 "$PY" benches/bench_train_step.py --backbone "$BACKBONE" --device "$DEVICE" \
    "${CVUSA_STEP[@]}" "${PEAK_ARG[@]}" --out "$WORK/parts/train_step_cvusa.json"
step train_step_dinov2 150 "$PY" benches/bench_train_step.py --backbone "$DINO" --device "$DEVICE" \
    "${DINO_STEP[@]}" "${PEAK_ARG[@]}" --out "$WORK/parts/train_step_dinov2.json"
step loader 150 "$PY" benches/bench_loader.py --device "$DEVICE" "${LOADER[@]}" --out "$WORK/parts/loader.json"
step eval_mining 150 "$PY" benches/bench_eval.py "${EVAL_ARGS[@]}" --out "$WORK/parts/eval_mining.json"
step chunked_step 180 "$PY" benches/bench_chunked_step.py --device "$DEVICE" "${CHUNK_ARGS[@]}" \
    --out "$WORK/parts/chunked_step.json"
step train_synthetic 150 "$PY" -P -c "from s4g.app.cli import main; main()" train --dataset synthetic \
    --device "$DEVICE" --locations "$LOCATIONS" --epochs "$EPOCHS" --batch-size "$BATCH" --augment --workers 4 \
    --out "$WORK/run"
cp "$WORK/run/metrics.jsonl" "$WORK/parts/train_synthetic.jsonl" 2>/dev/null

STATUS_JSON=$(for k in "${!STATUS[@]}"; do echo "$k ${STATUS[$k]}"; done)
"$PY" -P - "$WORK/parts" "$RESULTS/gpu_check.json" "$MODE" "$((SECONDS))" "$WHEEL" <<EOF
import json, os, platform, sys, time
import torch
parts, out, mode, seconds, wheel = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def load(name):
    path = os.path.join(parts, name)
    try:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in open(path)]
        return json.load(open(path))
    except (OSError, ValueError):
        return None
steps = {}
for line in """$STATUS_JSON""".strip().splitlines():
    name, rc, secs = line.split()
    steps[name] = {"rc": int(rc.split("=")[1]), "seconds": int(secs.split("=")[1])}
    log = os.path.join(parts, name + ".log")
    steps[name]["log_tail"] = open(log).read()[-1500:] if os.path.exists(log) else ""
figures = {"train_step_vigor": load("train_step_vigor.json"), "train_step_cvusa": load("train_step_cvusa.json"),
           "train_step_dinov2": load("train_step_dinov2.json"),
           "loader": load("loader.json"), "eval_mining": load("eval_mining.json"),
           "chunked_step": load("chunked_step.json"),
           "train_synthetic": load("train_synthetic.jsonl")}
derived = {}
try:  # the batched augmentation of 128 VIGOR pairs against a training step of 128 pairs
    step = figures["train_step_vigor"]
    per_pair = step["results"]["s4g"]["s_per_step"] / step["args"]["batch_size"]
    aug = figures["loader"]["augment"]["vigor"]["cuda" if mode == "gpu" else "cpu"]
    derived["augment_ms_per_128_vigor_pairs"] = aug["ms_per_batch"] * 128 / aug["pairs"]
    derived["train_step_ms_per_128_vigor_pairs"] = 1e3 * per_pair * 128
    derived["augment_share_of_step"] = derived["augment_ms_per_128_vigor_pairs"] / derived["train_step_ms_per_128_vigor_pairs"]
    host = figures["loader"]["host"]["vigor"]["s4g host"]["ms_per_pair"]
    derived["host_ms_per_vigor_pair_per_core"] = host
    derived["cores_to_feed_the_gpu"] = host / 1e3 / per_pair
except (KeyError, TypeError, ZeroDivisionError):
    pass
payload = {"bench": "gpu_check", "mode": mode, "wheel": os.path.basename(wheel), "seconds": seconds,
           "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "machine": {"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
                       "python": platform.python_version(), "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           "steps": steps, "derived": derived, **figures}
tmp = out + ".tmp"
with open(tmp, "w") as fh:
    json.dump(payload, fh, indent=2, sort_keys=True)
os.replace(tmp, out)
print(json.dumps(derived, indent=2))
print("steps:", {k: (v["rc"], v["seconds"]) for k, v in steps.items()})
print("wrote", out)
EOF
rc=$?
rm -rf "$WORK"
failed=$(for k in "${!STATUS[@]}"; do [[ ${STATUS[$k]} == rc=0* ]] || echo "$k"; done)
if [[ -n "$failed" ]]; then echo "gpu_check: failed steps: $failed" >&2; exit 1; fi
exit $rc
