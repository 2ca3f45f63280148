"""Learning-rate schedules of the Brains: the one schedule module of lasersb.

- :class:`WarmupSchedule`: a checkpointable multiplier (linear warm-up, then constant, linear or
  cosine decay) that LASER, the adapters and SE fine-tuning build in their YAML
  (``!new:lasersb.schedules.WarmupSchedule``).
- :func:`cosine_schedule`: DINO's value schedule (linear warm-up, cosine to a final value), for
  the step-scheduled speaker Brains (:class:`lasersb.brains.scheduled.StepScheduledBrain`),
  the per-stage schedule of the utterance-classifier transfer and the DINO teacher momentum.
"""

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
        ``"constant"``, ``"linear"`` or ``"cosine"`` after warm-up. ``"linear"`` with
        ``final_ratio=0`` and ``warmup_from_zero=True`` is s3prl's (and ``transformers``')
        ``linear_schedule_with_warmup``, the schedule of the LASER release.
    final_ratio : float
        Multiplier reached at ``total_steps`` for the decaying schedules.
    warmup_from_zero : bool
        ``True``: the update of step ``k < warmup_steps`` uses ``k / warmup_steps`` (s3prl's
        ``LambdaLR``: the very first update has learning rate 0). ``False``: ``(k + 1) /
        warmup_steps``, so no update is wasted. Both reach the base rate at ``warmup_steps``.
    warmup_start_ratio : float
        Multiplier the warm-up starts from (0: from zero; Spin's ``linear_warmup_decay`` starts
        from ``init_lr / lr`` = 1e-6 / 1e-4 = 0.01).

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
    >>> round(sched.last_lr(opt), 4)  # the learning rate of the step just made
    0.025
    >>> s3prl = WarmupSchedule(4, 8, decay="linear", warmup_from_zero=True)
    >>> [round(s3prl.multiplier(s), 2) for s in (0, 2, 4, 6, 7, 8)]
    [0.0, 0.5, 1.0, 0.5, 0.25, 0.0]
    >>> spin = WarmupSchedule(4, 7, "linear", final_ratio=0.01, warmup_from_zero=True,
    ...                       warmup_start_ratio=0.01)
    >>> [round(spin.multiplier(s), 4) for s in (0, 2, 4, 7)]
    [0.01, 0.505, 1.0, 0.01]
    """

    def __init__(
        self,
        warmup_steps=0,
        total_steps=None,
        decay="constant",
        final_ratio=0.0,
        warmup_from_zero=False,
        warmup_start_ratio=0.0,
    ):
        if decay not in ("constant", "linear", "cosine"):
            raise ValueError(f"decay must be constant, linear or cosine, got {decay!r}")
        if decay != "constant" and not total_steps:
            raise ValueError(f"decay={decay!r} needs total_steps")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps) if total_steps else None
        self.decay = decay
        self.final_ratio = float(final_ratio)
        self.warmup_from_zero = bool(warmup_from_zero)
        self.warmup_start_ratio = float(warmup_start_ratio)
        self.num_steps = 0

    def multiplier(self, step: int) -> float:
        """Learning-rate multiplier for the update made at optimiser step ``step`` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            ramp = (step + (0 if self.warmup_from_zero else 1)) / self.warmup_steps
            return self.warmup_start_ratio + (1.0 - self.warmup_start_ratio) * ramp
        if self.decay == "constant":
            return 1.0
        if self.decay == "cosine":  # the one cosine of this module (DINO's, below)
            return cosine_schedule(step, self.total_steps, 1.0, self.final_ratio, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final_ratio + (1.0 - self.final_ratio) * (1.0 - progress)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Remember each group's base lr and set the lr of the next update."""
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.apply(optimizer)

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set every group's lr for the next update (after a resume restored ``num_steps``)."""
        factor = self.multiplier(self.num_steps)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def last_lr(self, optimizer: torch.optim.Optimizer) -> float | None:
        """Learning rate (first parameter group) of the last optimiser step; ``None`` before any."""
        if self.num_steps == 0:
            return None
        return optimizer.param_groups[0]["initial_lr"] * self.multiplier(self.num_steps - 1)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Advance one optimiser step and set the lr of the next update."""
        self.num_steps += 1
        self.apply(optimizer)

    @mark_as_saver
    def _save(self, path):
        torch.save({"num_steps": self.num_steps}, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch
        self.num_steps = int(torch.load(path, weights_only=True)["num_steps"])


def cosine_schedule(
    step: int,
    total_steps: int,
    base_value: float,
    final_value: float,
    warmup_steps: int = 0,
    start_warmup_value: float = 0.0,
) -> float:
    """DINO's schedule: linear warm-up, then cosine from ``base_value`` to ``final_value``.

    Example
    -------
    >>> [round(cosine_schedule(s, 10, 1.0, 0.0, warmup_steps=2), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    step, total_steps, warmup_steps = int(step), max(1, int(total_steps)), int(warmup_steps)
    if warmup_steps > 0 and step < warmup_steps:
        return start_warmup_value + (base_value - start_warmup_value) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * progress))
