#!/usr/bin/env bash
# One prepared GPU check (issue 18): every GPU figure of the project in at most 8 minutes.
#
#   bash bench/gpu_check.sh OUT_DIR             # on a GPU machine (H100/H200)
#   bash bench/gpu_check.sh --dry-run OUT_DIR   # tiny sizes on the CPU (CI: tests/test_gpu_check.py)
#
# On the GPU machine it first installs the wheels of bench/gpu_wheels.txt from the wheel folder
# (default .whl, made by `bash bench/gpu_wheels.sh`; override with LASERSB_WHEELS=DIR) into a
# private folder with `pip install --no-index --no-deps`, and pytest's wheels of
# bench/gpu_wheels_pytest.txt only when pytest is missing there. Then bench/gpu_check.py runs
# each step in its own subprocess with its own time budget and writes OUT_DIR/tables.md,
# OUT_DIR/results.json and OUT_DIR/gpu_check.log after every step. The whole run is stopped at
# 8 minutes whatever happens (what was written by then stays). See bench/README.md.
# LASERSB_GPU_CHECK_BUDGET_S (default 480) changes the total, LASERSB_GPU_CHECK_ONLY=a,b runs
# only those steps (env, recipes, triton_tests, soft_dtw, laser, augment, superb_pr);
# LASERSB_GPU_CHECK_RECIPES=a,b (or all) picks the recipes the recipes step runs (default: all on
# the GPU, template_mini and laser_mini@torchrun in the dry run).
set -uo pipefail

dry_run=""
out_dir=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run="--dry-run" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) out_dir="$arg" ;;
  esac
done
if [ -z "$out_dir" ]; then
  echo "usage: bash bench/gpu_check.sh [--dry-run] OUT_DIR" >&2
  exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo" || exit 2
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
log="$out_dir/gpu_check.log"
started_at="$(date +%s)"
total_s="${LASERSB_GPU_CHECK_BUDGET_S:-480}"   # 8 minutes, everything included
python="${PYTHON:-python3}"
: >"$log"

if [ -z "$dry_run" ]; then
  wheels="${LASERSB_WHEELS:-$repo/.whl}"
  site="${LASERSB_GPU_SITE:-/tmp/lasersb_gpu_site}"
  requirements=(-r bench/gpu_wheels.txt)
  if ! "$python" -c "import pytest" >/dev/null 2>&1; then
    echo "[gpu_check] pytest missing on this image: installing bench/gpu_wheels_pytest.txt" | tee -a "$log"
    requirements+=(-r bench/gpu_wheels_pytest.txt)
  fi
  if [ -d "$wheels" ]; then
    echo "[gpu_check] installing carried wheels from $wheels into $site" | tee -a "$log"
    if timeout 60 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" --find-links "$wheels" "${requirements[@]}" >>"$log" 2>&1; then
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "[gpu_check] wheel installation FAILED (see $log); steps that need them will fail" | tee -a "$log"
    fi
  else
    echo "[gpu_check] no wheel folder $wheels: pysdtw and superb_pr (speechbrain) will be missing" | tee -a "$log"
  fi
  export LASERSB_GPU_MINI="${LASERSB_GPU_MINI:-$wheels/mini_corpus}"   # the recipes step's data
fi

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
now="$(date +%s)"
left=$(( total_s - (now - started_at) - 15 ))   # 15 s kept for stopping and writing
only=()
[ -n "${LASERSB_GPU_CHECK_ONLY:-}" ] && only=(--only "$LASERSB_GPU_CHECK_ONLY")
timeout --kill-after=10 $(( left + 10 )) "$python" bench/gpu_check.py "$out_dir" $dry_run \
  --budget-s "$left" "${only[@]}" 2>&1 | tee -a "$log.console"
status=${PIPESTATUS[0]}
cat "$log.console" >>"$log" && rm -f "$log.console"
echo "[gpu_check] done in $(( $(date +%s) - started_at )) s (exit $status); tables: $out_dir/tables.md"
exit "$status"
