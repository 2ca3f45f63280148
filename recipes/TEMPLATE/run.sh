#!/usr/bin/env bash
# TEMPLATE recipe: speaker identification over a frozen SSL upstream (copy me, see README.md).
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: (--mini) the embedded mini corpus and a tiny random upstream; then the manifests
#      (data_prep/librispeech_prepare.py, idempotent)
#   1  train + test (recipes/TEMPLATE/train.py); resumes from its last checkpoint after a kill
#   2  show the test results (<exp>/test_summary.json)
#
# Usage (from anywhere):
#   bash recipes/TEMPLATE/run.sh --mini                                   # seconds on a CPU
#   bash recipes/TEMPLATE/run.sh --data_folder /data/LibriSpeech [--stage 1 --stop_stage 2]
#   bash recipes/TEMPLATE/run.sh --mini --ngpu 2                          # DDP via torchrun
# Arguments after `--` go to train.py (hparams overrides such as --batch_size=16).
set -euo pipefail

stage=0
stop_stage=2
mini=false
hparams=""
data_folder=""
upstream=""
exp=""
ngpu=1
extra_args=()

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --stage) stage="$2"; shift 2 ;;
        --stop_stage) stop_stage="$2"; shift 2 ;;
        --mini) mini=true; shift ;;
        --hparams) hparams="$2"; shift 2 ;;
        --data_folder) data_folder="$2"; shift 2 ;;
        --upstream) upstream="$2"; shift 2 ;;
        --exp) exp="$2"; shift 2 ;;
        --ngpu) ngpu="$2"; shift 2 ;;
        --) shift; extra_args+=("$@"); break ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "Unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/../.."   # repository root
recipe=recipes/TEMPLATE
if $mini; then
    exp=${exp:-results/template_mini_run}
    hparams=${hparams:-$recipe/hparams/template_mini.yaml}
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    upstream=${upstream:-$exp/tiny_hubert}
else
    exp=${exp:-results/template_run}
    hparams=${hparams:-$recipe/hparams/template.yaml}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/LibriSpeech (or --mini for the embedded corpus)." >&2
        exit 1
    fi
fi
mkdir -p "$exp"
train_args=(--data_folder="$data_folder" --output_folder="$exp")
if [ -n "$upstream" ]; then
    train_args+=(--upstream_source="$upstream")
fi
launcher=(python)
if [ "$ngpu" -gt 1 ]; then
    launcher=(torchrun --standalone --nproc_per_node="$ngpu")
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        if [ ! -f "$mini_root/mini_corpus.json" ]; then
            lasersb-mini-corpus --out "$mini_root"
        else
            log "mini corpus already at $mini_root"
        fi
        if [ ! -f "$upstream/config.json" ]; then
            lasersb-tiny-upstream --kind hubert --out "$upstream"
        else
            log "tiny upstream already at $upstream"
        fi
    fi
    split=$(python -m lasersb.config "$hparams" train_split --data_folder="$data_folder" \
        --upstream_source="${upstream:-unused}")
    python -m data_prep.librispeech_prepare "$data_folder" "$exp/manifests" --splits "$split" \
        --no-phonemes
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    if [ -f "$exp/test_summary.json" ]; then
        log "Stage 1: already done ($exp/test_summary.json exists)"
    else
        log "Stage 1: train and test with $hparams (resumes from its last checkpoint)"
        "${launcher[@]}" $recipe/train.py "$hparams" "${train_args[@]}" "${extra_args[@]}"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: results"
    cat "$exp/test_summary.json"
fi
