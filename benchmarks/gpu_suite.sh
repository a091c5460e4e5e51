#!/usr/bin/env bash
# organseg on one GPU (H100/H200), in one run of under 8 minutes, ending with one table and one JSON line:
#   - the four 512² CT members (TernausNet, LinkNet34, ResNet-50 and SE-ResNet-50 U-Nets), fp16 weights,
#     channels-last, torch.compile (warmed up before the replicas report ready): in-process and through
#     the Serve graph over gRPC at 1 and 16 clients, slices/s and one 96-slice volume's latency
#     (goals: >= 600 slices/s through Serve at 16 clients, <= 0.5 s per volume);
#   - training slices/s per member in bf16 and fp32 (the DataLoader alone beside it), and two members
#     sharing the GPU side by side against one after another.
#
# The GPU machine has torch but no Ray and no network. Prepare Ray and the missing wheels here first:
#     python scripts/gpu_bundle.py          # -> .gpu-bundle/site.tar.xz (ignored by git; under 60 MiB)
# then run this script there from the repository root with .gpu-bundle carried along:
#     benchmarks/gpu_suite.sh               # writes logs and figures under $OUT (or a temporary folder)
#
# Environment: OUT (where logs go), PYTHON (default python3), SUITE_SKIP_TRAIN=1 / SUITE_SKIP_SERVE=1,
# SUITE_COMPILE=0 (eager members), SERVE_LIMIT_S / TRAIN_LIMIT_S (per-part time limits).
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-$(mktemp -d)}/gpu-suite"
mkdir -p "$OUT_DIR"
NOTES="$OUT_DIR/notes.txt"
: > "$NOTES"
started=$SECONDS

# -- Ray and friends from the bundle -------------------------------------------------------------------
SITE=/tmp/organseg-site
if [ -f .gpu-bundle/site.tar.xz ]; then
  mkdir -p "$SITE"
  tar xJf .gpu-bundle/site.tar.xz -C "$SITE" || echo "bundle: could not unpack .gpu-bundle/site.tar.xz" >> "$NOTES"
else
  echo "bundle: .gpu-bundle/site.tar.xz missing (python scripts/gpu_bundle.py); using installed packages" >> "$NOTES"
fi
export PYTHONPATH="$SITE:$PWD/platform:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# every worker Ray starts inherits this environment (and so finds the bundle and organseg)

DEVICE="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
echo "device: ${DEVICE:-no nvidia-smi}; python: $($PY --version 2>&1)"

# -- what is importable (a part whose imports fail is skipped with the reason, not run into a traceback)
"$PY" - > "$OUT_DIR/preflight.txt" 2>&1 <<'EOF'
import importlib
serve = ["torch", "numpy", "ray", "ray.serve", "grpc", "fastapi", "httpx", "SimpleITK", "cc3d",
         "segmentation_models_pytorch", "organseg.serve.app"]
train = ["torch", "numpy", "scipy", "SimpleITK", "segmentation_models_pytorch", "organseg.train.core"]
missing = {}
for part, modules in (("serve", serve), ("train", train)):
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every failure, not just ImportError
            missing.setdefault(part, []).append(f"{name} ({type(exc).__name__}: {str(exc)[:80]})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.__version__)
for part in ("serve", "train"):
    print(f"{part}:", "ok" if part not in missing else "MISSING " + "; ".join(missing[part]))
EOF
cat "$OUT_DIR/preflight.txt"
part_ok() { grep -q "^$1: ok" "$OUT_DIR/preflight.txt"; }

# -- serving: in-process and Serve over gRPC, 1 and 16 clients ------------------------------------------
COMPILE_FLAG="--compile"
[ "${SUITE_COMPILE:-1}" = "0" ] && COMPILE_FLAG=""
if [ "${SUITE_SKIP_SERVE:-0}" = "1" ]; then
  echo "serve: skipped (SUITE_SKIP_SERVE=1)" >> "$NOTES"
elif part_ok serve; then
  echo "serving: four 512² CT members, in-process and through Serve (gRPC) ..."
  timeout "${SERVE_LIMIT_S:-250}" "$PY" benchmarks/serve_bench.py --gpu --modes separate --no-unbatched \
    --clients 1,16 --requests 3 --repeats 3 $COMPILE_FLAG > "$OUT_DIR/serve.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && echo "serve: exit $rc after $((SECONDS - started)) s (see $OUT_DIR/serve.log)" >> "$NOTES"
  grep -v '^{' "$OUT_DIR/serve.log" | grep -E "in-process|\[separate" | tail -12
else
  echo "serve: not run, $(grep '^serve:' "$OUT_DIR/preflight.txt")" >> "$NOTES"
fi
tail -1 "$OUT_DIR/serve.log" 2>/dev/null | grep '^{' > "$OUT_DIR/serve.json" || true

# -- training: slices/s per member, bf16 vs fp32; two members side by side vs one after another ----------
if [ "${SUITE_SKIP_TRAIN:-0}" = "1" ]; then
  echo "train: skipped (SUITE_SKIP_TRAIN=1)" >> "$NOTES"
elif part_ok train; then
  echo "training: four 512² CT members, bf16 and fp32 ..."
  timeout "${TRAIN_LIMIT_S:-200}" "$PY" benchmarks/train_bench.py --engine core --gpu --size 512 \
    --precisions bf16,fp32 --steps 10 --batch 16 --timeout 90 > "$OUT_DIR/train.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && echo "train: exit $rc (see $OUT_DIR/train.log)" >> "$NOTES"
  grep -v '^{' "$OUT_DIR/train.log" | tail -10
else
  echo "train: not run, $(grep '^train:' "$OUT_DIR/preflight.txt")" >> "$NOTES"
fi
tail -1 "$OUT_DIR/train.log" 2>/dev/null | grep '^{' > "$OUT_DIR/train.json" || true

echo "total $((SECONDS - started)) s; logs in $OUT_DIR"
"$PY" benchmarks/gpu_table.py "$OUT_DIR/serve.json" "$OUT_DIR/train.json" --notes "$NOTES" --device "$DEVICE"
