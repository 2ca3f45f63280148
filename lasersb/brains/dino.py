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
import math
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from torch import nn

from lasersb.brains.base import DistributedBrain
from lasersb.models.dino import (
    collapse_statistics,
    cosine_schedule,
    ema_update_,
    save_embedding_model,
    teacher_momentum,
)

logger = logging.getLogger(__name__)


class DINOModel(nn.Module):
    """Trunk + DINO head applied to groups of crops of different lengths in one call.

    Keeping the student in one module means one forward per step (what DDP expects).

    Arguments
    ---------
    embedding_model : lasersb.models.resnet.SpeakerEmbeddingModel
        ``(wavs, rel_lens) -> (B, D)``.
    head : lasersb.models.dino.DINOHead
        ``(N, D) -> (N, K)``.

    Example
    -------
    >>> from lasersb.models.resnet import SpeakerEmbeddingModel
    >>> from lasersb.models.dino import DINOHead
    >>> model = DINOModel(SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                   num_blocks=(1, 1, 1, 1)), DINOHead(8, 32, 16, 8))
    >>> model([torch.randn(4, 3200), torch.randn(6, 1600)]).shape
    torch.Size([10, 32])
    """

    def __init__(self, embedding_model: nn.Module, head: nn.Module):
        super().__init__()
        self.embedding_model = embedding_model
        self.head = head

    def forward(self, crop_groups) -> torch.Tensor:
        """Logits ``(sum N_i, K)`` of crop groups ``[(N_i, T_i) waveforms, ...]`` (full length)."""
        embeddings = [
            self.embedding_model(crops, None) for crops in crop_groups if crops is not None
        ]
        return self.head(torch.cat(embeddings, dim=0))


def apply_augmentation(augment, wavs: torch.Tensor, lens=None):
    """Apply an augmentation (or a list of them) to a batch; each item is drawn independently.

    Each augmentation is called as ``aug(wavs, lens)`` and may return the waveforms or a tuple
    whose first item is the waveforms (and second the relative lengths).

    Example
    -------
    >>> apply_augmentation([lambda w, l: (2 * w, l)], torch.ones(1, 2))[0].tolist()
    [[2.0, 2.0]]
    """
    if augment is None:
        return wavs, lens
    augmentations = augment if isinstance(augment, (list, tuple)) else [augment]
    if lens is None:
        lens = torch.ones(wavs.shape[0], device=wavs.device)
    for aug in augmentations:
        if aug is None:
            continue
        out = aug(wavs, lens)
        if isinstance(out, (tuple, list)):
            wavs = out[0]
            if len(out) > 1 and isinstance(out[1], torch.Tensor):
                lens = out[1]
        else:
            wavs = out
    return wavs, lens


