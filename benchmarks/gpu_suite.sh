#!/usr/bin/env bash
# organseg's speed figures on one GPU (H100/H200) in one call of at most 6 minutes, each section's JSON
# written the moment it exists, then one markdown table:
#   serve          the four 512² CT members, fp16, torch.compile (warmed up before replicas report
#                  ready): in-process and through Serve over HTTP and gRPC at 1 and 16 clients, one
#                  96-slice volume's latency, the share of time in post-processing
#                  (goals: >= 600 slices/s through Serve at 16 clients, <= 0.5 s per volume)
#   serve-eager    the same without torch.compile
#   train          two members (LinkNet34, ResNet-50 U-Net), bf16 and fp32: 10 real steps after a warm-up
#                  step, loader start-up outside the timed window (goal: bf16 >= 1.5x fp32); the two
#                  sharing the GPU against one after the other (goal: >= 1.6x)
#
# The GPU machine has torch but no Ray, SimpleITK, MONAI or pydicom, and no network; at most 64 MiB travel
# with a call. Here, first (checks that the bundle holds everything the suite imports, then packs it):
#     python scripts/gpu_bundle.py        # -> .gpu-bundle/cp312/{main,sitk}.tar.xz, ~55 MiB together
# There, in one call carrying .gpu-bundle/cp312:   benchmarks/gpu_suite.sh
# (should the parts outgrow one call: carry sitk.tar.xz with --unpack-only, then at once main.tar.xz
# with the plain command; the warm machine keeps the ignored .gpu-site/ between calls).
# Rehearsal on this machine, CPU and small sizes, from a clean virtual environment holding only the
# bundle (cp311 build, same versions), wheels of the machine's own packages and this machine's torch:
#     RAY_LOCK=/tmp/organseg-ray.lock benchmarks/gpu_suite.sh --rehearse
#
# Output: JSON lines (one per finished benchmark phase) and the table on stdout, progress on stderr;
# under $OUT/gpu-suite (or a temporary folder): <section>.jsonl, <section>.log, notes.txt, table.md.
# Environment: OUT, PYTHON (default python3), BUILD_PYTHON (rehearsal: the interpreter that builds the
# bundle, default python3), SUITE_SECTIONS (default "serve serve-eager train"), LIMIT_<SECTION> seconds,
# RAY_LOCK (a file the sections that start Ray hold with flock, waiting outside their time limit: on a
# machine shared with other local Ray clusters).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
UNPACK_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --rehearse) MODE=rehearse ;;
    --unpack-only) UNPACK_ONLY=1 ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument $arg (--rehearse, --unpack-only)" >&2; exit 2 ;;
  esac
done

OUT_DIR="${OUT:-$(mktemp -d)}/gpu-suite"
mkdir -p "$OUT_DIR"
NOTES="$OUT_DIR/notes.txt"
: > "$NOTES"
started=$SECONDS
say() { echo "$*" >&2; }
note() { echo "$*" >> "$NOTES"; say "note: $*"; }

# -- the environment: the bundle first on PYTHONPATH, over the machine's (or the rehearsal's) packages --
if [ "$MODE" = rehearse ]; then
  BUNDLE=.gpu-bundle/cp311
  BUILD_PY="${BUILD_PYTHON:-python3}"
  if [ ! -f "$BUNDLE/main.tar.xz" ] || [ scripts/gpu_bundle.json -nt "$BUNDLE/main.tar.xz" ]; then
    say "building the rehearsal bundle (cp311, same versions as the cp312 one) ..."
    "$BUILD_PY" scripts/gpu_bundle.py --python-version 3.11 --stand-ins --out "$BUNDLE" \
      --xz-preset 1 >&2 || { say "bundle: the completeness check or the build failed"; exit 1; }
  fi
  REH="${REHEARSAL_DIR:-/tmp/organseg-rehearsal}"
  rm -rf "$REH"
  mkdir -p "$REH"
  "$BUILD_PY" -m venv "$REH/venv" || exit 1
  PY="$REH/venv/bin/python"
  # the machine's own packages, from wheels only (no index): what the suite needs of them, nothing more
  "$PY" -m pip install --quiet --no-index --no-deps --find-links "$BUNDLE/machine" \
    -r "$BUNDLE/machine.txt" >&2 || { say "rehearsal: could not install the stand-ins"; exit 1; }
  # this machine's torch stands in for the GPU machine's (linked, not copied: it is gigabytes)
  "$BUILD_PY" scripts/gpu_bundle.py --link-torch "$REH/torch" >&2 || exit 1
  "$PY" -c "import site; print(site.getsitepackages()[0])" | xargs -I{} sh -c "echo '$REH/torch' > {}/torch-stand-in.pth"
  SITE="$REH/site"
  sizes="--size 64 --slices 16 --requests 1 --repeats 2"
  train_sizes="--size 32 --batch 2 --timeout 150"
  train_members="dualtail,attention-unet"
  gpu_flag=""
  : "${LIMIT_SERVE:=330}" "${LIMIT_SERVE_EAGER:=240}" "${LIMIT_TRAIN:=420}"
