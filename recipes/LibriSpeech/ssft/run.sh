#!/usr/bin/env bash
# Self-supervised fine-tuning (LASER, and the LASER paper's baselines SCORE and Spin), then SUPERB
# PR, ASR and QbE with the original and every fine-tuned upstream, then one results table (the
# form of the LASER paper's comparison: rows original / SCORE / Spin / LASER).
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: prepare LibriSpeech manifests (and the QUESST 2014 ones for qbe), or (--mini)
#      generate the embedded mini corpus and a tiny random upstream
#   1  SSFT of each method in --methods (laser, score, spin: train.py), to
#      <exp>/ssft (laser) and <exp>/ssft_<method> (others)
#   2  export each fine-tuned upstream to <its folder>/upstream_hf (HF format) and check it
#      loads (with lasersb's loader, which re-inserts SSFT adapters: see the README)
#   3  SUPERB PR (frozen upstream) for the original and every fine-tuned upstream, by the
#      SUPERB protocol of recipes/SUPERB/sweep.py: with --lr_grid, a short run per rate picks
#      the rate on dev-clean; then one run per --seeds entry. The frozen upstream's hidden
#      states are computed once per utterance and shared by PR, ASR, every rate and every seed
#      (the feature cache, --feature_cache_folder; float32 ~2 MB per second of audio for a
#      base-size upstream: ~800 GB for train-clean-100 + dev/test-clean, half with float16)
#   4  SUPERB ASR likewise
#   5  SUPERB QbE on QUESST 2014 likewise (recipes/QUESST14/qbe/evaluate.py; no training): the
#      last layer by default (--qbe_layer -1, as the LASER/SCORE releases ran s3prl's
#      quesst14_dtw); --qbe_layers all scores every layer from one forward pass per utterance
#      and reports the dev-selected layer's eval MTWV (SUPERB's leaderboard) beside the last
#      layer's; needs --quesst_folder on real data, and is skipped (logged) without it
#   6  results table (Markdown): PER, WER, QbE MTWV (eval), relative change against the original
#      (positive = better: lower PER/WER, higher MTWV), fine-tuning time (GPU-hours on CUDA,
#      wall-clock hours otherwise, as stated in the table); with --lr_grid or several --seeds
#      also the chosen rate, mean ± std (n) and the 95 % paired bootstrap interval of each
#      relative change; under it the commit and library versions of the runs
#
# Usage (from the repository root):
#   bash recipes/LibriSpeech/ssft/run.sh --mini                       # everything, 2-core CPU
#   bash recipes/LibriSpeech/ssft/run.sh --mini --methods "laser score spin"
#   bash recipes/LibriSpeech/ssft/run.sh --data_folder /data/LibriSpeech \
#        --lexicon_file /data/librispeech-lexicon.txt [--methods "laser score spin"] [--wavlm] \
#        [--quesst_folder /data/quesst14Database]
#   bash recipes/LibriSpeech/ssft/run.sh ... --stage 3 --stop_stage 6
#   bash recipes/LibriSpeech/ssft/run.sh ... --tasks pr               # SUPERB PR only
#   bash recipes/LibriSpeech/ssft/run.sh ... --lr_grid "1e-4 1e-3 1e-2" --seeds "1986 1987 1988"
#        (SUPERB's protocol: a learning rate per upstream and task, three seeds, intervals)
#   bash recipes/LibriSpeech/ssft/run.sh --mini -- --use_adapters=True --trainable_layers=0
#        (everything after -- goes to the SSFT stages: here adapters instead of the top layers)
# --superb_args "--key=value ..." is passed to every SUPERB PR/ASR run, --qbe_args to every QbE
# run (e.g. --qbe_args "--device=cuda:0"); arguments after -- to every SSFT run.
# --hparams replaces LASER's file (default hparams/laser.yaml); --wavlm picks the *_wavlm.yaml
# file of every method (and the WavLM tiny upstream with --mini).
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 6 "last stage to run"
flag mini "the embedded mini corpus and a tiny random upstream (2-core CPU)"
option hparams "" "LASER's hparams file (default: hparams/laser.yaml)"
option methods laser "SSFT methods: laser, score, spin (e.g. \"laser score spin\")"
flag wavlm "the *_wavlm.yaml file of every method (the tiny WavLM with --mini)"
option data_folder "" "LibriSpeech folder"
option lexicon_file "" "LibriSpeech lexicon (phonemes for SUPERB PR)"
option upstream "" "original upstream (default: the hparams file's upstream_source)"
option exp "" "output folder (default: results/laser_run, laser_mini_run with --mini)"
option tasks "pr asr qbe" "SUPERB tasks of stages 3 (pr), 4 (asr), 5 (qbe) and the table"
option quesst_folder "" "quesst14Database folder for qbe (--mini: the mini corpus's QUESST14)"
option qbe_layer -1 "hidden state for QbE: -1 = last (the LASER/SCORE releases, s3prl -l -1)"
option qbe_layers "" "all: every layer from one pass; best dev layer's MTWV beside the last's"
option qbe_args "" "\"--key=value ...\" passed to every QbE run"
option superb_args "" "\"--key=value ...\" passed to every SUPERB PR/ASR run"
option lr_grid "" "PR/ASR rates to search per upstream, e.g. \"1e-4 1e-3 1e-2\" (empty: the releases')"
option lr_search_steps "" "optimiser steps of each search run (default: 10 % of the run's)"
option seeds 1986 "seeds of the SUPERB PR/ASR heads (several: mean ± std and intervals)"
option feature_cache_folder "" "hidden states shared by all PR/ASR runs (<exp>/feature_cache; none: off)"
option feature_cache_dtype float32 "float32 (exact) or float16 (half the disk)"
parse_options "$@"

