"""Brain for the supervised x-vector baseline: the DINO trunk trained with speaker labels.

The same :class:`lasersb.models.resnet.SpeakerEmbeddingModel` as DINO (light ResNet-34,
256-d embedding) is trained on random segments of the training utterances, augmented like the
DINO crops, with a cosine classifier and the additive angular margin softmax (AAM-softmax,
SpeechBrain's ``LogSoftmaxWrapper(AdditiveAngularMargin(margin, scale))``). The margin grows
linearly from 0 to its final value over ``margin_warmup_steps`` (hyperion: 20 epochs of 70);
the learning rate has a linear warm-up and a cosine decay (step based, like DINO's Brain).
Validation reports the loss and the speaker-classification error on held-out utterances of the
training speakers. Embeddings come from the trunk (:meth:`XvectorBrain.embedding_model`,
:meth:`XvectorBrain.export_embedding_model`).
"""

from __future__ import annotations

import logging
import math

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process
from torch import nn

from lasersb.augment.chain import apply_augmentation
from lasersb.augment.speed import fit_length
from lasersb.brains.scheduled import StepScheduledBrain
from lasersb.models.dino import save_embedding_model

logger = logging.getLogger(__name__)


def _set_angular_margin(loss_module: nn.Module, margin: float) -> None:
    """Change the margin of an ``AdditiveAngularMargin`` (wrapped or not) in place.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    >>> _set_angular_margin(loss, 0.1)
    >>> round(loss.loss_fn.margin, 3), round(loss.loss_fn.cos_m, 4)
    (0.1, 0.995)
    """
    aam = getattr(loss_module, "loss_fn", loss_module)
    if not hasattr(aam, "cos_m"):
        raise TypeError(f"{type(aam).__name__} is not an AdditiveAngularMargin")
    aam.margin = float(margin)
    aam.cos_m = math.cos(margin)
    aam.sin_m = math.sin(margin)
    aam.th = math.cos(math.pi - margin)
    aam.mm = math.sin(math.pi - margin) * margin


class XvectorBrain(StepScheduledBrain):
    """Supervised speaker-embedding training with AAM-softmax.

    Expected ``modules``: ``embedding_model`` (``(wavs, rel_lens) -> (B, D)``) and
    ``classifier`` (``(B, 1, D) -> (B, 1, n_speakers)`` cosines, e.g. SpeechBrain's
    ``ECAPA_TDNN.Classifier``). Expected ``hparams`` (all of them; ``null`` where a value is
    optional): those of :class:`~lasersb.brains.scheduled.StepScheduledBrain`,
    ``aam_loss``, ``margin``, ``margin_warmup_steps`` (null: ``margin_warmup_epochs`` x steps
    per epoch), ``margin_warmup_epochs``, ``augment`` (or null), ``train_logger``,
    ``tensorboard_logger`` (or null), ``num_checkpoints_to_keep`` and ``output_folder``.
    """

    def compute_forward(self, batch, stage):
        """Augmented segments (training) -> embeddings -> cosine logits."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        augment = self.hparams.augment
        if stage == sb.Stage.TRAIN and augment is not None:
            wavs = fit_length(apply_augmentation(augment, wavs, wav_lens)[0], wavs.shape[1])
        embeddings = self.modules.embedding_model(wavs, wav_lens)
        return self.modules.classifier(embeddings.unsqueeze(1))

    def compute_objectives(self, predictions, batch, stage):
        """AAM-softmax loss; the classification errors are counted."""
        targets = batch.spk_id_encoded.data.to(self.device)
        if stage == sb.Stage.TRAIN:
            warmup = self.margin_warmup_steps()
            frac = 1.0 if warmup <= 0 else min(1.0, self.optimizer_step / warmup)
            _set_angular_margin(self.hparams.aam_loss, frac * float(self.hparams.margin))
        loss = self.hparams.aam_loss(predictions.float(), targets)
        predicted = predictions.squeeze(1).argmax(dim=-1)
        self._terms["errors"] += int((predicted != targets.view(-1)).sum())
        self._terms["count"] += int(targets.numel())
        return loss

    def margin_warmup_steps(self) -> int:
        """Steps of the margin warm-up (``margin_warmup_steps`` or ``margin_warmup_epochs``)."""
        steps = self.hparams.margin_warmup_steps
        if steps is None:
            epochs = float(self.hparams.margin_warmup_epochs or 0)
            steps = round(epochs * (self.steps_per_epoch or 0))
        return int(steps)

    def init_optimizers(self):
        """Optimiser over the trunk and the classifier."""
        params = [p for p in self.modules.parameters() if p.requires_grad]
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_start(self):
        """Recover the checkpoint; log sizes and schedules."""
        super().on_fit_start()
        trunk = sum(p.numel() for p in self.modules.embedding_model.parameters())
        logger.info(
            "x-vector: trunk %.2fM parameters; %s optimiser steps (warm-up %d), peak lr %.3g",
            trunk / 1e6,
            self.total_steps,
            self.warmup_steps,
            self.peak_lr(),
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Per-step TensorBoard logging."""
        tb = self.hparams.tensorboard_logger
        if should_step and tb is not None:  # log_stats: main process only, syncs all
            tb.log_stats(
                stats_meta={"step": self.optimizer_step},
                train_stats={
                    "loss": float(loss.detach()),
                    "lr": self.optimizer.param_groups[0]["lr"],
                },
            )

    def on_stage_start(self, stage, epoch=None):
        """Reset the error counters."""
        self._terms = {"errors": 0, "count": 0}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log; checkpoint after validation (or after training when there is no dev set)."""
        stats = {
            "loss": stage_loss,
            "error_rate": self._terms["errors"] / max(1, self._terms["count"]),
        }
        train_logger = self.hparams.train_logger
        meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]} if epoch else {}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if getattr(self, "_no_valid", False):
                if train_logger is not None:
                    train_logger.log_stats(stats_meta=meta, train_stats=stats)
                self._checkpoint(stats)
        elif stage == sb.Stage.VALID:
            self.valid_stats = stats
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta=meta, train_stats=self.train_stats, valid_stats=stats
                )
            self._checkpoint(stats)
        else:
            self.test_stats = stats

    def _checkpoint(self, stats):
        if self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(
                meta={"loss": stats["loss"], "optimizer_step": self.optimizer_step},
                num_to_keep=int(self.hparams.num_checkpoints_to_keep),
            )

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """As SpeechBrain's ``fit``; checkpoints after training epochs when there is no dev set."""
        self._no_valid = valid_set is None
        return super().fit(epoch_counter, train_set, valid_set, progressbar, **kwargs)

    def embedding_model(self) -> nn.Module:
        """The trained trunk in eval mode: ``(wavs, rel_lens) -> (B, D)`` embeddings."""
        model = self.unwrapped.embedding_model
        model.eval()
        return model

    def export_embedding_model(self, path=None, meta=None):
        """Save the trunk as ``embedding_model.ckpt`` (main process only)."""
        path = path or self.hparams.output_folder
        info = {"source": "xvector", "optimizer_step": int(self.optimizer_step)}
        info.update(meta or {})
        if if_main_process():
            return save_embedding_model(self.unwrapped.embedding_model, path, info)
        return None
