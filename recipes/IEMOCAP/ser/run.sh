#!/usr/bin/env bash
# IEMOCAP 4-class emotion recognition by transfer of a DINO / x-vector embedding model,
# leave-one-session-out cross-validation, both fine-tuning schedules.
#
# Stages (ESPnet style; each skips or resumes work already done):
#   0  data: IEMOCAP manifests (per session and per fold); with --mini, first the embedded mini
#      corpus and, unless --checkpoint is given, a tiny DINO model (recipes/VoxCeleb/dino)
#   1  fine-tune and test every fold (--fold all|1..5) for each schedule in --schedules;
#      finished folds (fold<k>/results.json) are skipped, interrupted ones resume
#   2  aggregate: UA/WA per fold and mean ± std into <exp>/<schedule>/results.{json,md}
#
# Usage (from anywhere):
#   bash recipes/IEMOCAP/ser/run.sh --mini
#   bash recipes/IEMOCAP/ser/run.sh --data_folder /data/IEMOCAP_full_release \
#        --checkpoint results/dino/1986/embedding_model.ckpt [--exp results/iemocap_ser/dino] \
#        [--schedules "two_stage single_stage"] [--fold 3] [-- --chunk_seconds=4.0]
set -euo pipefail

stage=0
stop_stage=2
mini=false
data_folder=""
noise_folder=""
checkpoint=""          # embedding_model.ckpt (or a DINO/x-vector output folder); "null": random
schedules="two_stage single_stage"
fold=all
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
        --noise_folder) noise_folder="$2"; shift 2 ;;
        --checkpoint) checkpoint="$2"; shift 2 ;;
        --schedules) schedules="$2"; shift 2 ;;
        --fold) fold="$2"; shift 2 ;;
        --exp) exp="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --) shift; extra_args+=("$@"); break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "Unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/../../.."   # repository root
if [ -z "$device" ]; then
    device=$(python -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')")
fi
recipe=recipes/IEMOCAP/ser
hparams=$recipe/hparams/ser.yaml

if $mini; then
    hparams=$recipe/hparams/ser_mini.yaml
    mini_root=${LASERSB_MINI_ROOT:-results/transfer_mini/mini_corpus}
    data_folder=$mini_root/IEMOCAP
    noise_folder=${noise_folder:-$mini_root/DEMAND}
    exp=${exp:-results/transfer_mini/iemocap_ser}
    if [ -z "$checkpoint" ]; then
        checkpoint=results/transfer_mini/dino
    fi
elif [ -z "$data_folder" ] || [ -z "$checkpoint" ]; then
    echo "Give --data_folder /path/IEMOCAP_full_release and --checkpoint CKPT (or --mini)." >&2
    exit 1
fi
exp=${exp:-results/iemocap_ser/$(basename "$checkpoint" .ckpt)}
args=(--data_folder="$data_folder" --manifest_folder="$exp/manifests"
      --embedding_checkpoint="$checkpoint" --device="$device")
[ -n "$noise_folder" ] && args+=(--noise_folder="$noise_folder")

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
    python -m data_prep.iemocap_prepare "$data_folder" "$exp/manifests"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    for schedule in $schedules; do
        log "Stage 1: $schedule fine-tuning, fold(s) $fold, in $exp/$schedule"
        python $recipe/train.py "$hparams" "${args[@]}" --schedule="$schedule" \
            --output_folder="$exp/$schedule" --fold="$fold" "${extra_args[@]}"
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: aggregate the folds"
    for schedule in $schedules; do
        python $recipe/train.py "$hparams" "${args[@]}" --schedule="$schedule" \
            --output_folder="$exp/$schedule" --aggregate_only=True "${extra_args[@]}" \
            > /dev/null
        cat "$exp/$schedule/results.md"
        echo
    done
fi
log "Done: $exp"
