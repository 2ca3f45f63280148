"""Brain for utterance-level DINO pre-training (Cho et al., JSTSP 2022).

One training step: cut each utterance of the batch into ``n_g`` global and ``n_l`` local
chunks at random offsets (:class:`lasersb.models.dino.MultiCrop`), augment every chunk
independently (additive noise / reverberation, when configured), run the EMA teacher on the
global chunks and the student on all of them, and minimise the DINO cross-entropy
(:class:`lasersb.models.dino.DINOLoss`). After each optimiser step the teacher follows the
student with a momentum going from 0.996 to 1 on a cosine schedule; the learning rate
(``base_lr`` per 256 utterances, scaled with the effective batch) has a linear warm-up and a
cosine decay. The prototype layer is frozen for the first ``freeze_last_layer_steps`` steps, as
in DINO. The collapse indicators of the teacher output (mean entropy, KL of the batch-mean
distribution to uniform) are logged.

Embeddings for evaluation come from the teacher's trunk: :meth:`DINOBrain.embedding_model` and
:meth:`DINOBrain.export_embedding_model` (``embedding_model.ckpt``, loadable with
:func:`lasersb.models.dino.load_embedding_model`).
"""

from __future__ import annotations

import copy
import logging

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from torch import nn

from lasersb.augment.chain import apply_augmentation
from lasersb.augment.speed import fit_length
from lasersb.brains.scheduled import StepScheduledBrain
from lasersb.models.dino import (
    collapse_statistics,
    ema_update_,
    save_embedding_model,
    teacher_momentum,
)

logger = logging.getLogger(__name__)


