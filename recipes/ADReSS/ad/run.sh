#!/usr/bin/env bash
# ADReSS Alzheimer's detection by transfer of a DINO / x-vector embedding model, both
# fine-tuning schedules, on the challenge's train/test split.
#
# Stages (ESPnet style; each skips or resumes work already done):
#   0  data: ADReSS manifests; with --mini, first the embedded mini corpus and, unless
#      --checkpoint is given, a tiny DINO model (recipes/VoxCeleb/dino)
#   1  fine-tune and test for each schedule in --schedules (resumes from checkpoints; a
#      finished run, <exp>/<schedule>/results.json, is skipped)
#   2  report: one Markdown table of all schedules
#
# Usage (from anywhere):
#   bash recipes/ADReSS/ad/run.sh --mini
#   bash recipes/ADReSS/ad/run.sh --data_folder /data/ADReSS-IS2020-data \
#        --checkpoint results/dino/1986/embedding_model.ckpt [--exp results/adress_ad/dino] \
#        [--schedules "two_stage single_stage"] [-- --chunk_seconds=4.0 --use_chunks=True]
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 2 "last stage to run"
flag mini "the embedded mini corpus (and a tiny DINO model unless --checkpoint)"
option data_folder "" "ADReSS-IS2020-data folder"
option checkpoint "" "embedding_model.ckpt, or a DINO/x-vector output folder; null: random init"
option schedules "two_stage single_stage" "fine-tuning schedules to run"
option exp "" "output folder (default: results/adress_ad/<checkpoint name>)"
option device "" "torch device (default: cuda:0 when available, else cpu)"
parse_options "$@"

cd "$repo_root"
if [ -z "$device" ]; then
    device=$(default_device)
fi
recipe=recipes/ADReSS/ad
hparams=$recipe/hparams/ad.yaml

if $mini; then
    hparams=$recipe/hparams/ad_mini.yaml
    mini_root=${LASERSB_MINI_ROOT:-results/transfer_mini/mini_corpus}
    data_folder=$mini_root/ADReSS
    exp=${exp:-results/transfer_mini/adress_ad}
    checkpoint=${checkpoint:-results/transfer_mini/dino}
elif [ -z "$data_folder" ] || [ -z "$checkpoint" ]; then
    echo "Give --data_folder /path/ADReSS and --checkpoint CKPT (or --mini)." >&2
    exit 1
fi
exp=${exp:-results/adress_ad/$(basename "$checkpoint" .ckpt)}
args=(--data_folder="$data_folder" --manifest_folder="$exp/manifests"
      --embedding_checkpoint="$checkpoint" --device="$device")

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        if [ "$checkpoint" = results/transfer_mini/dino ]; then
            mini_dino "$checkpoint" "$mini_root" "$device"
        fi
    fi
    python -m data_prep.adress_prepare "$data_folder" "$exp/manifests"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    for schedule in $schedules; do
        if [ -f "$exp/$schedule/results.json" ]; then
            log "Stage 1: $schedule already done ($exp/$schedule/results.json)"
            continue
        fi
        log "Stage 1: $schedule fine-tuning in $exp/$schedule"
        python $recipe/train.py "$hparams" "${args[@]}" --schedule="$schedule" \
            --output_folder="$exp/$schedule" "${extra_args[@]}"
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: report"
    first=true
    for schedule in $schedules; do
        if $first; then
            sed -n '3,4p' "$exp/$schedule/results.md"
            first=false
        fi
        sed -n '5p' "$exp/$schedule/results.md"
    done | tee "$exp/results.md"
fi
log "Done: $exp"
