#!/usr/bin/env bash
# Adapter transfer for CTC ASR (Thomas et al., ICASSP 2022): full fine-tuning, adapters in all
# layers, adapters in the top k layers, the top-k ablation, then the WER vs trainable-parameter
# table (Markdown) and plot (PNG).
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   0  data: Libri-light 10 h (or LibriSpeech train-clean-100 / Common Voice) + LibriSpeech
#      dev/test manifests; with --mini: the embedded mini corpus and a tiny random wav2vec 2.0
#   1  full fine-tuning                       (hparams/full_finetune.yaml)
#   2  adapters in all layers                 (hparams/adapters_all.yaml)
#   3  adapters in the top k layers, k = 6    (hparams/adapters_top.yaml)
#   4  ablation: adapters in the top k layers for each k of --ks (default 2 4 8 10; with
#      stages 2 and 3 this covers k = 2, 4, 6, 8, 10, 12)
#   5  table + plot of WER vs trainable parameters over every run (ablation.py)
#
# Usage (from the repository root):
#   bash recipes/LibriSpeech/adapters/run.sh --mini                          # 2-core CPU check
#   bash recipes/LibriSpeech/adapters/run.sh --data_folder /data/LibriSpeech \
#        --librilight_folder /data/librispeech_finetuning [--upstream facebook/wav2vec2-base]
#   bash recipes/LibriSpeech/adapters/run.sh ... --train_corpus librispeech   # train-clean-100
#   bash recipes/LibriSpeech/adapters/run.sh --train_corpus commonvoice \
#        --commonvoice_folder /data/cv-corpus/fr --data_folder /data/LibriSpeech -- \
#        --token_type=spm_char --bpe_vocab_size=60     # French: a character set with accents
#   Arguments after -- go to every train.py call (e.g. -- --token_type=bpe --seed=2).
set -euo pipefail

. "$(dirname "$0")/../../common.sh"   # option parser, log, mini-corpus helpers
option stage 0 "first stage to run"
option stop_stage 5 "last stage to run"
flag mini "the embedded mini corpus and a tiny random wav2vec 2.0"
option data_folder "" "LibriSpeech folder (dev/test sets; train-clean-100 for --train_corpus librispeech)"
option librilight_folder "" "librispeech_finetuning folder (Libri-light 10 h)"
option commonvoice_folder "" "Common Voice folder of one language (cv-corpus/<lang>)"
option commonvoice_language fr "Common Voice language code"
option train_corpus librilight "librilight, librispeech (train-clean-100) or commonvoice"
option lexicon_file "" "LibriSpeech lexicon"
option upstream "" "hub id or local HF folder (default: the hparams files' upstream_source)"
option ks "2 4 8 10" "ablation: top-k layers with adapters (--mini: 1); 6 is stage 3, all 12 stage 2"
option exp "" "output folder (default: results/adapters_run, adapters_mini_run with --mini)"
parse_options "$@"

cd "$repo_root"
recipe=recipes/LibriSpeech/adapters
suffix=""
if $mini; then
    exp=${exp:-results/adapters_mini_run}
    suffix=_mini
    mini_root=${LASERSB_MINI_ROOT:-$exp/mini_corpus}
    data_folder=$mini_root/LibriSpeech
    lexicon_file=$mini_root/librispeech-lexicon.txt
    upstream=${upstream:-$exp/tiny_wav2vec2}
    train_corpus=librispeech
    [ "$ks" = "2 4 8 10" ] && ks="1"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread is fastest
else
    exp=${exp:-results/adapters_run}
    if [ -z "$data_folder" ]; then
        echo "Give --data_folder /path/LibriSpeech (dev/test sets), or --mini." >&2
        exit 1
    fi
fi
mkdir -p "$exp"

common=(--data_folder="$data_folder" --manifest_folder="$exp/manifests" \
        --train_corpus="$train_corpus")
[ -n "$upstream" ] && common+=(--upstream_source="$upstream")
[ -n "$lexicon_file" ] && common+=(--lexicon_file="$lexicon_file")
case "$train_corpus" in
    librilight)
        if [ -z "$librilight_folder" ]; then
            echo "train_corpus librilight needs --librilight_folder (librispeech_finetuning)." >&2
            exit 1
        fi
        common+=(--librilight_folder="$librilight_folder") ;;
    librispeech)
        common+=(--train_splits="[train-clean-100]") ;;
    commonvoice)
        lang=$commonvoice_language
        common+=(--commonvoice_folder="$commonvoice_folder" --commonvoice_language="$lang" \
                 --train_splits="[cv-$lang-train]" --dev_split="cv-$lang-dev" \
                 --test_splits="[cv-$lang-test]") ;;
    *) echo "Unknown --train_corpus $train_corpus" >&2; exit 1 ;;
esac

train() {  # train <name> <hparams file> [overrides...]: skipped when results.json exists
    local name=$1 hparams=$2
    shift 2
    local out=$exp/$name
    if [ -f "$out/results.json" ]; then
        log "$name already done ($out/results.json)"
        return
    fi
    log "Training $name with $hparams (resumes from its last checkpoint)"
    python $recipe/train.py "$hparams" --output_folder="$out" "${common[@]}" "$@" \
        "${extra_args[@]}"
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    if $mini; then
        mini_corpus "$mini_root"
        tiny_upstream wav2vec2 "$upstream"
    fi
    case "$train_corpus" in
        librilight)
            python -m data_prep.librilight_prepare --data_folder "$librilight_folder" \
                --save_folder "$exp/manifests" --subset 10h ;;
        librispeech)
            python -m data_prep.librispeech_prepare "$data_folder" "$exp/manifests" \
                --splits train-clean-100 ${lexicon_file:+--lexicon-file "$lexicon_file"} ;;
        commonvoice)
            python -m data_prep.commonvoice_prepare --data_folder "$commonvoice_folder" \
                --save_folder "$exp/manifests" --language "$commonvoice_language" ;;
    esac
    if [ "$train_corpus" != commonvoice ]; then
        # dev/test splits missing on disk are skipped again by train.py
        splits=()
        for split in dev-clean dev-other test-clean test-other; do
            [ -d "$data_folder/$split" ] && splits+=("$split")
        done
        python -m data_prep.librispeech_prepare "$data_folder" "$exp/manifests" \
            --splits "${splits[@]}" ${lexicon_file:+--lexicon-file "$lexicon_file"}
    fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: full fine-tuning"
    train full $recipe/hparams/full_finetune$suffix.yaml
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: adapters in all layers"
    train adapters_all $recipe/hparams/adapters_all$suffix.yaml
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: adapters in the top layers (hparams default)"
    train adapters_top $recipe/hparams/adapters_top$suffix.yaml
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "Stage 4: top-k ablation, k in: $ks"
    default_top=$(python -m lasersb.config $recipe/hparams/adapters_top$suffix.yaml \
        adapter_layers --upstream_source=none --data_folder=none)
    for k in $ks; do
        if [ "top$k" = "$default_top" ]; then
            log "top$k is stage 3's run (adapters_top)"
            continue
        fi
        train "adapters_top$k" $recipe/hparams/adapters_top$suffix.yaml \
            --adapter_layers="top$k" --adapter_tag="top$k"
    done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "Stage 5: WER vs trainable parameters"
    python $recipe/ablation.py "$exp" --markdown "$exp/ablation.md" --png "$exp/ablation.png"
    log "Table: $exp/ablation.md, plot: $exp/ablation.png"
fi