class DINOBrain(StepScheduledBrain):
    """Brain for DINO pre-training of an utterance-embedding trunk.

    Expected ``modules``: ``student`` (:class:`lasersb.models.dino.DINOModel`); the teacher is
    a copy made here and kept out of ``modules`` (it is not optimised), checkpointed as
    ``teacher``. Expected ``hparams`` (all of them; ``null`` where a value is optional): those
    of :class:`~lasersb.brains.scheduled.StepScheduledBrain`, ``multicrop``
    (:class:`lasersb.models.dino.MultiCrop`), ``dino_loss`` (:class:`lasersb.models.dino.DINOLoss`),
    ``teacher_momentum``, ``final_teacher_momentum``, ``freeze_last_layer_steps`` (null:
    ``freeze_last_layer_epochs`` x steps per epoch), ``freeze_last_layer_epochs``,
    ``weight_decay_skip_1d``, ``augment`` (callable or list applied to every training crop, or
    null), ``valid_seed``, ``train_logger``, ``tensorboard_logger`` (or null),
    ``num_checkpoints_to_keep`` and ``output_folder``.
    """

    def __init__(
        self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None
    ):
        if modules is None or "student" not in modules:
            raise ValueError(
                "DINOBrain needs modules={'student': lasersb.models.dino.DINOModel(...)}"
            )
        teacher = copy.deepcopy(modules["student"])
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        self.teacher = teacher.to(self.device)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.hparams.dino_loss.to(self.device)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("teacher", self.teacher)
            self.checkpointer.add_recoverable("dino_loss", self.hparams.dino_loss)
        self.last_collapse = None

    def _wrap_distributed(self):
        """Wrap the student; on CUDA the teacher's batch norms are synchronised too.

        The teacher computes batch statistics over the whole job's global crops, as the
        student's ``SyncBatchNorm`` does (hyperion's DINO converts both). It is never wrapped in
        DDP: it is not optimised, only updated from the unwrapped student by EMA.
        """
        super()._wrap_distributed()
        if self.distributed_launch and torch.device(self.device).type == "cuda":
            # The top module is not a batch norm: converted in place, so the checkpointer's
            # reference to the teacher stays valid.
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)

    # ------------------------------------------------------------------ forward / loss
    def make_crops(self, wavs, wav_lens, stage):
        """Global and local crops of the batch, each augmented independently in training."""
        generator = None
        if stage != sb.Stage.TRAIN:
            generator = torch.Generator().manual_seed(int(self.hparams.valid_seed))
        global_crops, local_crops = self.hparams.multicrop(wavs, wav_lens, generator=generator)
        augment = self.hparams.augment
        if stage == sb.Stage.TRAIN and augment is not None:
            global_crops = fit_length(
                apply_augmentation(augment, global_crops)[0], global_crops.shape[1]
            )
            if local_crops is not None:
                local_crops = fit_length(
                    apply_augmentation(augment, local_crops)[0], local_crops.shape[1]
                )
        return global_crops, local_crops

    def compute_forward(self, batch, stage):
        """Student logits of all crops and teacher logits of the global crops."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        global_crops, local_crops = self.make_crops(wavs, wav_lens, stage)
        with torch.no_grad():
            teacher_logits = self.teacher([global_crops])
        student_logits = self.modules.student([global_crops, local_crops])
        return student_logits, teacher_logits

    def compute_objectives(self, predictions, batch, stage):
        """DINO loss; the collapse indicators of the teacher output are tracked."""
        student_logits, teacher_logits = predictions
        loss_fn = self.hparams.dino_loss
        loss_fn.train(stage == sb.Stage.TRAIN)
        probs = loss_fn.teacher_probs(teacher_logits, self.optimizer_step)
        stats = collapse_statistics(probs)
        self.last_collapse = stats
        self._terms["entropy"] += stats["entropy"]
        self._terms["kl_uniform"] += stats["kl_uniform"]
        self._terms["batches"] += 1
        return loss_fn(student_logits, teacher_logits, step=self.optimizer_step)

    # ------------------------------------------------------------------ optimisation
    def init_optimizers(self):
        """Optimiser over the student's trainable parameters.

        With ``weight_decay_skip_1d`` (hyperion's ``dinossl_style``, from the DINO code) the
        parameters form two groups: the weights, with the optimiser's weight decay, and the
        biases and 1-D parameters (norms), without.
        """
        named = [(n, p) for n, p in self.modules.student.named_parameters() if p.requires_grad]
        if self.hparams.weight_decay_skip_1d:
            plain = [p for n, p in named if n.endswith(".bias") or p.ndim == 1]
            decayed = [p for n, p in named if not (n.endswith(".bias") or p.ndim == 1)]
            params = [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]
        else:
            params = [p for _, p in named]
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def freeze_last_layer_steps(self) -> int:
        """Steps with a frozen prototype layer (``freeze_last_layer_steps`` or ``..._epochs``)."""
        steps = self.hparams.freeze_last_layer_steps
        if steps is None:
            epochs = float(self.hparams.freeze_last_layer_epochs or 0)
            steps = round(epochs * (self.steps_per_epoch or 0))
        return int(steps)

    def optimizers_step(self):
        """Drop the prototype layer's gradients during the first steps, then step."""
        if self.optimizer_step < self.freeze_last_layer_steps():
            for param in self.unwrapped.student.head.last_layer_parameters():
                param.grad = None
        super().optimizers_step()

    def on_fit_start(self):
        """Recover the checkpoint (teacher included); log the sizes and schedules."""
        super().on_fit_start()
        student = self.unwrapped.student
        trunk = sum(p.numel() for p in student.embedding_model.parameters())
        head = sum(p.numel() for p in student.head.parameters())
        logger.info(
            "DINO: trunk %.2fM + head %.2fM parameters; %s optimiser steps (warm-up %d), peak "
            "lr %.3g",
            trunk / 1e6,
            head / 1e6,
            self.total_steps,
            self.warmup_steps,
            self.peak_lr(),
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """EMA update of the teacher after each optimiser step; per-step logging."""
        if not should_step:
            return
        momentum = teacher_momentum(
            self.optimizer_step - 1,
            self.total_steps or 1,
            float(self.hparams.teacher_momentum),
            float(self.hparams.final_teacher_momentum),
        )
        ema_update_(self.teacher, self.unwrapped.student, momentum)
        self._terms["momentum"] = momentum
        tb = self.hparams.tensorboard_logger
        if tb is not None and self.last_collapse is not None:  # log_stats: main only
            tb.log_stats(
                stats_meta={"step": self.optimizer_step},
                train_stats={
                    "loss": float(loss.detach()),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "teacher_momentum": momentum,
                    "teacher_entropy": self.last_collapse["entropy"],
                    "teacher_kl_uniform": self.last_collapse["kl_uniform"],
                },
            )

    # ------------------------------------------------------------------ stages
    def on_stage_start(self, stage, epoch=None):
        """Reset the accumulators; teacher in train mode (own batch statistics) for training."""
        self._terms = {"entropy": 0.0, "kl_uniform": 0.0, "batches": 0}
        self.teacher.train(stage == sb.Stage.TRAIN)

    def _stage_stats(self, stage_loss):
        count = max(1, self._terms["batches"])
        stats = {
            "loss": stage_loss,
            "teacher_entropy": self._terms["entropy"] / count,
            "teacher_kl_uniform": self._terms["kl_uniform"] / count,
        }
        if "momentum" in self._terms:
            stats["teacher_momentum"] = self._terms["momentum"]
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch; checkpoint at the end of each training epoch."""
        stats = self._stage_stats(stage_loss)
        train_logger = self.hparams.train_logger
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"train_loss": stage_loss, "optimizer_step": self.optimizer_step},
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                    name=f"epoch-{epoch}",
                )
            if getattr(self, "_no_valid", False) and train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                    train_stats=stats,
                )
            return
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
        else:
            self.test_stats = stats

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """As SpeechBrain's ``fit``; epochs are logged at their end when there is no dev set."""
        self._no_valid = valid_set is None
        return super().fit(epoch_counter, train_set, valid_set, progressbar, **kwargs)

    # ------------------------------------------------------------------ embeddings
    def embedding_model(self) -> nn.Module:
        """The teacher's trunk in eval mode: ``(wavs, rel_lens) -> (B, D)`` embeddings."""
        model = self.teacher.embedding_model
        model.eval()
        return model

    def export_embedding_model(self, path=None, meta=None):
        """Save the teacher's trunk as ``embedding_model.ckpt`` (main process only)."""
        path = path or self.hparams.output_folder
        info = {
            "source": "dino-teacher",
            "optimizer_step": int(self.optimizer_step),
            "total_steps": self.total_steps,
        }
        info.update(meta or {})
        if if_main_process():
            return save_embedding_model(self.teacher.embedding_model, path, info)
        return None