else
  BUNDLE=.gpu-bundle/cp312
  PY="${PYTHON:-python3}"
  SITE="$PWD/.gpu-site"
  sizes="--requests 2 --repeats 3"
  train_sizes="--size 512 --batch 16 --timeout 45"
  train_members="linknet34,unet-resnet50"
  gpu_flag="--gpu"
  # one H100 call is at most 6 minutes: unpacking ~15 s, the sections below, 10 s grace each, the table
  : "${LIMIT_SERVE:=140}" "${LIMIT_SERVE_EAGER:=75}" "${LIMIT_TRAIN:=100}"
fi

mkdir -p "$SITE"
for part in "$BUNDLE"/*.tar.xz; do
  [ -f "$part" ] || continue
  stamp="$SITE/.$(basename "$part").stamp"
  size="$(stat -c %s "$part")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$size" ]; then
    say "unpacking $part ..."
    tar xJf "$part" -C "$SITE" && echo "$size" > "$stamp" || note "bundle: could not unpack $part"
  fi
done
[ "$UNPACK_ONLY" = 1 ] && { say "unpacked into $SITE in $((SECONDS - started)) s"; exit 0; }
ls "$SITE"/.*.stamp > /dev/null 2>&1 || note "bundle: nothing unpacked in $SITE; using installed packages"

export PYTHONPATH="$SITE:$PWD/platform:$PWD/benchmarks"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# every process Ray starts inherits this environment (and so finds the bundle and organseg)

DEVICE="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
[ "$MODE" = rehearse ] && DEVICE="CPU rehearsal ($(nproc) cores)"
say "device: ${DEVICE:-no nvidia-smi}; $("$PY" --version 2>&1); $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1)"

SECTIONS="${SUITE_SECTIONS:-serve serve-eager train}"
# batch (organseg batch, studies/hour/GPU) is not in the default set, which fills one 6-minute call:
# SUITE_SECTIONS=batch runs it as a second call where the device time allows.
: "${LIMIT_BATCH:=150}"
limit_of() { case "$1" in serve) echo "$LIMIT_SERVE" ;; serve-eager) echo "$LIMIT_SERVE_EAGER" ;; train) echo "$LIMIT_TRAIN" ;; batch) echo "$LIMIT_BATCH" ;; esac; }
budget=0
for s in $SECTIONS; do budget=$((budget + $(limit_of "$s") + 10)); done
say "budget: $(for s in $SECTIONS; do printf '%s %s s, ' "$s" "$(limit_of "$s")"; done)10 s grace each: at most $budget s after $((SECONDS - started)) s of set-up"

# One section: its own time limit (TERM, then KILL 10 s later), its own log and JSON lines; a section
# that fails or runs out of time costs only the figures it had not written yet.
section() {
  local name=$1 limit=$2 lock=()
  shift 2
  local jsonl="$OUT_DIR/$name.jsonl" t0=$SECONDS
  : > "$jsonl"
  [ -n "${RAY_LOCK:-}" ] && { [ "${name#serve}" != "$name" ] || [ "$name" = batch ]; } && lock=(flock "$RAY_LOCK")
  say "== $name (limit $limit s) ..."
  "${lock[@]}" timeout -k 10 "$limit" "$@" --jsonl "$jsonl" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    note "$name: stopped at its $limit s limit (figures written before that are kept; $OUT_DIR/$name.log)"
  elif [ $rc -ne 0 ]; then
    note "$name: exit $rc: $(grep -E 'Error|error' "$OUT_DIR/$name.log" | tail -1 | cut -c1-200)"
  fi
  cat "$jsonl"
  say "== $name: $((SECONDS - t0)) s (lock wait included), $(wc -l < "$jsonl") figure lines"
}

for s in $SECTIONS; do
  case "$s" in
    serve | serve-eager)
      compile=""
      [ "$s" = serve ] && compile="--compile"
      section "$s" "$(limit_of "$s")" "$PY" benchmarks/serve_bench.py $gpu_flag $compile \
        --phases inprocess,serve --modes separate --no-unbatched --clients 1,16 $sizes ;;
    train)
      section train "$LIMIT_TRAIN" "$PY" benchmarks/train_bench.py --engine core $gpu_flag \
        --members "$train_members" --precisions bf16,fp32 --steps 10 $train_sizes ;;
    batch)
      batch_sizes=""
      [ "$MODE" = rehearse ] && batch_sizes="--studies 4 --cli-studies 2 --skip-two-raylets"
      section batch "$LIMIT_BATCH" "$PY" benchmarks/batch_bench.py $gpu_flag $batch_sizes ;;
    *) note "unknown section $s" ;;
  esac
done

say "total $((SECONDS - started)) s; logs in $OUT_DIR"
"$PY" benchmarks/gpu_table.py "$OUT_DIR" --notes "$NOTES" --device "$DEVICE" | tee "$OUT_DIR/table.md"
