#!/usr/bin/env bash
# Supervised x-vector baseline (DINO trunk + AAM-softmax) on VoxCeleb: prepare, train, score.
#
# Stages (ESPnet style; each skips work already done, so a re-run resumes):
#   1  prep: VoxCeleb1/2 manifests and trial lists (data_prep/voxceleb_prepare.py); with --mini
#      the embedded mini corpus is generated (cached) first
#   2  train: speaker-label training (recipes/VoxCeleb/xvector/train.py), resumes from checkpoints;
#      exports the trunk to <exp>/embedding_model.ckpt
#   3  embed+score: embeddings of the trial utterances with the trunk, cosine scoring (plain,
#      mean-subtracted, AS-norm), EER / minDCF table and DET plot in <exp>/eval/<trials>/
#
# Usage (from anywhere):
#   bash recipes/VoxCeleb/xvector/run.sh --mini                                # 2-core CPU check
#   bash recipes/VoxCeleb/xvector/run.sh --data_folder /data/VoxCeleb1 --vox2_folder /data/VoxCeleb2 \
#        --musan_folder /data/musan [--rir_folder /data/RIRS_NOISES/simulated_rirs]
#   bash recipes/VoxCeleb/xvector/run.sh ... --stage 3 --stop_stage 3 --device cuda:1
# Arguments after `--` go to train.py (hparams overrides such as --batch_size=64).
set -euo pipefail

exec bash "$(dirname "$0")/../voxceleb_run.sh" xvector "$@"
