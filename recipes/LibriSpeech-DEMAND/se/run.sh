#!/usr/bin/env bash
# Position-invariant SE fine-tuning (Meghanani & Hain, ICASSP 2026) with the three losses, the
# convergence plot, the positional-shortcut diagnostic and the downstream (SUPERB PR/ASR)
# evaluation of SE -> frozen upstream on clean / seen-noise / unseen-noise test sets.
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: noisy LibriSpeech + DEMAND (data_prep/noisy_prepare.py), or (--mini) the embedded
#      mini corpus, a tiny random HuBERT and its noisy version
#   1  positional-shortcut diagnostic of the frozen upstream (diagnostic.md / .json)
#   2  SE fine-tuning with mse, mse_zeropad and softdtw (train.py; enhanced test sets written
#      in the LibriSpeech layout under <run>/enhanced/{clean,seen,unseen})
#   3  loss curves of the three runs on one plot + convergence table (se_loss_curves.png/.md)
#   4  downstream: SUPERB PR (and ASR with --asr) heads trained on clean (--data_folder) or noisy
#      (<noisy>/seen) LibriSpeech with the frozen upstream, evaluated (--test_only) on the
#      noisy input and on each variant's enhanced test sets
#   5  results table (Markdown): SE metrics per variant + downstream PER/WER
#
# Usage (from the repository root):
#   bash recipes/LibriSpeech-DEMAND/se/run.sh --mini
#   bash recipes/LibriSpeech-DEMAND/se/run.sh --data_folder /data/LibriSpeech \
#        --noise_folder /data/DEMAND --enhancer_pretrained /data/master64-8a5dfb4bb92753dd.th \
#        --lexicon_file /data/librispeech-lexicon.txt [--downstream_train noisy] [--asr]
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 5 "last stage to run"
flag mini "the embedded mini corpus, a tiny random HuBERT and its noisy version"
option data_folder "" "LibriSpeech folder"
option noise_folder "" "DEMAND folder"
option lexicon_file "" "LibriSpeech lexicon (phonemes for SUPERB PR)"
option enhancer_pretrained "" "pretrained enhancer weights (e.g. master64-8a5dfb4bb92753dd.th)"
option upstream "" "frozen upstream (default: facebook/hubert-base-ls960; tiny HuBERT with --mini)"
option downstream_train clean "data the SUPERB heads are trained on: clean or noisy"
flag asr "also SUPERB ASR in stage 4"
option losses "mse mse_zeropad softdtw" "SE fine-tuning losses (stage 2)"
option exp "" "output folder (default: results/se_run, se_mini_run with --mini)"
parse_options "$@"

cd "$repo_root"
recipe=recipes/LibriSpeech-DEMAND/se
pr_hparams=recipes/SUPERB/pr/hparams/pr.yaml
asr_hparams=recipes/SUPERB/asr/hparams/asr.yaml
suffix=""
if $mini; then
    exp=${exp:-results/se_mini_run}
    suffix=_mini
    pr_hparams=recipes/SUPERB/pr/hparams/pr_mini.yaml
    asr_hparams=recipes/SUPERB/asr/hparams/asr_mini.yaml
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    noise_folder=$mini_root/DEMAND
    lexicon_file=$mini_root/librispeech-lexicon.txt
    upstream=${upstream:-$exp/tiny_hubert}
    # Tiny models on a shared CPU: one thread each (oversubscription costs ~10x).
    export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
else
    exp=${exp:-results/se_run}
    if [ -z "$data_folder" ] || [ -z "$noise_folder" ]; then
        echo "Give --data_folder /path/LibriSpeech and --noise_folder /path/DEMAND (or --mini)." >&2
        exit 1
    fi
    upstream=${upstream:-facebook/hubert-base-ls960}
fi
noisy=$exp/noisy_librispeech
mkdir -p "$exp"
common=(--data_folder="$data_folder" --noise_folder="$noise_folder" --noisy_folder="$noisy"
        --upstream_source="$upstream")
if ! $mini; then
    common+=(--enhancer_pretrained="${enhancer_pretrained:-null}")
