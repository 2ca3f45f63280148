#!/usr/bin/env bash
# IEMOCAP 4-class emotion recognition by transfer of a DINO / x-vector embedding model,
# leave-one-session-out cross-validation, both fine-tuning schedules.
#
# Stages (ESPnet style; each skips or resumes work already done):
#   0  data: IEMOCAP manifests (per session and per fold); with --mini, first the embedded mini
#      corpus and, unless --checkpoint is given, a tiny DINO model (recipes/VoxCeleb/dino)
#   1  fine-tune and test every fold (--fold all|1..5) for each schedule in --schedules;
#      finished folds (fold<k>/results.json) are skipped, interrupted ones resume
#   2  aggregate: UA/WA per fold and mean ± std into <exp>/<schedule>/results.{json,md} (done
#      by stage 1's train.py when stage 1 ran in the same call; alone, e.g. after folds run as
#      separate jobs, it aggregates what is there)
#
# Usage (from anywhere):
#   bash recipes/IEMOCAP/ser/run.sh --mini
#   bash recipes/IEMOCAP/ser/run.sh --data_folder /data/IEMOCAP_full_release \
#        --checkpoint results/dino/1986/embedding_model.ckpt [--exp results/iemocap_ser/dino] \
#        [--schedules "two_stage single_stage"] [--fold 3] [-- --chunk_seconds=4.0]
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 2 "last stage to run"
flag mini "the embedded mini corpus (and a tiny DINO model unless --checkpoint)"
option data_folder "" "IEMOCAP_full_release folder"
option noise_folder "" "noise for the training augmentation (--mini: the mini corpus's DEMAND)"
option checkpoint "" "embedding_model.ckpt, or a DINO/x-vector output folder; null: random init"
option schedules "two_stage single_stage" "fine-tuning schedules to run"
option fold all "leave-one-session-out fold: all or 1..5"
option exp "" "output folder (default: results/iemocap_ser/<checkpoint name>)"
option device "" "torch device (default: cuda:0 when available, else cpu)"
parse_options "$@"

cd "$repo_root"
if [ -z "$device" ]; then
    device=$(default_device)
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
        mini_corpus "$mini_root"
        if [ "$checkpoint" = results/transfer_mini/dino ]; then
            mini_dino "$checkpoint" "$mini_root" "$device"
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
    for schedule in $schedules; do
        if [ "$stage" -le 1 ]; then  # stage 1's train.py aggregated and printed the table
            log "Stage 2: $schedule aggregated by stage 1 (table above): $exp/$schedule/results.md"
            continue
        fi
        log "Stage 2: aggregate the $schedule folds"  # e.g. after folds run as separate jobs
        python $recipe/train.py "$hparams" "${args[@]}" --schedule="$schedule" \
            --output_folder="$exp/$schedule" --aggregate_only=True "${extra_args[@]}" \
            > /dev/null
        cat "$exp/$schedule/results.md"
        echo
    done
fi
log "Done: $exp"
