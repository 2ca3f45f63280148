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

stage=0
stop_stage=2
mini=false
data_folder=""
checkpoint=""          # embedding_model.ckpt (or a DINO/x-vector output folder); "null": random
schedules="two_stage single_stage"
exp=""
device=""             # default: cuda:0 when available, else cpu
extra_args=()

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --stage) stage="$2"; shift 2 ;;
        --stop_stage) stop_stage="$2"; shift 2 ;;
        --mini) mini=true; shift ;;
        --data_folder) data_folder="$2"; shift 2 ;;
        --checkpoint) checkpoint="$2"; shift 2 ;;
        --schedules) schedules="$2"; shift 2 ;;
        --exp) exp="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --) shift; extra_args+=("$@"); break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "Unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/../../.."   # repository root
if [ -z "$device" ]; then
    device=$(python -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')")
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
        if [ ! -f "$mini_root/mini_corpus.json" ]; then
            python -m lasersb.data.mini --out "$mini_root"
        else
            log "mini corpus already at $mini_root"
        fi
        if [ "$checkpoint" = results/transfer_mini/dino ] && \
           [ ! -f "$checkpoint/embedding_model.ckpt" ]; then
            log "Pre-training a tiny DINO model in $checkpoint"
            python recipes/VoxCeleb/dino/train.py recipes/VoxCeleb/dino/hparams/dino_mini.yaml \
                --data_folder="$mini_root/VoxCeleb1" --noise_folder="$mini_root/DEMAND" \
                --output_folder="$checkpoint" --score_after_training=False \
                --device="$device"
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