for task in $tasks; do
    case "$task" in
        pr|asr|qbe) ;;
        *) echo "--tasks takes pr, asr and/or qbe (e.g. --tasks \"pr asr qbe\"), got $task" >&2; exit 1 ;;
    esac
done
case "$qbe_layers" in
    "") ;;
    all) qbe_layer=all ;;
    *) echo "--qbe_layers takes 'all' (one layer: --qbe_layer N), got '$qbe_layers'" >&2; exit 1 ;;
esac
cd "$repo_root"
recipe=recipes/LibriSpeech/ssft
pr_hparams=recipes/SUPERB/pr/hparams/pr.yaml
asr_hparams=recipes/SUPERB/asr/hparams/asr.yaml
qbe_hparams=recipes/QUESST14/qbe/hparams/qbe.yaml

for method in $methods; do
    case "$method" in
        laser|score|spin) ;;
        *) echo "Unknown method '$method' in --methods (use laser, score, spin)" >&2; exit 1 ;;
    esac
done
kind=hubert
variant=""
if $wavlm; then kind=wavlm; variant=_wavlm; fi

if $mini; then
    exp=${exp:-results/laser_mini_run}
    pr_hparams=recipes/SUPERB/pr/hparams/pr_mini.yaml
    asr_hparams=recipes/SUPERB/asr/hparams/asr_mini.yaml
    qbe_hparams=recipes/QUESST14/qbe/hparams/qbe_mini.yaml
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    lexicon_file=$mini_root/librispeech-lexicon.txt
    quesst_folder=$mini_root/QUESST14
    upstream=${upstream:-$exp/tiny_$kind}
else
    exp=${exp:-results/laser_run}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/LibriSpeech (or --mini for the embedded corpus)." >&2
        exit 1
    fi
fi

# QbE needs QUESST 2014: without --quesst_folder on real data it is left out (stage 5 and the
# table say so) rather than failing after hours of SSFT.
qbe_skipped=""
if [ -z "$quesst_folder" ]; then
    case " $tasks " in
        *" qbe "*)
            qbe_skipped="no --quesst_folder given (give the extracted quesst14Database/ to evaluate QbE)"
            tasks=$(echo " $tasks " | sed 's/ qbe / /g; s/^ *//; s/ *$//')
            ;;
    esac
fi

