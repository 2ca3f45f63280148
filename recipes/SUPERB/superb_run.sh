#!/usr/bin/env bash
# The SUPERB downstream recipe shared by recipes/SUPERB/{asr,pr}/run.sh on a frozen upstream:
# LibriSpeech train-clean-100, dev-clean for model selection, test-clean (and test-other when
# present). Each task's run.sh calls it with its task name; see that run.sh for the usage.
#
#   bash recipes/SUPERB/superb_run.sh TASK [run.sh options] [-- --key=value]
#
# TASK is a folder of recipes/SUPERB with train.py and hparams/TASK{,_mini}.yaml (asr, pr).
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$(dirname "$0")/$1/train.py" ]; then
    echo "Usage: bash recipes/SUPERB/superb_run.sh TASK [options]; TASK is a folder of" \
        "recipes/SUPERB with a train.py (asr or pr), got '${1:-}'." >&2
    exit 1
fi
task=$1
shift
. "$(dirname "$0")/../common.sh"   # option parser, log, mini-corpus helpers
help_file=$(dirname "$0")/$task/run.sh
option stage 0 "first stage to run"
option stop_stage 3 "last stage to run"
flag mini "the embedded mini corpus and a tiny random HuBERT-like upstream"
option data_folder "" "LibriSpeech folder"
option lexicon_file "" "LibriSpeech lexicon (phonemes)"
option upstream "" "hub id, local HF folder or an SSFT upstream_hf (default: the hparams')"
option name "" "display name of the upstream in the report"
option exp "" "output folder (default: results/superb_<task>/<name or upstream basename>)"
option baseline_exp "" "another run of this task to compare with in stage 3"
parse_options "$@"

cd "$repo_root"
recipe=recipes/SUPERB/$task
hparams=$recipe/hparams/$task.yaml

if $mini; then
    hparams=$recipe/hparams/${task}_mini.yaml
    mini_root=${LASERSB_MINI_ROOT:-results/superb_mini/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    lexicon_file=$mini_root/librispeech-lexicon.txt
    upstream=${upstream:-results/superb_mini/tiny_hubert}
    exp=${exp:-results/superb_mini/$task/${name:-tiny_hubert}}
elif [ -z "$data_folder" ]; then
    echo "Give --data_folder /path/LibriSpeech (or --mini for the embedded corpus)." >&2
    exit 1
fi
if [ -z "$exp" ]; then
    exp=results/superb_$task/${name:-$(basename "${upstream:-default}")}
fi
manifests=$exp/manifests
args=(--data_folder="$data_folder" --output_folder="$exp" --manifest_folder="$manifests")
[ -n "$lexicon_file" ] && args+=(--lexicon_file="$lexicon_file")
[ -n "$upstream" ] && args+=(--upstream_source="$upstream")
[ -n "$name" ] && args+=(--upstream_name="$name")

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        tiny_upstream hubert "$upstream"
    fi
    splits=(train-clean-100 dev-clean test-clean)
    if [ -d "$data_folder/test-other" ] || [ -d "$data_folder/LibriSpeech/test-other" ]; then
        splits+=(test-other)
    fi
    # Idempotent: skips when the manifests exist with the same options.
    python -m data_prep.librispeech_prepare "$data_folder" "$manifests" --splits "${splits[@]}" \
        ${lexicon_file:+--lexicon-file "$lexicon_file"}
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: train the $task downstream with $hparams in $exp (resumes if interrupted)"
    python $recipe/train.py "$hparams" "${args[@]}" --evaluate_after_training=False \
        "${extra_args[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: evaluate the selected checkpoint (best dev by default)"
    python $recipe/train.py "$hparams" "${args[@]}" --test_only "${extra_args[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: report"
    if [ -n "$baseline_exp" ]; then
        python -m lasersb.report "$baseline_exp" "$exp" \
            --baseline "$(python -c "import json, sys; r = json.load(open(sys.argv[1])); \
print(r.get('upstream_name') or r['upstream'])" "$baseline_exp/results.json")" \
            --output "$exp/report.md"
    else
        python -m lasersb.report "$exp" --output "$exp/report.md"
    fi
fi
log "Done: $exp"
