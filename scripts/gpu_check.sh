#!/usr/bin/env bash
# GPU readiness in one command, for the first machine with an NVIDIA GPU (under 8 minutes on one):
#   1. amp_step      obdb's Trainer, one short epoch of a Faster R-CNN on CUDA with AMP (autocast +
#                    GradScaler): finite loss, the scaler active, peak GPU memory
#   2. torchrun      a final training through the real runner under torchrun on one GPU
#                    (synthetic data, train.device cuda, train.amp true): model.pt and metrics.json
#   3. bench_train   scripts/bench_train.py --device cuda --amp (obdb's loop vs a bare loop)
#   4. bench_hpo     scripts/bench_hpo.py in its short form (2 arms, 4 trials of 2 epochs) on CUDA
# and writes one JSON summary (default gpu_check/summary.json): per step ok, seconds, details.
#
#   bash scripts/gpu_check.sh [--out DIR] [--data DIR] [--budget SECONDS]
#
#   --out DIR         work folder and summary (default ./gpu_check of the checkout)
#   --data DIR        demo data for bench_hpo (default data/demo; fetched when missing and online)
#   --budget SECONDS  wall-time budget of all steps together (default 450); each step has its share
#   --device cpu      run the same steps on the CPU, without AMP: checks this script, not a GPU
#
# Python: $PYTHON, else .venv/bin/python, else python3 (with torch and obdb's dependencies).
# Exit status: 0 all steps passed, 1 a step failed, 2 bad options / no usable Python,
# 3 no CUDA device visible to torch (nothing is run).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
out="$repo/gpu_check" data="$repo/data/demo" budget=450 device=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --out) need "$@"; out="$(absolute "$2")"; shift 2 ;;
    --data) need "$@"; data="$(absolute "$2")"; shift 2 ;;
    --budget) need "$@"; budget="$2"; shift 2 ;;
    --device) need "$@"; device="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$device" = cuda ] || [ "$device" = cpu ] || die "--device is cuda or cpu, got $device"
[[ "$budget" =~ ^[0-9]+$ ]] && [ "$budget" -ge 60 ] || die "--budget needs seconds >= 60, got $budget"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PY="$repo/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
fi
[ -n "$PY" ] && "$PY" -c "import torch, torchvision" 2>/dev/null \
  || die "no Python with torch and torchvision (${PY:-none}); run bash scripts/setup_env.sh or set PYTHON"
export PYTHONPATH="$repo/code${PYTHONPATH:+:$PYTHONPATH}"

# --- no CUDA: say so and stop before anything runs ------------------------------------------------
if [ "$device" = cpu ]; then
  cuda="CPU self-check (--device cpu): no GPU is checked"
elif ! cuda="$("$PY" - <<'PY' 2>&1
import sys, torch
if not torch.cuda.is_available():
    built = torch.version.cuda or "none (CPU-only build)"
    print(f"torch {torch.__version__} sees no CUDA device (CUDA build {built}, "
          f"{torch.cuda.device_count()} device(s)); check nvidia-smi, the driver and CUDA_VISIBLE_DEVICES")
    sys.exit(3)
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory // 2**20} MiB, capability {p.major}.{p.minor}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}")
PY
)"; then
  echo "gpu_check.sh: no GPU to check: ${cuda##*$'\n'}" >&2
  exit 3
fi
echo "gpu_check.sh: $cuda"

rm -rf "$out/parts" "$out/work"
mkdir -p "$out/parts" "$out/logs" "$out/work"
started=$SECONDS
# step NAME SHARE COMMAND...: run with a timeout of SHARE percent of the budget (at most what is
# left), log to logs/NAME.log; record ok/seconds in parts/NAME.status
step() {
  local name="$1" share="$2" t0=$SECONDS rc=0 limit left
  shift 2
  left=$((budget - (SECONDS - started)))
  limit=$((budget * share / 100))
  [ "$limit" -le "$left" ] || limit="$left"
  if [ "$limit" -lt 10 ]; then
    rc=124
    echo "no time left in the budget" > "$out/logs/$name.log"
  else
    timeout --signal=TERM --kill-after=20 "$limit" bash -c 'set -euo pipefail; "$@"' step "$@" \
      > "$out/logs/$name.log" 2>&1 || rc=$?
  fi
  printf '%s %s %s\n' "$rc" "$((SECONDS - t0))" "$limit" > "$out/parts/$name.status"
  if [ "$rc" = 0 ]; then
    echo "[PASS] $name ($((SECONDS - t0)) s)"
  else
    echo "[FAIL] $name ($((SECONDS - t0)) s, exit $rc${rc/#124/, timed out after $limit s}; log $out/logs/$name.log)"
    tail -n 12 "$out/logs/$name.log" | sed 's/^/    /'
  fi
}

