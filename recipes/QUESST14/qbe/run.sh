#!/usr/bin/env bash
# SUPERB query-by-example STD on QUESST 2014 (s3prl quesst14_dtw) for any upstream and layer.
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: (--mini) the embedded mini corpus; then the manifests (data_prep/quesst14_prepare.py)
#   1  features, DTW, STD lists and metrics for each --layers entry (recipes/QUESST14/qbe/evaluate.py)
#   2  results table: MTWV per layer and split; the layer with the best dev MTWV (SUPERB's choice)
#
# Usage (from anywhere):
#   bash recipes/QUESST14/qbe/run.sh --mini                                  # seconds on a CPU
#   bash recipes/QUESST14/qbe/run.sh --data_folder /data/quesst14Database \
#       --upstream facebook/hubert-base-ls960 --layers "-1" [--stage 1 --stop_stage 2]
#   bash recipes/QUESST14/qbe/run.sh ... --layers "0 1 2 3 4 5 6 7 8 9 10 11 12"  # SUPERB sweep
# Arguments after `--` go to evaluate.py (hparams overrides such as --dist_method=cosine).
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 2 "last stage to run"
flag mini "the embedded mini corpus (QUESST 2014 layout), fbank features by default"
option hparams "" "hparams file (default: hparams/qbe.yaml, qbe_mini.yaml with --mini)"
option data_folder "" "quesst14Database folder"
option upstream "" "hub id or local HF folder (default: the hparams file's upstream_source)"
option layers "-1" "hidden states to evaluate (-1: last; SUPERB sweeps 0..12)"
option exp "" "output folder (default: results/quesst14_qbe_run, _mini_run with --mini)"
parse_options "$@"

cd "$repo_root"
recipe=recipes/QUESST14/qbe
if $mini; then
    exp=${exp:-results/quesst14_qbe_mini_run}
    hparams=${hparams:-$recipe/hparams/qbe_mini.yaml}
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/QUESST14
else
    exp=${exp:-results/quesst14_qbe_run}
    hparams=${hparams:-$recipe/hparams/qbe.yaml}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/quesst14Database (or --mini for the embedded corpus)." >&2
        exit 1
    fi
fi
mkdir -p "$exp"
args=(--data_folder="$data_folder" --manifest_folder="$exp/manifests")
if [ -n "$upstream" ]; then
    args+=(--upstream_source="$upstream")
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
    fi
    python -m data_prep.quesst14_prepare "$data_folder" "$exp/manifests" \
        --num-workers "$(python -m lasersb.config "$hparams" prep_num_workers)"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    for layer in $layers; do
        out="$exp/layer_${layer}"
        if [ -f "$out/qbe_summary.json" ]; then
            log "Stage 1: layer $layer already done ($out/qbe_summary.json exists)"
            continue
        fi
        log "Stage 1: QbE with $hparams, layer $layer -> $out"
        python $recipe/evaluate.py "$hparams" "${args[@]}" --layer="$layer" \
            --output_folder="$out" "${extra_args[@]}"
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: results"
    python - "$exp" $layers <<'PY'
import json, sys
from pathlib import Path

exp, layers = Path(sys.argv[1]), sys.argv[2:]
rows, best = [], None
for layer in layers:
    summary = json.loads((exp / f"layer_{layer}" / "qbe_summary.json").read_text())
    dev, ev = summary.get("dev", {}), summary.get("eval", {})
    cells = [f"{s['mtwv']:.4f}" if s else "-" for s in (dev, ev)]
    rows.append(f"| {layer} | {cells[0]} | {cells[1]} |")
    if dev and (best is None or dev["mtwv"] > best[1]):
        best = (layer, dev["mtwv"], f"{ev['mtwv']:.4f}" if ev else "not run")
table = ["| layer | dev MTWV | eval MTWV |", "| --- | ---: | ---: |", *rows]
if best is not None:
    table.append(f"\nBest dev layer: {best[0]} (eval MTWV {best[2]})")
text = "\n".join(table) + "\n"
(exp / "results.md").write_text(text)
print(text)
PY
fi