# The hparams file, training script and output folder of each method.
method_hparams() {
    if $mini; then
        echo "$recipe/hparams/${1}_mini.yaml"
    elif [ "$1" = laser ] && [ -n "$hparams" ]; then
        echo "$hparams"
    else
        echo "hparams/${1}${variant}.yaml"
    fi
}
method_folder() { if [ "$1" = laser ]; then echo "$exp/ssft"; else echo "$exp/ssft_$1"; fi; }
display_name() { case "$1" in laser) echo LASER ;; score) echo SCORE ;; spin) echo Spin ;; esac; }

case "$feature_cache_folder" in
    "") feature_cache_folder=$exp/feature_cache ;;
    none) feature_cache_folder=null ;;
esac
# The table shows intervals when the protocol has more than one number per cell or a search.
intervals=()
if [ -n "$lr_grid" ] || [ "$(echo $seeds | wc -w)" -gt 1 ]; then intervals=(--intervals); fi

mkdir -p "$exp"
upstream_args=()
if [ -n "$upstream" ]; then
    upstream_args=(--upstream_source="$upstream")
fi
lexicon_args=()
if [ -n "$lexicon_file" ]; then
    lexicon_args=(--lexicon_file="$lexicon_file")
fi
first_method=${methods%% *}
original=${upstream:-$(python -m lasersb.config "$(method_hparams "$first_method")" upstream_source)}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        tiny_upstream "$kind" "$upstream"
    fi
    # Manifests with phonemes for the SUPERB stages (SSFT prepares its own, without phonemes).
    # Idempotent: skips when the manifests exist with the same options.
    python -m data_prep.librispeech_prepare "$data_folder" "$exp/manifests" \
        --splits train-clean-100 dev-clean test-clean ${lexicon_file:+--lexicon-file "$lexicon_file"}
    # QUESST 2014 manifests for stage 5 (idempotent; checked now, not after the SSFT stages).
    case " $tasks " in
        *" qbe "*)
            python -m data_prep.quesst14_prepare "$quesst_folder" "$exp/qbe/manifests" \
                --num-workers "$(python -m lasersb.config "$qbe_hparams" prep_num_workers)"
            ;;
    esac
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    for method in $methods; do
        if [ -f "$(method_folder "$method")/ssft_summary.json" ]; then
            log "Stage 1: $(display_name "$method") SSFT already done ($(method_folder "$method")/ssft_summary.json)"
            continue
        fi
        log "Stage 1: $(display_name "$method") SSFT with $(method_hparams "$method") (resumes from its last checkpoint)"
        python $recipe/train.py "$(method_hparams "$method")" \
            --data_folder="$data_folder" --output_folder="$(method_folder "$method")" \
            "${upstream_args[@]}" "${extra_args[@]}"
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    for method in $methods; do
        finetuned=$(method_folder "$method")/upstream_hf
        log "Stage 2: export the $(display_name "$method") upstream to $finetuned"
        if [ ! -f "$finetuned/config.json" ]; then
            python $recipe/train.py "$(method_hparams "$method")" \
                --data_folder="$data_folder" --output_folder="$(method_folder "$method")" \
                --export_only=True "${upstream_args[@]}" "${extra_args[@]}"
        fi
        # Loaded the way stages 3-5 load it (lasersb's loader: strict keys, adapters re-inserted).
        python -c 'import sys
from lasersb.models.adapters import adapter_summary
from lasersb.models.upstream import load_upstream
m = load_upstream(sys.argv[1])
a = adapter_summary(m)
n = sum(p.numel() for p in m.parameters())
count = a["count"] if a else 0
print(f"{sys.argv[1]}: {type(m).__name__}, {n} parameters, {count} lasersb adapters")' \
            "$finetuned"
    done
fi

