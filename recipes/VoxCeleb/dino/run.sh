#!/usr/bin/env bash
# Utterance-level DINO on VoxCeleb: prepare, pre-train without labels, score the trial lists.
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   1  prep: VoxCeleb1/2 manifests and trial lists (data_prep/voxceleb_prepare.py); with --mini
#      the embedded mini corpus is generated (cached) first
#   2  train: DINO pre-training (recipes/VoxCeleb/dino/train.py), resumes from its checkpoints;
#      exports the teacher trunk to <exp>/embedding_model.ckpt
#   3  embed+score: embeddings of the trial utterances with the teacher, cosine scoring (plain,
#      mean-subtracted, AS-norm), EER / minDCF table and DET plot in <exp>/eval/<trials>/
#
# Usage (from anywhere):
#   bash recipes/VoxCeleb/dino/run.sh --mini                                # 2-core CPU check
#   bash recipes/VoxCeleb/dino/run.sh --data_folder /data/VoxCeleb1 --vox2_folder /data/VoxCeleb2 \
#        --musan_folder /data/musan [--rir_folder /data/RIRS_NOISES/simulated_rirs]
#   bash recipes/VoxCeleb/dino/run.sh ... --stage 3 --stop_stage 3 --device cuda:1
# Arguments after `--` go to train.py (hparams overrides such as --batch_size=64).
set -euo pipefail

exec bash "$(dirname "$0")/../voxceleb_run.sh" dino "$@"