fi
lexicon_args=()
if [ -n "$lexicon_file" ]; then
    lexicon_args=(--lexicon_file="$lexicon_file")
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        tiny_upstream hubert "$upstream"
    fi
    python -m data_prep.noisy_prepare "$data_folder" "$noise_folder" "$noisy"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: positional-shortcut diagnostic of $upstream"
    if [ ! -f "$exp/diagnostic.json" ]; then
        python -m lasersb.diagnostics.positional --upstream "$upstream" \
            --data_folder "$data_folder" --split dev-clean --out "$exp/diagnostic.json" \
            $($mini && echo "--num_utterances 16 --seconds 1.4") | tee "$exp/diagnostic.md"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    for loss in $losses; do
        log "Stage 2: SE fine-tuning, loss $loss"
        if [ ! -f "$exp/se_$loss/results.json" ]; then
            python $recipe/train.py $recipe/hparams/${loss}${suffix}.yaml "${common[@]}" \
                --output_folder="$exp/se_$loss" "${extra_args[@]}"
        fi
    done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: loss curves"
    runs=()
    for loss in $losses; do runs+=("$exp/se_$loss"); done
    python $recipe/plot_curves.py "${runs[@]}" --names $losses --out "$exp/se_loss_curves.png" \
        $($mini && echo "--smooth 5")
fi

downstream() {  # $1 task (pr|asr), $2 hparams
    local task=$1 hparams=$2 train_data=$data_folder
    if [ "$downstream_train" = noisy ]; then
        train_data=$noisy/seen
    fi
    local head=$exp/superb_${task}_${downstream_train}
    if [ ! -f "$head/results.json" ]; then
        python recipes/SUPERB/$task/train.py "$hparams" --data_folder="$train_data" \
            --upstream_source="$upstream" --output_folder="$head" "${lexicon_args[@]}"
    fi
    # Evaluate the trained head on every test set: noisy input (no SE), then each variant's
    # enhanced speech. --test_only loads the head's best checkpoint from <head>/save.
    local sets=("noisy_seen:$noisy/seen" "noisy_unseen:$noisy/unseen")
    for loss in $losses; do
        for cond in clean seen unseen; do
            sets+=("${loss}_${cond}:$exp/se_$loss/enhanced/$cond")
        done
    done
    for entry in "${sets[@]}"; do
        local name=${entry%%:*} folder=${entry#*:}
        [ -d "$folder/LibriSpeech/test-clean" ] || continue
        if [ ! -f "$head/eval_$name/results.json" ]; then
            python recipes/SUPERB/$task/train.py "$hparams" --data_folder="$folder" \
                --upstream_source="$upstream" --output_folder="$head/eval_$name" \
                --save_folder="$head/save" --manifest_folder="$head/eval_$name/manifests" \
                --train_splits='[test-clean]' --dev_split=test-clean --test_splits='[test-clean]' \
                --test_only "${lexicon_args[@]}"
        fi
    done
}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "Stage 4: downstream PR$($asr && echo ' + ASR') (heads trained on $downstream_train data)"
    downstream pr "$pr_hparams"
    if $asr; then
        downstream asr "$asr_hparams"
    fi
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "Stage 5: results table"
    {
        echo "# Position-invariant SE fine-tuning: results ($exp)"
        echo
        for loss in $losses; do
            [ -f "$exp/se_$loss/results.md" ] && cat "$exp/se_$loss/results.md" && echo
        done
        [ -f "$exp/se_loss_curves.md" ] && echo "Convergence:" && echo && cat "$exp/se_loss_curves.md"
        echo
        echo "Downstream (error rate on test-clean per input; lower is better):"
        echo
        echo "| head | input | error rate |"
        echo "|---|---|---|"
        for results in "$exp"/superb_*/eval_*/results.json; do
            [ -f "$results" ] || continue
            python - "$results" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1])
data = json.loads(path.read_text())
def find(d):
    if isinstance(d, dict):
        for k in ("PER", "WER", "per", "wer", "error_rate"):
            if isinstance(d.get(k), (int, float)):
                return f"{k} {d[k]:.2f}"
        for v in d.values():
            r = find(v)
            if r:
                return r
    return None
print(f"| {path.parent.parent.name} | {path.parent.name[5:]} | {find(data) or '-'} |")
PY
        done
    } > "$exp/RESULTS.md"
    cat "$exp/RESULTS.md"
fi
