#!/usr/bin/env bash
# Self-supervised fine-tuning (LASER, and the LASER paper's baselines SCORE and Spin), then SUPERB
# PR and ASR with the original and every fine-tuned upstream, then one results table (the form
# of the LASER paper's comparison: rows original / SCORE / Spin / LASER).
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: prepare LibriSpeech manifests, or (--mini) generate the embedded mini corpus and a
#      tiny random upstream
#   1  SSFT of each method in --methods (laser, score: train.py; spin: train_spin.py), to
#      <exp>/ssft (laser) and <exp>/ssft_<method> (others)
#   2  export each fine-tuned upstream to <its folder>/upstream_hf (HF format) and check it
#      loads (with lasersb's loader, which re-inserts SSFT adapters: see the README)
#   3  SUPERB PR (frozen upstream) for the original and every fine-tuned upstream
#   4  SUPERB ASR likewise
#   5  results table (Markdown): PER, WER, relative change against the original, fine-tuning
#      time (GPU-hours on CUDA, wall-clock hours otherwise, as stated in the table)
#
# Usage (from the repository root):
#   bash recipes/LibriSpeech/ssft/run.sh --mini                       # everything, 2-core CPU
#   bash recipes/LibriSpeech/ssft/run.sh --mini --methods "laser score spin"
#   bash recipes/LibriSpeech/ssft/run.sh --data_folder /data/LibriSpeech \
#        --lexicon_file /data/librispeech-lexicon.txt [--methods "laser score spin"] [--wavlm]
#   bash recipes/LibriSpeech/ssft/run.sh ... --stage 3 --stop_stage 5
#   bash recipes/LibriSpeech/ssft/run.sh ... --tasks pr               # SUPERB PR only
#   bash recipes/LibriSpeech/ssft/run.sh --mini -- --use_adapters=True --trainable_layers=0
#        (everything after -- goes to the SSFT stages: here adapters instead of the top layers)
# --superb_args "--key=value ..." is passed to every SUPERB run; arguments after -- to every SSFT run.
# --hparams replaces LASER's file (default hparams/laser.yaml); --wavlm picks the *_wavlm.yaml
# file of every method (and the WavLM tiny upstream with --mini).
set -euo pipefail

stage=0
stop_stage=5
mini=false
hparams=""            # LASER's file (default hparams/laser.yaml)
methods="laser"
wavlm=false
data_folder=""
lexicon_file=""
upstream=""           # default: the upstream_source of the hparams file
exp=""                # default: results/laser_run (results/laser_mini_run with --mini)
tasks="pr asr"        # SUPERB tasks of stages 3 (pr) and 4 (asr), and of the table
extra_args=()         # after --: passed to every SSFT script
superb_args=""        # --superb_args "--key=value ...": passed to every SUPERB run

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --stage) stage="$2"; shift 2 ;;
        --stop_stage) stop_stage="$2"; shift 2 ;;
        --mini) mini=true; shift ;;
        --hparams) hparams="$2"; shift 2 ;;
        --methods) methods="$2"; shift 2 ;;
        --wavlm) wavlm=true; shift ;;
        --superb_args) superb_args="$2"; shift 2 ;;
        --data_folder) data_folder="$2"; shift 2 ;;
        --lexicon_file) lexicon_file="$2"; shift 2 ;;
        --upstream) upstream="$2"; shift 2 ;;
        --exp) exp="$2"; shift 2 ;;
        --tasks) tasks="$2"; shift 2 ;;
        --) shift; extra_args+=("$@"); break ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "Unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

for task in $tasks; do
    case "$task" in
        pr|asr) ;;
        *) echo "--tasks takes pr and/or asr (e.g. --tasks \"pr asr\"), got $task" >&2; exit 1 ;;
    esac
done
cd "$(dirname "$0")/../../.."   # repository root
recipe=recipes/LibriSpeech/ssft
pr_hparams=recipes/SUPERB/pr/hparams/pr.yaml
asr_hparams=recipes/SUPERB/asr/hparams/asr.yaml

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
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    lexicon_file=$mini_root/librispeech-lexicon.txt
    upstream=${upstream:-$exp/tiny_$kind}
