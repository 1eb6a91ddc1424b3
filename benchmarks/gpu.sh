#!/usr/bin/env bash
# kit's GPU checks, one prepared script for a machine with an NVIDIA GPU (issue 11).
#
#   bash benchmarks/gpu.sh                 # results under $OUT (default: a new temp folder)
#   KIT_GPU_SMOKE=1 bash benchmarks/gpu.sh # the same steps on the CPU at toy sizes (a dry run)
#
# It installs nothing from the network. It needs a Python with torch (CUDA build), timm,
# albumentations, opencv, scikit-learn and pandas: $PYTHON, else .venv/bin/python, else python3.
# When one is missing and a folder of wheels came with the working tree ($KIT_WHEELS, default
# shared/wheels), they are installed from there only (pip --no-index) into a throw-away venv that
# sees the system's packages. kit itself runs from this checkout (PYTHONPATH), not installed.
#
# Prints, each step bounded by `timeout` (the whole script: about 7 minutes on an H200):
#   1. amp_speedup=<x>         resnet50 training step at 224 px, channels_last, AMP vs fp32
#                               (goal >= 2); also the img/s of each
#   2. predict_peak_gib=<x>    kit's prediction of resnet50 at 512 px, 8 views x batch 256, in a
#                               16 GiB budget (enforced with set_per_process_memory_fraction):
#                               PassBudget sizes the passes, OOM halves them; the outputs are
#                               checked against small passes; predict_within_budget=True|False
#   3. feed_ratio=<x>          benchmarks/feed.py: kit's train_fold, resnet50 at 224 px, AMP +
#                               channels_last, real JPEG decode + augmentation with kit's
#                               defaults vs the raw-pixel feed (goal >= 0.95)
#   4. parallel_gpu_ok=<bool>  `kit train --parallel auto` on the bundled digits (issue 14): one
#                               child per GPU, forked from kit.warm's server (which imported
#                               torch but never touched CUDA); every fold trained on cuda and the
#                               run is complete; also its wall seconds and a sequential run's
# and writes everything to $OUT/gpu_results.txt and the figures to $OUT/gpu_summary.json.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$(mktemp -d -t kit-gpu-XXXXXX)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_results.txt"
SMOKE="${KIT_GPU_SMOKE:-0}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 KIT_PROGRESS=lines
export KIT_HOME="$OUT/kit-home"  # no measurement from elsewhere: kit's defaults on this machine
exec > >(tee -a "$LOG") 2>&1

say() { printf '\n== %s\n' "$*"; }
report() {  # report EXIT NAME: show the step's output, and say when it failed or timed out
    cat "$OUT/$2.txt"
    [ "$1" = 0 ] || echo "step $2 failed (exit $1; 124 = timed out)"
}
NEEDED="torch timm albumentations cv2 sklearn pandas PIL"

pick_python() {
    for candidate in "${PYTHON:-}" "$REPO/.venv/bin/python" python3; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "import $(echo $NEEDED | tr ' ' ',')" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

PY="$(pick_python)"
if [ -z "$PY" ]; then
    WHEELS="${KIT_WHEELS:-$REPO/shared/wheels}"
    if [ -d "$WHEELS" ]; then
        say "installing the missing packages from $WHEELS (no network)"
        python3 -m venv --system-site-packages "$OUT/venv" &&
            "$OUT/venv/bin/pip" install -q --no-index --find-links "$WHEELS" \
                timm albumentations opencv-python-headless scikit-learn pandas pillow
        PY="$(PYTHON="$OUT/venv/bin/python" pick_python)"
    fi
fi
if [ -z "$PY" ]; then
    echo "no Python here imports: $NEEDED; set PYTHON=, or bring wheels in shared/wheels" >&2
    exit 2
fi

say "machine"
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "(no nvidia-smi)"
echo "cpu cores: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - <<'EOF'
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"available {torch.cuda.is_available()}")
EOF

say "1. AMP speed-up: resnet50 training step, 224 px, channels_last"
timeout 150 "$PY" - "$SMOKE" > "$OUT/amp.txt" <<'EOF'
import sys, time
import torch
from kit.config import ModelSection
from kit.device import autocast, needs_grad_scaler, normalise, to_unit_float
from kit.train.model import create_model

smoke = sys.argv[1] == "1"
device = torch.device("cpu" if smoke else "cuda")
if smoke:
    torch.set_num_threads(1)  # a dry run on a shared CPU
torch.backends.cudnn.benchmark = True  # as kit's training sets it (kit.device.tune_backend)
name, size, batch, steps = ("resnet18", 32, 4, 1) if smoke else ("resnet50", 224, 128, 30)
model = create_model(ModelSection(name=name), 10).to(device).to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
targets = torch.randint(0, 10, (batch,), device=device)
stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

def rate(amp: bool) -> float:
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, amp))
    def step():
        x = normalise(to_unit_float(images, device), *stats)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    for _ in range(3 if not smoke else 1):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)

fp32, amp = rate(False), rate(True)
dtype = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp16/none"
print(f"{name} {size}px batch {batch}: fp32 {fp32:.0f} img/s, amp ({dtype}) {amp:.0f} img/s "
      f"(cudnn tf32 {torch.backends.cudnn.allow_tf32})")
print(f"amp_speedup={amp / fp32:.2f}")
EOF
report $? amp

