"""Brain for transferring an utterance-embedding model to utterance classification.

Cho et al. (JSTSP 2022) transfer the DINO (or supervised x-vector) embedding model to
emotion recognition (IEMOCAP) and Alzheimer's detection (ADReSS): a classification head is put
on the 256-d embedding (:class:`lasersb.models.embedding_classifier.EmbeddingClassifier`) and
the network is fine-tuned by :class:`EmbeddingClassifierBrain` with one of two schedules:

- ``two_stage``: stage 1 trains only the *last affine layers* (the embedding layer of the
  trunk and the head; the rest is frozen, batch norm included) for ``stage1_epochs``, then
  stage 2 trains the whole network for ``stage2_epochs``, usually with a lower learning rate.
  The paper finds this better than fine-tuning everything at once.
- ``single_stage``: the whole network is trained from the first step, for the same number of
  epochs (``stage1_epochs + stage2_epochs``), at ``single_stage_lr``.

Training utterances are cut into random chunks of ``chunk_seconds`` (utterances shorter than a
chunk are repeated), optionally augmented (noise, reverberation: any callable
``aug(wavs, lens)``, e.g. :func:`lasersb.augment.chain.speaker_augmentation`). At test time the
full utterance is embedded, or, with ``eval_chunk_seconds``, the class posteriors of its
consecutive chunks are averaged (:func:`lasersb.models.embedding_classifier.chunk_posteriors`).
"""

from __future__ import annotations

import logging

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.distributed import if_main_process

from lasersb.augment.chain import apply_augmentation
from lasersb.augment.speed import fit_length
from lasersb.brains.base import DistributedBrain
from lasersb.data.pipelines import loader_generator
from lasersb.metrics.classification import classification_report
from lasersb.models.dino import random_crops
from lasersb.models.embedding_classifier import chunk_posteriors
from lasersb.schedules import cosine_schedule

logger = logging.getLogger(__name__)

SCHEDULES = ("two_stage", "single_stage")


