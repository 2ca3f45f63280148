#!/usr/bin/env bash
# SUPERB phoneme recognition (PER, s3prl 'libriphone') on a frozen upstream: LibriSpeech
# train-clean-100, dev-clean for model selection, test-clean (and test-other when present).
#
# Stages (ESPnet style; each skips or resumes work already done):
#   0  data: LibriSpeech manifests; with --mini, first the embedded mini corpus and a tiny
#      random HuBERT-like upstream
#   1  train the downstream (resumes from its last checkpoint; stops at optimizer_step_limit)
#   2  evaluate the best dev checkpoint: per-utterance hypotheses, JSON summaries, results.json
#   3  report: the Markdown table of this run (add --baseline_exp DIR to compare with another)
#
# Usage (from anywhere):
#   bash recipes/SUPERB/pr/run.sh --mini
#   bash recipes/SUPERB/pr/run.sh --data_folder /data/LibriSpeech \
#        --lexicon_file /data/librispeech-lexicon.txt --upstream facebook/hubert-base-ls960 \
#        [--exp results/superb_pr/hubert] [-- --key=value]
set -euo pipefail

exec bash "$(dirname "$0")/../superb_run.sh" pr "$@"
