#!/usr/bin/env bash
# The VoxCeleb speaker-embedding recipe shared by recipes/VoxCeleb/{dino,xvector}/run.sh:
# prepare, train, export the embedding trunk, score the trial lists. Each method's run.sh calls
# it with its method name; see that run.sh for the stages and usage.
#
#   bash recipes/VoxCeleb/voxceleb_run.sh METHOD [run.sh options] [-- --key=value]
#
# METHOD is a folder of recipes/VoxCeleb with train.py and hparams/METHOD{,_mini}.yaml (dino,
# xvector). Every stage runs that train.py with the same hparams file and overrides, so the
# preparation and scoring options come from the YAML alone: stage 1 --prepare_only=True,
# stage 2 training, stage 3 --score_only=True.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$(dirname "$0")/$1/train.py" ]; then
    echo "Usage: bash recipes/VoxCeleb/voxceleb_run.sh METHOD [options]; METHOD is a folder of" \
        "recipes/VoxCeleb with a train.py (dino or xvector), got '${1:-}'." >&2
    exit 1
fi
method=$1
shift
. "$(dirname "$0")/../common.sh"   # option parser, log, mini-corpus helpers
help_file=$(dirname "$0")/$method/run.sh
option stage 1 "first stage to run"
option stop_stage 3 "last stage to run"
flag mini "the embedded mini corpus (2-core CPU check)"
option hparams "" "hparams file (default: hparams/$method.yaml, ${method}_mini.yaml with --mini)"
option data_folder "" "VoxCeleb1 folder (wav/, trial lists, vox1_meta.csv)"
option vox2_folder "" "VoxCeleb2 folder (dev/aac); without it: VoxCeleb1 dev speakers only"
option musan_folder "" "MUSAN folder (additive noise, music, babble)"
option rir_folder "" "RIRS_NOISES/simulated_rirs (default: synthetic RIRs)"
option exp "" "output folder (default: results/${method}_run, ${method}_mini_run with --mini)"
option device "" "torch device (default: cuda:0 when available, else cpu)"
parse_options "$@"

cd "$repo_root"
recipe=recipes/VoxCeleb/$method
if $mini; then
    exp=${exp:-results/${method}_mini_run}
    hparams=${hparams:-$recipe/hparams/${method}_mini.yaml}
    mini_root=${LASERSB_MINI_ROOT:-}
    if [ -z "$mini_root" ]; then
        mini_root=$(python -c "from lasersb.data.mini import get_mini_corpus; print(get_mini_corpus())")
    fi
    data_folder=$mini_root/VoxCeleb1
    args=(--noise_folder="$mini_root/DEMAND")
else
    exp=${exp:-results/${method}_run}
    hparams=${hparams:-$recipe/hparams/${method}.yaml}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/VoxCeleb1 (or --mini for the embedded corpus)." >&2
        exit 1
    fi
    args=(--vox2_folder="${vox2_folder:-null}" --musan_folder="${musan_folder:-null}"
          --rir_folder="${rir_folder:-null}")
    if [ -z "$vox2_folder" ]; then
        log "No --vox2_folder: training on the VoxCeleb1 dev speakers only."
        args+=(--use_vox1_dev=True)
    fi
fi
if [ -z "$device" ]; then
    device=$(default_device)
fi
args+=(--data_folder="$data_folder" --output_folder="$exp" --device="$device")

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: manifests and trial lists in $exp/manifests ($hparams)"
    python $recipe/train.py "$hparams" "${args[@]}" --prepare_only=True "${extra_args[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: $method training with $hparams (resumes from its last checkpoint)"
    python $recipe/train.py "$hparams" "${args[@]}" --score_after_training=False \
        "${extra_args[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    eval_folder=$(python -m lasersb.config "$hparams" eval_folder "${args[@]}" "${extra_args[@]}")
    log "Stage 3: embeddings and scoring of the trial lists in $eval_folder"
    python $recipe/train.py "$hparams" "${args[@]}" --score_only=True "${extra_args[@]}"
    log "Stage 3: tables (logged above) in $(ls "$eval_folder"/*/results.md | tr '\n' ' ')"
fi
log "Done: $exp"