say "2. prediction memory: resnet50, 512 px, 8 views x batch 256, 16 GiB budget"
timeout 150 "$PY" - "$SMOKE" > "$OUT/predict.txt" <<'EOF'
import sys
import numpy as np
import torch
from kit.config import ModelSection
from kit.device import PassBudget
from kit.infer.predict import _forward
from kit.infer.tta import parse_view
from kit.task import Task
from kit.train.model import create_model

smoke = sys.argv[1] == "1"
device = torch.device("cpu" if smoke else "cuda")
if smoke:
    torch.set_num_threads(1)  # a dry run on a shared CPU
name, size, batch = ("resnet18", 32, 16) if smoke else ("resnet50", 512, 256)
budget_bytes = 16 * 2**30
if device.type == "cuda":  # what a 16 GiB card would have: more is a real out-of-memory error
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_bytes / total), device)
task = Task("multiclass", tuple(range(10)))
model = create_model(ModelSection(name=name), 10).to(device).eval()
views = [parse_view(v) for v in ("identity", "hflip", "vflip", "transpose", "antitranspose",
                                 "rot90", "rot180", "rot270")]
stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
x = torch.rand(batch, 3, size, size, device=device)
budget = PassBudget(device, memory_bytes=budget_bytes)
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
with torch.no_grad():
    out = _forward(model, x, views, *stats, device, True, task, budget)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    small = _forward(model, x[:16], views, *stats, device, True, task,
                     PassBudget(device, images=8, memory_bytes=budget_bytes))
difference = float(np.abs(out[:, :16] - small).max())
print(f"{name} {size}px: {len(views)} views x {batch} images = {len(views) * batch} view-images; "
      f"images per pass {budget.images}, out-of-memory halvings {budget.halvings}")
print(f"max |difference| against passes of 8: {difference:.2e} (autocast; per-image results)")
print(f"predict_peak_gib={peak / 2**30:.2f}")
print(f"predict_within_budget={peak <= budget_bytes and difference < 1e-2}")
EOF
report $? predict

say "3. feed ratio: kit's train_fold, resnet50 224 px, AMP + channels_last"
if [ "$SMOKE" = 1 ]; then
    FEED_ARGS=(--model resnet18 --images 64 --valid 16 --source 64 --size 32 --batch 16
               --device cpu)
else
    FEED_ARGS=(--model resnet50 --images 6000 --valid 256 --source 256 --size 224 --batch 128
               --device cuda --amp --rounds 2)
fi
timeout 330 "$PY" "$REPO/benchmarks/feed.py" "${FEED_ARGS[@]}" > "$OUT/feed.txt"
report $? feed

say "4. --parallel auto on the GPU(s): children forked warm, CUDA_VISIBLE_DEVICES per slot"
DEVICE=cuda; [ "$SMOKE" = 1 ] && DEVICE=cpu
timeout 240 "$PY" - "$OUT" "$DEVICE" > "$OUT/parallel.txt" 2>&1 <<'EOF'
import json, subprocess, sys, time
from pathlib import Path

from kit.data.download import download
from kit.data.folds import make_folds
from kit.scaffold import new_competition

out, device = Path(sys.argv[1]), sys.argv[2]
competition = new_competition("digits", out / "parallel", example="digits")
download(competition)
make_folds(competition)
sets = ["--set", "train.epochs=2", "--set", f"train.device={device}", "--set", "train.threads=1"]
kit = [sys.executable, "-m", "kit", "train", "-C", str(competition.root), *sets]
seconds = {}
for name, extra in (("sequential", []), ("parallel", ["--parallel", "auto"])):
    started = time.perf_counter()
    done = subprocess.run([*kit, "--name", name, *extra], capture_output=True, text=True)
    seconds[name] = time.perf_counter() - started
    print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
    if done.returncode:
        print(f"kit train {name}: exit {done.returncode}\nparallel_gpu_ok=False")
        sys.exit(1)
log = competition.root / "runs" / "parallel" / "log.jsonl"
starts = [json.loads(line) for line in log.read_text().splitlines() if '"fold_start"' in line]
metrics = json.loads((competition.root / "runs" / "parallel" / "metrics.json").read_text())
devices = sorted({start["device"] for start in starts})
print(f"fold devices {devices}, where {sorted({start['where'] for start in starts})}")
print(f"sequential_seconds={seconds['sequential']:.1f} parallel_seconds={seconds['parallel']:.1f}")
ok = len(metrics["fold_ids"]) == 5 and all(d.startswith(device) for d in devices)
print(f"parallel_gpu_ok={ok}")
EOF
report $? parallel

say "summary"
"$PY" - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
figures = {}
for name in ("amp", "predict", "feed", "parallel"):
    path = out / f"{name}.txt"
    text = path.read_text() if path.exists() else ""
    for key, value in re.findall(r"^(\w+)=(\S+)$", text, re.M):
        figures[key] = value
(out / "gpu_summary.json").write_text(json.dumps(figures, indent=2) + "\n")
for key in ("amp_speedup", "predict_peak_gib", "predict_within_budget", "cpu_time_ratio",
            "feed_ratio", "parallel_gpu_ok"):
    print(f"{key}={figures.get(key, 'MISSING')}")
EOF
echo "results: $LOG"
