#!/usr/bin/env bash
# The VoxCeleb speaker-embedding recipe shared by recipes/VoxCeleb/{dino,xvector}/run.sh:
# prepare, train, export the embedding trunk, score the trial lists. Each method's run.sh calls
# it with its method name and preparation options; see that run.sh for the stages and usage.
#
#   bash recipes/VoxCeleb/voxceleb_run.sh METHOD DEV_FRACTION DEV_FRACTION_MINI [run.sh options]
#
# METHOD is a folder of recipes/VoxCeleb with train.py and hparams/METHOD{,_mini}.yaml (dino,
# xvector); DEV_FRACTION(_MINI) is the --dev-fraction of data_prep/voxceleb_prepare.py for the
# full (mini) corpus, kept equal to the hparams files' so train.py finds the manifests done.
set -euo pipefail

if [ $# -lt 3 ] || [ ! -f "$(dirname "$0")/$1/train.py" ]; then
    echo "Usage: bash recipes/VoxCeleb/voxceleb_run.sh METHOD DEV_FRACTION DEV_FRACTION_MINI" \
        "[options]; METHOD is a folder of recipes/VoxCeleb with a train.py (dino or xvector)," \
        "got '${1:-}'." >&2
    exit 1
fi
method=$1
dev_fraction=$2
dev_fraction_mini=$3
shift 3

stage=1
stop_stage=3
mini=false
hparams=""
data_folder=""
vox2_folder=""
musan_folder=""
rir_folder=""
exp=""
device=""
extra_args=()

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($method/run.sh:${BASH_LINENO[0]}) $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --stage) stage="$2"; shift 2 ;;
        --stop_stage) stop_stage="$2"; shift 2 ;;
        --mini) mini=true; shift ;;
        --hparams) hparams="$2"; shift 2 ;;
        --data_folder) data_folder="$2"; shift 2 ;;
        --vox2_folder) vox2_folder="$2"; shift 2 ;;
        --musan_folder) musan_folder="$2"; shift 2 ;;
        --rir_folder) rir_folder="$2"; shift 2 ;;
        --exp) exp="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --) shift; extra_args+=("$@"); break ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$(dirname "$0")/$method/run.sh"; exit 0 ;;
        *) echo "Unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/../.."   # repository root
recipe=recipes/VoxCeleb/$method
score_args=()
if $mini; then
    exp=${exp:-results/${method}_mini_run}
    hparams=${hparams:-$recipe/hparams/${method}_mini.yaml}
    mini_root=${LASERSB_MINI_ROOT:-}
    if [ -z "$mini_root" ]; then
        mini_root=$(python -c "from lasersb.data.mini import get_mini_corpus; print(get_mini_corpus())")
    fi
    data_folder=$mini_root/VoxCeleb1
    train_args=(--noise_folder="$mini_root/DEMAND")
    prep_args=(--dev-fraction "$dev_fraction_mini" --min-duration 0.5)
    score_args=(--cohort-size 20 --top-n 10)
else
    exp=${exp:-results/${method}_run}
    hparams=${hparams:-$recipe/hparams/${method}.yaml}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/VoxCeleb1 (or --mini for the embedded corpus)." >&2
        exit 1
    fi
    train_args=(--vox2_folder="${vox2_folder:-null}" --musan_folder="${musan_folder:-null}" \
                --rir_folder="${rir_folder:-null}")
    prep_args=(--dev-fraction "$dev_fraction" --min-duration 2.0)
    if [ -n "$vox2_folder" ]; then
        prep_args+=(--vox2 "$vox2_folder" --no-vox1-dev)
    else
        log "No --vox2_folder: training on the VoxCeleb1 dev speakers only."
        train_args+=(--use_vox1_dev=True)
    fi
fi
mkdir -p "$exp"
if [ -z "$device" ]; then
    device=$(python -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')")
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: manifests and trial lists in $exp/manifests"
    python -m data_prep.voxceleb_prepare "$data_folder" "$exp/manifests" "${prep_args[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: $method training with $hparams (resumes from its last checkpoint)"
    python $recipe/train.py "$hparams" --data_folder="$data_folder" --output_folder="$exp" \
        --device="$device" --score_after_training=False "${train_args[@]}" "${extra_args[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for trials in "$exp"/manifests/*.txt; do
        name=$(basename "$trials" .txt)
        out=$exp/eval/$name
        if [ -f "$out/results.json" ]; then
            log "Stage 3: $name already scored ($out/results.md)"
        else
            log "Stage 3: embeddings and scoring of $name"
            python -m lasersb.metrics.trial_scoring --model "$exp/embedding_model.ckpt" \
                --trials "$trials" --wav-folder "$data_folder/wav" --output "$out" \
                --cohort-csv "$exp/manifests/train.csv" --name "$method" --device "$device" \
                "${score_args[@]}"
        fi
        cat "$out/results.md"
    done
fi
log "Done: $exp"
