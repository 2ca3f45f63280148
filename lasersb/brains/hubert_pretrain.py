"""HuBERT pretraining, first iteration (Hsu et al., 2021; fairseq's ``hubert_base_librispeech``).

:class:`HubertPretrainBrain` trains a
:class:`~lasersb.models.hubert_pretrain.HubertPretrainingModel` to predict k-means
cluster ids of MFCC frames (:mod:`lasersb.data.hubert_targets`) at masked frames. As
fairseq's ``hubert_pretraining`` task and ``hubert`` criterion:

- each training batch is cropped to its shortest utterance (at most ``max_sample_size``
  samples), at a random offset per utterance (``random_crop``); offsets are multiples of the
  upstream's 320-sample stride so that frame ``i`` keeps its label exactly;
- span masking (``mask_prob``, ``mask_length``), masked frames replaced by the learnt embedding;
- loss = ``pred_masked_weight`` x cross-entropy on masked frames + ``pred_nomask_weight`` x
  cross-entropy on the others + ``feature_penalty_weight`` x the conv features' mean square
  (HuBERT base: 1.0, 0.0 and 10), each cross-entropy averaged over its frames;
- dev batches are cropped from their start and masked from ``valid_seed``, so dev losses and
  accuracies are comparable between epochs and runs.

:meth:`HubertPretrainBrain.export_upstream` writes the encoder alone with ``save_pretrained``
(plus HuBERT's feature extractor config): a folder that every recipe loads like
``facebook/hubert-base-ls960``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from lasersb.brains.scheduled import WarmupScheduledBrain
from lasersb.models.hubert_pretrain import span_mask

logger = logging.getLogger(__name__)

__all__ = ["HubertPretrainBrain", "STRIDE", "RECEPTIVE_FIELD"]

STRIDE = 320
"""Samples per upstream frame (the conv encoder's total stride)."""
RECEPTIVE_FIELD = 400
"""Samples seen by one upstream frame."""


def _frames(samples: int) -> int:
    return (samples - RECEPTIVE_FIELD) // STRIDE + 1


class HubertPretrainBrain(WarmupScheduledBrain):
    """HuBERT masked prediction of cluster ids (see the module docstring).

    Reads ``hparams``: ``targets`` (``{utterance id: int labels}`` at the upstream frame rate),
    ``max_sample_size``, ``mask_prob``, ``mask_length``, ``pred_masked_weight``,
    ``pred_nomask_weight``, ``feature_penalty_weight``, ``valid_seed``,
    ``num_checkpoints_to_keep``, ``train_logger``, ``lr_schedule``, ``tensorboard_logger``.
    """

    no_trainable_message = "HuBERT pretraining found no trainable parameters in modules.model."

    def crop_batch(self, batch, stage):
        """Crop ``batch.sig`` to its shortest utterance and cut the matching labels.

        Returns
        -------
        tuple
            ``(wavs (B, L), targets (B, frames) long)``.
        """
        wavs, rel_lens = batch.sig
        lengths = torch.round(rel_lens * wavs.shape[1]).long().tolist()
        size = min(min(lengths), int(self.hparams.max_sample_size))
        frames = _frames(size)
        if frames < int(self.hparams.mask_length):
            raise ValueError(
                f"Batch {list(batch.id)} crops to {size} samples ({frames} frames), fewer than "
                f"mask_length={self.hparams.mask_length}: raise min_duration in the hparams."
            )
        crops, labels = [], []
        for row, (uid, length) in enumerate(zip(batch.id, lengths)):
            target = self.hparams.targets.get(uid)
            if target is None:
                raise KeyError(
                    f"No HuBERT target for utterance {uid}: the targets file was computed for "
                    "another manifest; delete it and re-run train.py to recompute it."
                )
            if len(target) < _frames(length):
                raise ValueError(
                    f"Utterance {uid}: {len(target)} target frames for {_frames(length)} "
                    "upstream frames; the targets file does not match the audio. Delete it and "
                    "re-run train.py."
                )
            start_frame = 0
            if stage == sb.Stage.TRAIN:
                slack = (length - size) // STRIDE
                start_frame = int(torch.randint(slack + 1, ()).item()) if slack > 0 else 0
            start = start_frame * STRIDE
            crops.append(wavs[row, start : start + size])
            labels.append(torch.as_tensor(target[start_frame : start_frame + frames]).long())
        return torch.stack(crops), torch.stack(labels).to(self.device)

    def compute_forward(self, batch, stage):
        """Crop, mask and predict: ``(logits, feature penalty, mask, targets)``."""
        batch = batch.to(self.device)
        wavs, targets = self.crop_batch(batch, stage)
        generator = None
        if stage != sb.Stage.TRAIN:
            generator = self._valid_generator
        mask = span_mask(
            wavs.shape[0],
            targets.shape[1],
            float(self.hparams.mask_prob),
            int(self.hparams.mask_length),
            generator=generator,
        ).to(self.device)
        logits, penalty = self.modules.model(wavs, mask)
        return logits, penalty, mask, targets

    def compute_objectives(self, predictions, batch, stage):
        """fairseq's HuBERT criterion (see the module docstring); accuracies are tracked."""
        logits, penalty, mask, targets = predictions
        loss = float(self.hparams.feature_penalty_weight) * penalty
        for name, selected, weight in (
            ("masked", mask, float(self.hparams.pred_masked_weight)),
            ("unmasked", ~mask, float(self.hparams.pred_nomask_weight)),
        ):
            if not bool(selected.any()):
                continue
            picked_logits, picked_targets = logits[selected], targets[selected]
            if weight > 0:
                loss = loss + weight * torch.nn.functional.cross_entropy(
                    picked_logits, picked_targets
                )
            with torch.no_grad():
                correct = (picked_logits.argmax(-1) == picked_targets).sum().item()
            self._counts[f"{name}_correct"] += correct
            self._counts[f"{name}_frames"] += int(selected.sum().item())
        self._counts["penalty"] += float(penalty.detach()) * logits.shape[0]
        self._counts["utterances"] += logits.shape[0]
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the accuracy counts; seed the dev masks."""
        super().on_stage_start(stage, epoch)
        self._counts = dict.fromkeys(
            (
                "masked_correct",
                "masked_frames",
                "unmasked_correct",
                "unmasked_frames",
                "penalty",
                "utterances",
            ),
            0,
        )
        self._valid_generator = torch.Generator().manual_seed(int(self.hparams.valid_seed))

    def stage_stats(self, stage_loss) -> dict:
        """Loss, masked / unmasked prediction accuracy and feature penalty of the stage."""
        counts = self._counts
        return {
            "loss": stage_loss,
            "acc_masked": counts["masked_correct"] / max(1, counts["masked_frames"]),
            "acc_unmasked": counts["unmasked_correct"] / max(1, counts["unmasked_frames"]),
            "feature_penalty": counts["penalty"] / max(1, counts["utterances"]),
        }

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch's stats and keep the best checkpoints (lowest dev loss)."""
        stats = self.stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            meta = {
                "epoch": epoch,
                "optimizer_step": self.optimizer_step,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            if self.hparams.train_logger is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta=meta, train_stats=self.train_stats, valid_stats=stats
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"valid_loss": stats["loss"], "optimizer_step": self.optimizer_step},
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                )
            return
        self.test_stats = stats

    def export_upstream(self, folder, info: dict) -> Path:
        """Write the encoder (``save_pretrained``), HuBERT's feature extractor config and ``info``.

        The folder is written next to its destination and moved into place (main process
        only), so a killed export never leaves a half-written model.
        """
        from lasersb.models.tiny_upstream import write_feature_extractor

        folder = Path(folder)
        hubert = self.unwrapped.model.hubert

        def _save():
            tmp = folder.with_name(folder.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            was_training = hubert.training
            hubert.eval()
            hubert.save_pretrained(tmp, safe_serialization=True)
            hubert.train(was_training)
            write_feature_extractor(tmp, "hubert")
            (tmp / "lasersb_pretraining.json").write_text(json.dumps(info, indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)

        run_on_main(_save)
        logger.info("Exported the pretrained encoder to %s", folder)
        return folder
