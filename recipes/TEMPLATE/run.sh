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

. "$(dirname "$0")/../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 2 "last stage to run"
flag mini "the embedded mini corpus and a tiny random HuBERT (seconds on a CPU)"
option hparams "" "hparams file (default: hparams/template.yaml, template_mini.yaml with --mini)"
option data_folder "" "LibriSpeech folder"
option upstream "" "hub id or local HF folder (default: the hparams file's upstream_source)"
option exp "" "output folder (default: results/template_run, template_mini_run with --mini)"
option ngpu 1 "local processes (GPUs); > 1 runs train.py under torchrun"
parse_options "$@"

cd "$repo_root"
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

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        tiny_upstream hubert "$upstream"
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
        $(launcher "$ngpu") $recipe/train.py "$hparams" "${train_args[@]}" "${extra_args[@]}"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: results"
    cat "$exp/test_summary.json"
fi