else
    exp=${exp:-results/laser_run}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/LibriSpeech (or --mini for the embedded corpus)." >&2
        exit 1
    fi
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
method_script() { if [ "$1" = spin ]; then echo "$recipe/train_spin.py"; else echo "$recipe/train.py"; fi; }
method_folder() { if [ "$1" = laser ]; then echo "$exp/ssft"; else echo "$exp/ssft_$1"; fi; }
display_name() { case "$1" in laser) echo LASER ;; score) echo SCORE ;; spin) echo Spin ;; esac; }

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
        if [ ! -f "$mini_root/mini_corpus.json" ]; then
            lasersb-mini-corpus --out "$mini_root"
        else
            log "mini corpus already at $mini_root"
        fi
        if [ ! -f "$upstream/config.json" ]; then
            lasersb-tiny-upstream --kind "$kind" --out "$upstream"
        else
            log "tiny upstream already at $upstream"
        fi
    fi
    # Manifests with phonemes for the SUPERB stages (SSFT prepares its own, without phonemes).
    # Idempotent: skips when the manifests exist with the same options.
    python -m data_prep.librispeech_prepare "$data_folder" "$exp/manifests" \
        --splits train-clean-100 dev-clean test-clean ${lexicon_file:+--lexicon-file "$lexicon_file"}
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    for method in $methods; do
        if [ -f "$(method_folder "$method")/ssft_summary.json" ]; then
            log "Stage 1: $(display_name "$method") SSFT already done ($(method_folder "$method")/ssft_summary.json)"
            continue
        fi
        log "Stage 1: $(display_name "$method") SSFT with $(method_hparams "$method") (resumes from its last checkpoint)"
        python "$(method_script "$method")" "$(method_hparams "$method")" \
            --data_folder="$data_folder" --output_folder="$(method_folder "$method")" \
            "${upstream_args[@]}" "${extra_args[@]}"
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    for method in $methods; do
        finetuned=$(method_folder "$method")/upstream_hf
        log "Stage 2: export the $(display_name "$method") upstream to $finetuned"
        if [ ! -f "$finetuned/config.json" ]; then
            python "$(method_script "$method")" "$(method_hparams "$method")" \
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

for task in $tasks; do
    if [ "$task" = pr ]; then n=3; task_hparams=$pr_hparams; else n=4; task_hparams=$asr_hparams; fi
    if [ "$stage" -le $n ] && [ "$stop_stage" -ge $n ]; then
        for name in original $methods; do
            if [ "$name" = original ]; then source=$original; else source=$(method_folder "$name")/upstream_hf; fi
            out=$exp/$task/$name
            if [ -f "$out/results.json" ]; then
                log "Stage $n: $task with the $name upstream already done ($out/results.json)"
                continue
            fi
            log "Stage $n: SUPERB $task with the $name upstream ($source)"
            python recipes/SUPERB/$task/train.py "$task_hparams" --data_folder="$data_folder" \
                "${lexicon_args[@]}" --upstream_source="$source" --upstream_name="$name" \
                --output_folder="$out" --manifest_folder="$exp/manifests" $superb_args
        done
    fi
done

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "Stage 5: results table"
    # Rows in the order of the LASER paper's comparison: original, SCORE, Spin, LASER.
    # Upstreams that carried lasersb adapters are listed under the table (count, checksum).
    folders=()
    names=()
    for task in $tasks; do folders+=("$exp/$task/original"); names+=(original); done
    ssft=()
    for method in score spin laser; do
        case " $methods " in *" $method "*) ;; *) continue ;; esac
        for task in $tasks; do
            folders+=("$exp/$task/$method")
            names+=("$(display_name "$method")")
        done
        ssft+=("$(display_name "$method")=$(method_folder "$method")/ssft_summary.json")
    done
    python -m lasersb.report "${folders[@]}" --names "${names[@]}" --baseline original \
        --ssft "${ssft[@]}" --output "$exp/results.md"
    cat "$exp/results.md"
fi
log "Done: $exp"