def fit_length(wavs: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad ``(B, T)`` waveforms to ``length`` samples (augmentations may change T).

    Example
    -------
    >>> fit_length(torch.ones(1, 3), 5).tolist(), fit_length(torch.ones(1, 3), 2).shape
    ([[1.0, 1.0, 1.0, 0.0, 0.0]], torch.Size([1, 2]))
    """
    if wavs.shape[1] == length:
        return wavs
    if wavs.shape[1] > length:
        return wavs[:, :length]
    return torch.nn.functional.pad(wavs, (0, length - wavs.shape[1]))


def speaker_augmentation(
    musan_folder=None,
    noise_folder=None,
    rir_folder=None,
    noise_prob: float = 0.7,
    reverb_prob: float = 0.45,
    sample_rate: int = 16000,
    cache_noise: bool = False,
) -> list:
    """The speaker recipes' augmentation chain: additive noise, then reverberation.

    Noise: MUSAN categories with the paper's SNR ranges (noise 0-18 dB, music 3-18 dB, babble
    of 3-7 speakers 3-18 dB) when ``musan_folder`` is given, otherwise any folder of noise
    recordings (``noise_folder``, e.g. the mini corpus's ``DEMAND``) at 0-18 dB, otherwise none.
    Reverberation: RIRs from ``rir_folder`` or synthetic ones (``reverb_prob`` 0 disables it).

    Returns
    -------
    list
        Augmenters ``aug(wavs, lens) -> wavs`` (:class:`lasersb.augment.noise.NoiseMixer`,
        :class:`lasersb.augment.reverb.Reverb`), for :func:`apply_augmentation`.

    Example
    -------
    >>> [type(a).__name__ for a in speaker_augmentation()]
    ['Reverb']
    >>> speaker_augmentation(reverb_prob=0.0)
    []
    """
    from lasersb.augment.noise import NoiseMixer
    from lasersb.augment.reverb import Reverb

    chain = []
    if musan_folder:
        root = Path(musan_folder)
        if not root.is_dir():
            raise FileNotFoundError(
                f"musan_folder {root} does not exist: give the MUSAN root (noise/, music/, "
                "speech/), or musan_folder=null with noise_folder=<folder of noises>."
            )
        categories = {
            "noise": {"source": root / "noise", "snr_range": (0.0, 18.0)},
            "music": {"source": root / "music", "snr_range": (3.0, 18.0)},
            "babble": {"source": root / "speech", "snr_range": (3.0, 18.0), "num_sources": (3, 7)},
        }
        chain.append(NoiseMixer(categories=categories, prob=noise_prob, sample_rate=sample_rate))
    elif noise_folder:
        chain.append(
            NoiseMixer(
                noise_folder,
                snr_range=(0.0, 18.0),
                prob=noise_prob,
                sample_rate=sample_rate,
                cache_audio=cache_noise,
            )
        )
    if reverb_prob > 0:
        chain.append(Reverb(rir_folder or None, prob=reverb_prob, sample_rate=sample_rate))
    return chain


def private_loader_generator(hparams) -> torch.Generator:
    """:func:`lasersb.data.pipelines.loader_generator` seeded with ``hparams.seed``."""
    from lasersb.data.pipelines import loader_generator

    seed = hparams.get("seed", 0) if isinstance(hparams, dict) else getattr(hparams, "seed", 0)
    return loader_generator(seed)


class StepScheduleMixin:
    """Step-based schedules for the speaker Brains: total steps known once the loader exists.

    Needs ``hparams.epoch_counter`` and optionally ``hparams.total_steps`` and
    ``hparams.warmup_epochs`` / ``hparams.warmup_steps``.
    """

    total_steps = None
    warmup_steps = 0
    steps_per_epoch = None

    def _set_total_steps(self, train_loader):
        try:
            batches = len(train_loader)
        except TypeError:
            batches = None
        grad_acc = max(1, int(self.grad_accumulation_factor))
        self.steps_per_epoch = max(1, math.ceil(batches / grad_acc)) if batches else None
        total = getattr(self.hparams, "total_steps", None)
        if not total:
            if self.steps_per_epoch is None:
                raise ValueError(
                    "The training loader has no length: set total_steps in the hparams."
                )
            total = self.steps_per_epoch * int(self.hparams.epoch_counter.limit)
        self.total_steps = int(total)
        warmup = getattr(self.hparams, "warmup_steps", None)
        if warmup is None:
            epochs = float(getattr(self.hparams, "warmup_epochs", 0) or 0)
            warmup = int(round(epochs * (self.steps_per_epoch or 0)))
        self.warmup_steps = min(int(warmup), self.total_steps)

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """Build the loaders, derive the step counts, then run SpeechBrain's ``fit``."""
        train_kwargs = kwargs.pop("train_loader_kwargs", {}) or {}
        valid_kwargs = kwargs.pop("valid_loader_kwargs", {}) or {}
        if not isinstance(train_set, torch.utils.data.DataLoader):
            train_kwargs = {"generator": private_loader_generator(self.hparams), **train_kwargs}
            train_set = self.make_dataloader(train_set, stage=sb.Stage.TRAIN, **train_kwargs)
        if valid_set is not None and not isinstance(valid_set, torch.utils.data.DataLoader):
            valid_set = self.make_dataloader(
                valid_set, stage=sb.Stage.VALID, ckpt_prefix=None, **valid_kwargs
            )
        self._set_total_steps(train_set)
        return super().fit(epoch_counter, train_set, valid_set, progressbar, **kwargs)

    def peak_lr(self) -> float:
        """``base_lr`` scaled by the effective batch (``batch * grad_acc * world``) / 256."""
        base = float(self.hparams.base_lr)
        if not getattr(self.hparams, "scale_lr_with_batch", True):
            return base
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        batch = int(self.hparams.batch_size) * max(1, int(self.grad_accumulation_factor)) * world
        return base * batch / 256.0

    def current_lr(self) -> float:
        """Learning rate of the next optimiser step (warm-up, then cosine decay)."""
        return cosine_schedule(
            self.optimizer_step,
            self.total_steps or 1,
            self.peak_lr(),
            float(getattr(self.hparams, "min_lr", 0.0)),
            self.warmup_steps,
        )

    def on_fit_batch_start(self, batch, should_step):
        """Set the learning rate of the coming optimiser step."""
        if self.total_steps is None:
            return
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class DINOBrain(StepScheduleMixin, DistributedBrain):
    """Brain for DINO pre-training of an utterance-embedding trunk.

    Expected ``modules``: ``student`` (:class:`DINOModel`); the teacher is a copy made here and
    kept out of ``modules`` (it is not optimised), checkpointed as ``teacher``. Expected
    ``hparams``: ``multicrop`` (:class:`lasersb.models.dino.MultiCrop`), ``dino_loss``
    (:class:`lasersb.models.dino.DINOLoss`), ``epoch_counter``, ``base_lr`` (per 256
    utterances), ``batch_size``, ``min_lr``, ``warmup_epochs`` (or ``warmup_steps``),
    ``teacher_momentum``, ``final_teacher_momentum``, ``freeze_last_layer_epochs`` (or
    ``freeze_last_layer_steps``),
    ``output_folder``; optional ``augment`` (callable or list, applied to every crop),
    ``total_steps``, ``train_logger``, ``tensorboard_logger``, ``valid_seed``.
    """

    def __init__(
        self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None
    ):
        if modules is None or "student" not in modules:
            raise ValueError("DINOBrain needs modules={'student': DINOModel(...)}")
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
            generator = torch.Generator().manual_seed(int(getattr(self.hparams, "valid_seed", 0)))
        global_crops, local_crops = self.hparams.multicrop(wavs, wav_lens, generator=generator)
        augment = getattr(self.hparams, "augment", None)
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
        steps = getattr(self.hparams, "freeze_last_layer_steps", None)
        if steps is None:
            epochs = float(getattr(self.hparams, "freeze_last_layer_epochs", 0) or 0)
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
            float(getattr(self.hparams, "final_teacher_momentum", 1.0)),
        )
        ema_update_(self.teacher, self.unwrapped.student, momentum)
        self._terms["momentum"] = momentum
        tb = getattr(self.hparams, "tensorboard_logger", None)
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
        train_logger = getattr(self.hparams, "train_logger", None)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"train_loss": stage_loss, "optimizer_step": self.optimizer_step},
                    num_to_keep=int(getattr(self.hparams, "num_checkpoints_to_keep", 2)),
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