# The folder of one SUPERB sweep: <exp>/<task>/<name> (sweep.json, seed_<seed>/, lr_search/);
# QbE: <exp>/qbe/<name>/layer_<layer>.
run_folder() {
    if [ "$1" = qbe ]; then echo "$exp/qbe/$2/layer_$qbe_layer"; else echo "$exp/$1/$2"; fi
}
# sweep_done FOLDER: the sweep there has finished with these seeds and this rate grid.
sweep_done() {
    [ -f "$1/sweep.json" ] && python - "$1/sweep.json" "$seeds" "$lr_grid" <<'PY'
import json, sys
sweep = json.load(open(sys.argv[1]))
grid = [p["lr"] for p in (sweep["lr_search"] or {}).get("grid", [])]
same = sweep["seeds"] == [int(s) for s in sys.argv[2].split()]
sys.exit(0 if same and grid == [float(x) for x in sys.argv[3].split()] else 1)
PY
}
upstream_of() { if [ "$1" = original ]; then echo "$original"; else echo "$(method_folder "$1")/upstream_hf"; fi; }

for task in pr asr; do
    case " $tasks " in *" $task "*) ;; *) continue ;; esac
    if [ "$task" = pr ]; then n=3; task_hparams=$pr_hparams; else n=4; task_hparams=$asr_hparams; fi
    if [ "$stage" -le $n ] && [ "$stop_stage" -ge $n ]; then
        for name in original $methods; do
            source=$(upstream_of "$name")
            out=$(run_folder "$task" "$name")
            if sweep_done "$out"; then
                log "Stage $n: $task with the $name upstream already done ($out/sweep.json)"
                continue
            fi
            log "Stage $n: SUPERB $task with the $name upstream ($source)," \
                "seeds $seeds${lr_grid:+, lr searched in $lr_grid}"
            python recipes/SUPERB/sweep.py "$task" "$task_hparams" --output_folder="$out" \
                --lr_grid="$lr_grid" --lr_search_steps="$lr_search_steps" --seeds="$seeds" \
                --data_folder="$data_folder" "${lexicon_args[@]}" --upstream_source="$source" \
                --upstream_name="$name" --manifest_folder="$exp/manifests" \
                --feature_cache_folder="$feature_cache_folder" \
                --feature_cache_dtype="$feature_cache_dtype" $superb_args
        done
    fi
done

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    if [ -n "$qbe_skipped" ]; then
        log "Stage 5: QbE skipped: $qbe_skipped"
    fi
    case " $tasks " in
        *" qbe "*)
            for name in original $methods; do
                source=$(upstream_of "$name")
                out=$(run_folder qbe "$name")
                if [ -f "$out/qbe_summary.json" ]; then
                    log "Stage 5: qbe with the $name upstream already done ($out/qbe_summary.json)"
                    continue
                fi
                log "Stage 5: SUPERB QbE (QUESST 2014, layer $qbe_layer) with the $name upstream ($source)"
                python recipes/QUESST14/qbe/evaluate.py "$qbe_hparams" \
                    --data_folder="$quesst_folder" --manifest_folder="$exp/qbe/manifests" \
                    --upstream_source="$source" --layer="$qbe_layer" --output_folder="$out" \
                    $qbe_args
            done
            ;;
    esac
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ] && [ -z "$tasks" ]; then
    log "Stage 6: no results table: no task left ($qbe_skipped)"
elif [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
    log "Stage 6: results table"
    if [ -n "$qbe_skipped" ]; then log "Stage 6: no QbE column: $qbe_skipped"; fi
    # Rows in the order of the LASER paper's comparison: original, SCORE, Spin, LASER.
    # Upstreams that carried lasersb adapters are listed under the table (count, checksum).
    folders=()
    names=()
    for task in $tasks; do folders+=("$(run_folder "$task" original)"); names+=(original); done
    ssft=()
    for method in score spin laser; do
        case " $methods " in *" $method "*) ;; *) continue ;; esac
        for task in $tasks; do
            folders+=("$(run_folder "$task" "$method")")
            names+=("$(display_name "$method")")
        done
        ssft+=("$(display_name "$method")=$(method_folder "$method")/ssft_summary.json")
    done
    python -m lasersb.report "${folders[@]}" --names "${names[@]}" --baseline original \
        --ssft "${ssft[@]}" "${intervals[@]}" --output "$exp/results.md"  # prints the table too
fi
log "Done: $exp"
