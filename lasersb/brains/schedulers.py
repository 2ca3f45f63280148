"""Step-based learning-rate schedules shared by the Brains (checkpointable state)."""

from __future__ import annotations

import math

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


@register_checkpoint_hooks
class WarmupSchedule:
    """Learning-rate multiplier: linear warm-up, then constant, linear or cosine decay.

    The Brain calls :meth:`step` after every optimiser step; the multiplier is applied to each
    parameter group's ``initial_lr``. The step count is saved in checkpoints, so a resumed run
    continues on the same curve.

    Arguments
    ---------
    warmup_steps : int
        Steps of linear warm-up from ``0`` to the base learning rate.
    total_steps : int, optional
        Last step of the decay (needed for ``decay="linear"`` or ``"cosine"``).
    decay : str
        ``"constant"`` (LASER's release), ``"linear"`` or ``"cosine"`` after warm-up.
    final_ratio : float
        Multiplier reached at ``total_steps`` for the decaying schedules.

    Example
    -------
    >>> sched = WarmupSchedule(warmup_steps=4, total_steps=8, decay="linear")
    >>> [round(sched.multiplier(s), 2) for s in (0, 2, 4, 6, 8)]
    [0.25, 0.75, 1.0, 0.5, 0.0]
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched.attach(opt)
    >>> round(opt.param_groups[0]["lr"], 4)
    0.025
    >>> sched.step(opt)
    >>> round(opt.param_groups[0]["lr"], 4)
    0.05
    """

    def __init__(self, warmup_steps=0, total_steps=None, decay="constant", final_ratio=0.0):
        if decay not in ("constant", "linear", "cosine"):
            raise ValueError(f"decay must be constant, linear or cosine, got {decay!r}")
        if decay != "constant" and not total_steps:
            raise ValueError(f"decay={decay!r} needs total_steps")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps) if total_steps else None
        self.decay = decay
        self.final_ratio = float(final_ratio)
        self.num_steps = 0

    def multiplier(self, step: int) -> float:
        """Learning-rate multiplier for the update made at optimiser step ``step`` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.decay == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_ratio + (1.0 - self.final_ratio) * shape

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Remember each group's base lr and set the lr of the next update."""
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply(optimizer)

    def _apply(self, optimizer):
        factor = self.multiplier(self.num_steps)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Advance one optimiser step and set the lr of the next update."""
        self.num_steps += 1
        self._apply(optimizer)

    @mark_as_saver
    def _save(self, path):
        torch.save({"num_steps": self.num_steps}, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch
        self.num_steps = int(torch.load(path, weights_only=True)["num_steps"])
