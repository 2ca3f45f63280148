"""The two schedule-driven bases of lasersb's Brains (the Brain side of :mod:`lasersb.schedules`).

- :class:`WarmupScheduledBrain`: one optimiser whose learning rate follows
  ``hparams.lr_schedule`` (a :class:`lasersb.schedules.WarmupSchedule`, checkpointed with the
  optimiser, re-applied after a resume, stepped after every optimiser step), with the loss and
  learning rate of every step in TensorBoard. LASER/SCORE, Spin, the adapters and SE
  fine-tuning derive from it.
- :class:`StepScheduledBrain`: DINO and the x-vector baseline count their schedules in optimiser
  steps (linear warm-up, cosine decay, DINO's teacher momentum and frozen prototypes), but the
  number of steps is only known once the training loader exists; it builds the loaders itself
  in ``fit``, derives ``steps_per_epoch``, ``total_steps`` and ``warmup_steps``, and sets the
  learning rate (:func:`lasersb.schedules.cosine_schedule`) before every optimiser step.
"""

from __future__ import annotations

import math

import speechbrain as sb
import torch

from lasersb.brains.base import DistributedBrain
from lasersb.data.pipelines import loader_generator
from lasersb.schedules import cosine_schedule


class WarmupScheduledBrain(DistributedBrain):
    """A :class:`~lasersb.brains.base.DistributedBrain` whose optimiser follows ``lr_schedule``.

    Reads ``hparams``: ``lr_schedule`` (a :class:`lasersb.schedules.WarmupSchedule`, or ``None``
    for a constant learning rate) and ``tensorboard_logger`` (or ``None``). Subclasses choose
    the parameters (:meth:`optimizer_params`), add what the learning rate must respect after
    every change (:meth:`on_lr_update`) and what each step logs (:meth:`step_stats`).

    Example
    -------
    >>> from lasersb.schedules import WarmupSchedule
    >>> brain = WarmupScheduledBrain(
    ...     modules={"layer": torch.nn.Linear(2, 2)},
    ...     opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
    ...     hparams={"lr_schedule": WarmupSchedule(4), "tensorboard_logger": None},
    ...     run_opts={"device": "cpu"})
    >>> brain.init_optimizers()
    >>> round(brain.optimizer.param_groups[0]["lr"], 4)
    0.025
    >>> brain.on_fit_batch_end(None, None, torch.tensor(1.0), should_step=True)
    >>> round(brain.optimizer.param_groups[0]["lr"], 4), round(brain.final_lr, 4)
    (0.05, 0.025)
    """

    #: The error when :meth:`optimizer_params` is empty (subclasses say the fix).
    no_trainable_message = "No trainable parameters."

    def optimizer_params(self) -> list:
        """The parameters (or parameter groups) of the optimiser: everything trainable."""
        return [p for p in self.modules.parameters() if p.requires_grad]

    def init_optimizers(self):
        """``opt_class`` over :meth:`optimizer_params`, the schedule attached; both checkpointed."""
        params = self.optimizer_params()
        if not params:
            raise ValueError(self.no_trainable_message)
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        schedule = self.hparams.lr_schedule
        if schedule is not None:
            schedule.attach(self.optimizer)
        self.on_lr_update()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)
            if schedule is not None:
                self.checkpointer.add_recoverable("lr_schedule", schedule)

    def on_lr_update(self):
        """Called whenever the schedule has set the learning rates (a hook; nothing here)."""

    def on_fit_start(self):
        """Recover the latest checkpoint, then re-apply the (restored) schedule's learning rate."""
        super().on_fit_start()
        schedule = self.hparams.lr_schedule
        if schedule is not None and getattr(self, "optimizer", None) is not None:
            schedule.apply(self.optimizer)
            self.on_lr_update()

    def step_stats(self, loss) -> dict:
        """What TensorBoard records for an optimiser step, besides ``lr``."""
        return {"loss": float(loss.detach())}

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Advance the schedule after an optimiser step; log the step's stats and lr."""
        if not should_step:
            return
        schedule = self.hparams.lr_schedule
        if schedule is not None:
            schedule.step(self.optimizer)
        self.on_lr_update()
        tb = self.hparams.tensorboard_logger
        if tb is not None:  # log_stats runs on the main process only and syncs all: every rank
            stats = dict(self.step_stats(loss), lr=self.optimizer.param_groups[0]["lr"])
            tb.log_stats(stats_meta={"step": self.optimizer_step}, train_stats=stats)

    @property
    def final_lr(self) -> float | None:
        """Learning rate of the last optimiser step (``None`` before any, or without schedule)."""
        optimizer = getattr(self, "optimizer", None)
        schedule = self.hparams.lr_schedule
        if optimizer is None or schedule is None:
            return None
        return schedule.last_lr(optimizer)


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