# 1. AMP step through obdb's Trainer
amp_step() {
  "$PY" - "$repo" "$out/work/amp" "$out/parts/amp_step.json" "$device" <<'PY'
import json, math, sys, time
from pathlib import Path
repo, work, result, device_name = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
sys.path.insert(0, str(repo / "tests"))
import torch
cuda = device_name == "cuda"
from conftest import make_tiny_dataset
from obdb.dataset import DetectionDataset, make_loader
from obdb.models import ModelSpec
from obdb.models.detectors import assemble_detector
from obdb.records import ClassMap
from obdb.sources.local import load_local
from obdb.training import Trainer, build_optimizer, build_scheduler
from types import SimpleNamespace

root = make_tiny_dataset(work / "data", videos=4, frames=4, size=320)
data = load_local(root / "annotations", images_dir=root / "images", progress=False)
class_map = ClassMap(tuple(data.label_names()))
loader = make_loader(DetectionDataset(data.records, class_map, train=True), batch_size=4, shuffle=True, workers=0,
                     seed=0)
torch.manual_seed(0)
model = assemble_detector(ModelSpec("resnet18", num_classes=class_map.num_classes, min_size=320, max_size=320))
hp = SimpleNamespace(lr=0.005, momentum=0.9, weight_decay=1e-4, step_size=3, gamma=0.1)
optimizer = build_optimizer(model, hp)
device = torch.device(device_name)
if cuda:
    torch.cuda.reset_peak_memory_stats()
trainer = Trainer(model, optimizer, build_scheduler(optimizer, hp), loader, device=device, max_epochs=1,
                  warmup_iters=2, amp=True, name="gpu-check", progress=False, seed=0)
t0 = time.perf_counter()
state = trainer.train()
if cuda:
    torch.cuda.synchronize()
seconds = time.perf_counter() - t0
loss = state.history[-1]["train/loss"]
on_device = next(model.parameters()).device.type == device.type
amp_ok = (trainer.use_amp and trainer.scaler is not None) or not cuda
report = {"ok": bool(amp_ok and math.isfinite(loss) and on_device),
          "amp": trainer.use_amp, "grad_scale": float(trainer.scaler.get_scale()) if trainer.scaler else None,
          "train_loss": loss, "steps": len(loader), "seconds": round(seconds, 2),
          "peak_memory_mib": torch.cuda.max_memory_allocated() // 2**20 if cuda else None,
          "model_on": str(device)}
result.write_text(json.dumps(report, indent=2))
print(report)
sys.exit(0 if report["ok"] else 1)
PY
}

# 2. final training under torchrun on one GPU, through the real runner
torchrun_final() {
  "$PY" - "$repo" "$out/work/torchrun" "$device" <<'PY'
import json, sys
from pathlib import Path
repo, work, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, str(repo / "tests"))
from conftest import make_tiny_dataset, tiny_settings
data = make_tiny_dataset(work / "data", videos=8, frames=4, size=256)
settings = tiny_settings(data, work, max_train_epochs=3)
settings["model"] = {"min_size": 256, "max_size": 256}
settings["train"] = {"batch_size": 4, "workers": 2, "device": device, "amp": device == "cuda", "warmup_iters": 2}
(work / "settings.json").write_text(json.dumps(settings, indent=2))
PY
  "$PY" -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node 1 "$repo/code/torch_model_runner.py" \
    -f "$out/work/torchrun/settings.json" --progress false
  "$PY" - "$out/work/torchrun/train/resnet18" "$out/parts/torchrun.json" <<'PY'
import json, sys
from pathlib import Path
folder, result = Path(sys.argv[1]), Path(sys.argv[2])
metrics = json.loads((folder / "metrics.json").read_text())
ok = (folder / "model.pt").is_file() and bool(metrics)
report = {"ok": ok, "model": str(folder / "model.pt"), "metrics_keys": sorted(metrics)[:12],
          "map": metrics.get("map", metrics.get("val/map"))}
result.write_text(json.dumps(report, indent=2, default=str))
print(report)
sys.exit(0 if ok else 1)
PY
}

# 3. training-loop overhead on CUDA
bench_train() {
  local amp=(--amp)
  [ "$device" = cuda ] || amp=()
  "$PY" "$repo/scripts/bench_train.py" --device "$device" ${amp[@]+"${amp[@]}"} --data synthetic --size 512 --batch-size 4 --workers 2 \
    --steps 8 --warmup 2 --rounds 2 --no-progress --json "$out/parts/bench_train.json"
}

# 4. search efficiency, short form, on CUDA (needs the demo data)
bench_hpo() {
  if [ ! -d "$data/annotations" ]; then
    "$PY" "$repo/scripts/fetch_demo_data.py" --out "$data" --quiet \
      || { echo "no demo data in $data and it could not be fetched (offline?): copy data/demo here or pass --data"; return 1; }
  fi
  "$PY" "$repo/scripts/bench_hpo.py" --data "$data" --device "$device" --trials 4 --epochs 2 --start-epochs 4 \
    --arms A,B --size 256 --workers 2 --out "$out/work/bench_hpo" --json "$out/parts/bench_hpo.json"
}

# the steps run under timeout in a child bash: it gets the functions and the variables they use
export PY repo out data device
export -f amp_step torchrun_final bench_train bench_hpo
step amp_step 20 amp_step
step torchrun 30 torchrun_final
step bench_train 20 bench_train
step bench_hpo 30 bench_hpo

"$PY" - "$out" "$cuda" "$((SECONDS - started))" <<'PY'
import datetime, json, platform, sys
from pathlib import Path
out, device, total = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
steps = {}
for name in ("amp_step", "torchrun", "bench_train", "bench_hpo"):
    rc, seconds, limit = (out / "parts" / f"{name}.status").read_text().split()
    part = out / "parts" / f"{name}.json"
    steps[name] = {"ok": rc == "0", "exit": int(rc), "seconds": int(seconds), "time_limit": int(limit),
                   "log": str(out / "logs" / f"{name}.log"),
                   "result": json.loads(part.read_text()) if part.is_file() else None}
summary = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "host": platform.node(),
           "device": device, "total_seconds": total, "ok": all(s["ok"] for s in steps.values()), "steps": steps}
tmp = out / "summary.json.tmp"
tmp.write_text(json.dumps(summary, indent=2) + "\n")
tmp.replace(out / "summary.json")
print(f"summary: {out / 'summary.json'} ({'all passed' if summary['ok'] else 'FAILED'}, {total} s)")
sys.exit(0 if summary["ok"] else 1)
PY
