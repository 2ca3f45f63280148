"""The base of the step-scheduled speaker Brains (DINO, x-vector): lr schedule from the loader.

DINO and the x-vector baseline count their schedules in optimiser steps (linear warm-up, cosine
decay, DINO's teacher momentum and frozen prototypes), but the number of steps is only known
once the training loader exists. :class:`StepScheduledBrain` builds the loaders itself in
``fit``, derives ``steps_per_epoch``, ``total_steps`` and ``warmup_steps``, and sets the
learning rate (:func:`lasersb.schedules.cosine_schedule`) before every optimiser step.
"""

from __future__ import annotations

import math

import speechbrain as sb
import torch

from lasersb.brains.base import DistributedBrain
from lasersb.data.pipelines import loader_generator
from lasersb.schedules import cosine_schedule


class StepScheduledBrain(DistributedBrain):
    """A :class:`~lasersb.brains.base.DistributedBrain` with a step-based cosine lr schedule.

    Reads ``hparams``: ``epoch_counter``, ``total_steps`` (null: epochs x optimiser steps per
    epoch), ``warmup_steps`` (null: ``warmup_epochs`` x steps per epoch), ``warmup_epochs``,
    ``base_lr`` (per 256 utterances), ``scale_lr_with_batch``, ``batch_size``, ``min_lr`` and
    ``seed`` (the training loader's shuffling generator).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> brain = StepScheduledBrain(modules={"layer": torch.nn.Linear(2, 2)}, hparams={
    ...     "base_lr": 0.1, "scale_lr_with_batch": True, "batch_size": 64})
    >>> brain.peak_lr()
    0.025
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
        total = self.hparams.total_steps
        if not total:
            if self.steps_per_epoch is None:
                raise ValueError(
                    "The training loader has no length: set total_steps in the hparams."
                )
            total = self.steps_per_epoch * int(self.hparams.epoch_counter.limit)
        self.total_steps = int(total)
        warmup = self.hparams.warmup_steps
        if warmup is None:
            epochs = float(self.hparams.warmup_epochs or 0)
            warmup = int(round(epochs * (self.steps_per_epoch or 0)))
        self.warmup_steps = min(int(warmup), self.total_steps)

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """Build the loaders, derive the step counts, then run SpeechBrain's ``fit``."""
        train_kwargs = kwargs.pop("train_loader_kwargs", {}) or {}
        valid_kwargs = kwargs.pop("valid_loader_kwargs", {}) or {}
        if not isinstance(train_set, torch.utils.data.DataLoader):
            train_kwargs = {"generator": loader_generator(self.hparams.seed), **train_kwargs}
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
        if not self.hparams.scale_lr_with_batch:
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
            float(self.hparams.min_lr),
            self.warmup_steps,
        )

    def on_fit_batch_start(self, batch, should_step):
        """Set the learning rate of the coming optimiser step."""
        if self.total_steps is None:
            return
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