class EmbeddingClassifierBrain(DistributedBrain):
    """Fine-tunes an ``EmbeddingClassifier`` with the two-stage or single-stage schedule.

    Expected ``modules``: ``model``
    (:class:`~lasersb.models.embedding_classifier.EmbeddingClassifier`). Expected ``hparams``
    (all of them; ``null`` where a value is optional): ``classes``, ``schedule``
    (``two_stage`` | ``single_stage``), ``stage1_epochs``, ``stage2_epochs``, ``lr`` (stage
    1), ``stage2_lr``, ``single_stage_lr``, ``epoch_counter`` (limit ``stage1_epochs +
    stage2_epochs``), ``chunk_seconds`` (null: whole utterances), ``eval_chunk_seconds``
    (null: whole utterances), ``sample_rate``, ``warmup_fraction`` (of each stage's steps),
    ``min_lr_ratio`` (cosine decay floor within each stage), ``label_smoothing``, ``augment``
    (callable or list, or null), ``train_logger`` (or null), ``num_checkpoints_to_keep`` and
    ``seed`` (the training loader's shuffling generator). ``opt_class`` receives two parameter
    groups (last affine layers, rest); their learning rates are set at every step.
    """

    #: The two-stage schedule freezes the trunk during stage 1, after DDP registered it.
    ddp_find_unused_parameters = True

    def _wrap_distributed(self):
        """Wrap with every parameter trainable, so DDP synchronises what any stage trains."""
        self.unwrapped.model.set_trainable("all")
        super()._wrap_distributed()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        schedule = self.hparams.schedule
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        expected = self.total_epochs()
        limit = int(self.hparams.epoch_counter.limit)
        if limit != expected:
            raise ValueError(
                f"epoch_counter.limit is {limit} but the {schedule} schedule needs "
                f"stage1_epochs + stage2_epochs = {expected}: set the limit to "
                "!ref <stage1_epochs> + <stage2_epochs>."
            )
        self.steps_per_epoch = None
        self.stage_name = None
        self.test_predictions = None
        self.test_report = None

    # ------------------------------------------------------------------ schedule
    def total_epochs(self) -> int:
        """``stage1_epochs + stage2_epochs`` (both schedules get the same budget)."""
        return int(self.hparams.stage1_epochs) + int(self.hparams.stage2_epochs)

    def stage_of_epoch(self, epoch: int) -> tuple[str, int, int]:
        """``(stage name, first epoch of the stage, epochs in the stage)`` of ``epoch`` (1-based).

        Stage names: ``stage1`` (last affine layers), ``stage2`` (whole network), ``single``.
        """
        stage1 = int(self.hparams.stage1_epochs)
        if self.hparams.schedule == "single_stage":
            return "single", 1, self.total_epochs()
        if epoch <= stage1:
            return "stage1", 1, stage1
        return "stage2", stage1 + 1, int(self.hparams.stage2_epochs)

    def stage_lrs(self, stage_name: str) -> tuple[float, float]:
        """Peak learning rates ``(last affine layers, rest)`` of a stage (rest 0: frozen)."""
        if stage_name == "stage1":
            return float(self.hparams.lr), 0.0
        if stage_name == "stage2":
            lr = float(self.hparams.stage2_lr)
            return lr, lr
        lr = float(self.hparams.single_stage_lr)
        return lr, lr

    def init_optimizers(self):
        """One optimiser with two parameter groups: last affine layers, then the rest."""
        model = self.unwrapped.model
        groups = [
            {"params": model.last_affine_parameters(), "name": "last_affine"},
            {"params": model.body_parameters(), "name": "body"},
        ]
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"optimizer": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_batch_start(self, batch, should_step):
        """Set both groups' learning rates: warm-up then cosine decay within the stage."""
        if self.stage_name is None:
            return
        _, first_epoch, stage_epochs = self.stage_of_epoch(self._epoch)
        per_epoch = self.steps_per_epoch or 1
        total = max(1, stage_epochs * per_epoch)
        step = (self._epoch - first_epoch) * per_epoch + max(0, self.step - 1)
        warmup = int(round(float(self.hparams.warmup_fraction) * total))
        ratio = float(self.hparams.min_lr_ratio)
        for group, peak in zip(self.optimizer.param_groups, self.stage_lrs(self.stage_name)):
            group["lr"] = cosine_schedule(step, total, peak, peak * ratio, warmup)

    # ------------------------------------------------------------------ forward / loss
    def _samples(self, seconds) -> int | None:
        if seconds in (None, 0):
            return None
        return int(round(float(seconds) * int(self.hparams.sample_rate)))

    def compute_forward(self, batch, stage):
        """Random chunks (+ augmentation) in training; full utterances or chunk averages else.

        Returns logits in training and log posteriors otherwise.
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        model = self.modules.model
        if stage == sb.Stage.TRAIN:
            chunk = self._samples(self.hparams.chunk_seconds)
            if chunk is not None:
                wavs = random_crops(wavs, lens, chunk, 1)
                lens = torch.ones(wavs.shape[0], device=wavs.device)
            augment = self.hparams.augment
            if augment:
                wavs = fit_length(apply_augmentation(augment, wavs, lens)[0], wavs.shape[1])
            return model(wavs, lens)
        chunk = self._samples(self.hparams.eval_chunk_seconds)
        if chunk is None:
            return model(wavs, lens).float().log_softmax(dim=-1)
        return chunk_posteriors(model, wavs, lens, chunk).clamp(min=1e-12).log()

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy; evaluation stages also collect the posteriors."""
        targets = batch.label_index.data.to(self.device).view(-1)
        if stage == sb.Stage.TRAIN:
            smoothing = float(self.hparams.label_smoothing or 0.0)
            return F.cross_entropy(predictions.float(), targets, label_smoothing=smoothing)
        loss = F.nll_loss(predictions, targets)
        self._collected["ids"].extend(batch.id)
        self._collected["targets"].extend(targets.tolist())
        self._collected["probs"].extend(predictions.exp().tolist())
        return loss

    # ------------------------------------------------------------------ stages
    def on_fit_start(self):
        """Recover the last checkpoint; log the sizes."""
        super().on_fit_start()
        model = self.unwrapped.model
        last = sum(p.numel() for p in model.last_affine_parameters())
        body = sum(p.numel() for p in model.body_parameters())
        logger.info(
            "Utterance classifier (%s): %.3fM parameters in the last affine layers, %.3fM in "
            "the rest of the trunk; source: %s",
            self.hparams.schedule,
            last / 1e6,
            body / 1e6,
            getattr(model.embedding_model, "checkpoint_meta", {}).get("source", "unknown"),
        )

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Load the checkpoint to evaluate; the loss average restarts from the first batch."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.step = 0

    def on_stage_start(self, stage, epoch=None):
        """Set the trainable part for the epoch's schedule stage; reset the collectors."""
        self._collected = {"ids": [], "targets": [], "probs": []}
        if stage != sb.Stage.TRAIN:
            return
        self._epoch = int(epoch)
        name, _, _ = self.stage_of_epoch(self._epoch)
        if name != self.stage_name:
            logger.info("Epoch %d: %s", self._epoch, name)
        self.stage_name = name
        model = self.unwrapped.model
        model.set_trainable("last_affine" if name == "stage1" else "all")

    def _report(self) -> dict:
        preds = self._collected
        predicted = [max(range(len(p)), key=p.__getitem__) for p in preds["probs"]]
        return classification_report(preds["targets"], predicted, self.hparams.classes)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log; checkpoint after each training epoch (or validation); keep test predictions."""
        train_logger = self.hparams.train_logger
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            meta = {"epoch": epoch, "stage": self.stage_name}
            meta["lr"] = self.optimizer.param_groups[0]["lr"]
            # The checkpoint must not look like an interrupted epoch (SpeechBrain saves step).
            self.step = 0
            if self._no_valid:
                if train_logger is not None:
                    train_logger.log_stats(stats_meta=meta, train_stats=self.train_stats)
                self._checkpoint({"loss": stage_loss})
            return
        report = self._report()
        stats = {"loss": stage_loss, "ua": report["ua"], "wa": report["wa"]}
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "stage": self.stage_name},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
            self._checkpoint(stats)
            return
        self.test_report = report
        self.test_predictions = dict(self._collected)
        if train_logger is not None:
            train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )

    def _checkpoint(self, stats):
        if self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(
                meta={k: float(v) for k, v in stats.items()},
                num_to_keep=int(self.hparams.num_checkpoints_to_keep),
            )

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """As SpeechBrain's ``fit``; the number of batches per epoch fixes the lr schedule."""
        self._no_valid = valid_set is None
        train_kwargs = kwargs.pop("train_loader_kwargs", {}) or {}
        if not isinstance(train_set, torch.utils.data.DataLoader):
            train_kwargs = {"generator": loader_generator(self.hparams.seed), **train_kwargs}
            train_set = self.make_dataloader(train_set, stage=sb.Stage.TRAIN, **train_kwargs)
        try:
            self.steps_per_epoch = len(train_set)
        except TypeError:
            self.steps_per_epoch = None
        return super().fit(epoch_counter, train_set, valid_set, progressbar, **kwargs)

    def evaluate(self, test_set, max_key=None, min_key=None, progressbar=None, **kwargs):
        """Evaluate (best checkpoint by ``max_key``/``min_key``); returns the metrics report.

        ``self.test_predictions`` then holds ``{"ids", "targets", "probs"}``.
        """
        super().evaluate(
            test_set, max_key=max_key, min_key=min_key, progressbar=progressbar, **kwargs
        )
        return self.test_report

    def save_predictions(self, path) -> None:
        """Write the test posteriors as CSV: ``ID,target,prediction,<class posteriors>``."""
        if not if_main_process() or self.test_predictions is None:
            return
        classes = list(self.hparams.classes)
        lines = ["ID,target,prediction," + ",".join(classes)]
        preds = self.test_predictions
        for uid, target, probs in zip(preds["ids"], preds["targets"], preds["probs"]):
            best = max(range(len(probs)), key=probs.__getitem__)
            cells = ",".join(f"{p:.5f}" for p in probs)
            lines.append(f"{uid},{classes[target]},{classes[best]},{cells}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
