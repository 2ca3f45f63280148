"""Brain for transferring an utterance-embedding model to utterance classification.

Cho et al. (JSTSP 2022) transfer the DINO (or supervised x-vector) embedding model to
emotion recognition (IEMOCAP) and Alzheimer's detection (ADReSS): a classification head is put
on the 256-d embedding and the network is fine-tuned with one of two schedules:

- ``two_stage``: stage 1 trains only the *last affine layers* (the embedding layer of the
  trunk and the head; the rest is frozen, batch norm included) for ``stage1_epochs``, then
  stage 2 trains the whole network for ``stage2_epochs``, usually with a lower learning rate.
  The paper finds this better than fine-tuning everything at once.
- ``single_stage``: the whole network is trained from the first step, for the same number of
  epochs (``stage1_epochs + stage2_epochs``), at ``single_stage_lr``.

Training utterances are cut into random chunks of ``chunk_seconds`` (utterances shorter than a
chunk are repeated), optionally augmented (noise, reverberation: any callable
``aug(wavs, lens)``, e.g. :class:`lasersb.augment.NoiseMixer`, :class:`lasersb.augment.Reverb`).
At test time the full utterance is embedded, or, with ``eval_chunk_seconds``, the class
posteriors of its consecutive chunks are averaged.

Public pieces: :class:`EmbeddingClassifier` (trunk + head, with the freezing logic),
:func:`load_or_init_embedding_model`, :func:`classification_dataset`, :func:`chunk_posteriors`,
:func:`aggregate_posteriors`, :class:`UtteranceClassifierBrain` and the recipe steps
:func:`fit_and_test` and :func:`transfer_settings` (shared by the IEMOCAP and ADReSS recipes).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.distributed import if_main_process
from torch import nn

from lasersb.brains.base import DistributedBrain
from lasersb.brains.dino import apply_augmentation, fit_length, private_loader_generator
from lasersb.metrics.classification import classification_report
from lasersb.models.dino import cosine_schedule, load_embedding_model, random_crops
from lasersb.models.resnet import SpeakerEmbeddingModel

logger = logging.getLogger(__name__)

SCHEDULES = ("two_stage", "single_stage")


# ---------------------------------------------------------------------------- model
def load_or_init_embedding_model(checkpoint=None, **config) -> nn.Module:
    """The embedding trunk: from a DINO/x-vector checkpoint, or randomly initialised.

    Arguments
    ---------
    checkpoint : str or Path, optional
        An ``embedding_model.ckpt`` (or the output folder of a DINO/x-vector run), read with
        :func:`lasersb.models.dino.load_embedding_model`; its stored configuration wins over
        ``config``. ``None``: a random :class:`~lasersb.models.resnet.SpeakerEmbeddingModel`.
    **config
        Keyword arguments of :class:`~lasersb.models.resnet.SpeakerEmbeddingModel` (random
        initialisation only).

    Returns
    -------
    SpeakerEmbeddingModel
        In training mode; ``checkpoint_meta`` says where it came from.

    Example
    -------
    >>> model = load_or_init_embedding_model(None, embedding_dim=8, n_mels=16,
    ...                                      base_channels=4, num_blocks=(1, 1, 1, 1))
    >>> model.checkpoint_meta
    {'source': 'random-init'}
    """
    if checkpoint in (None, "", "null", "None"):
        model = SpeakerEmbeddingModel(**config)
        model.checkpoint_meta = {"source": "random-init"}
        return model
    model = load_embedding_model(checkpoint, eval_mode=False)
    logger.info(
        "Embedding model from %s (%s); its stored configuration is used.",
        checkpoint,
        model.checkpoint_meta.get("source", "unknown source"),
    )
    return model


def last_affine_modules(embedding_model: nn.Module) -> list:
    """The trunk's embedding (last affine) layer, with its normalisation when there is one.

    Light ResNet: ``encoder.embedding`` (+ ``encoder.embedding_bn``); ECAPA-TDNN: its final
    ``fc``; other models: their last ``nn.Linear``.

    Example
    -------
    >>> model = SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                               num_blocks=(1, 1, 1, 1))
    >>> [type(m).__name__ for m in last_affine_modules(model)]
    ['Linear', 'BatchNorm1d']
    """
    encoder = getattr(embedding_model, "encoder", embedding_model)
    embedding = getattr(encoder, "embedding", None)
    if isinstance(embedding, nn.Linear):
        modules = [embedding]
        if getattr(encoder, "embedding_bn", None) is not None:
            modules.append(encoder.embedding_bn)
        return modules
    ecapa = getattr(encoder, "ecapa", None)
    if ecapa is not None and hasattr(ecapa, "fc"):
        return [ecapa.fc]
    linears = [m for m in embedding_model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"No affine embedding layer found in {type(embedding_model).__name__}")
    return [linears[-1]]


class EmbeddingClassifier(nn.Module):
    """An utterance-embedding trunk with a classification head on its embedding.

    Arguments
    ---------
    embedding_model : nn.Module
        ``(wavs, rel_lens) -> (B, D)``, e.g. from :func:`load_or_init_embedding_model`.
    num_classes : int
        Output classes.
    hidden_dim : int
        Width of a hidden ReLU layer in the head (0: a single linear layer).
    dropout : float
        Dropout on the embedding before the head.

    Example
    -------
    >>> trunk = load_or_init_embedding_model(embedding_dim=8, n_mels=16, base_channels=4,
    ...                                      num_blocks=(1, 1, 1, 1))
    >>> model = EmbeddingClassifier(trunk, num_classes=4)
    >>> model.set_trainable("last_affine")
    >>> sum(p.requires_grad for p in model.parameters()) == len(model.last_affine_parameters())
    True
    >>> _ = model.train()
    >>> model(torch.randn(2, 8000), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 4])
    """

    TRAINABLE = ("all", "last_affine")

    def __init__(self, embedding_model, num_classes: int, hidden_dim: int = 0, dropout=0.0):
        super().__init__()
        dim = int(embedding_model.embedding_dim)
        self.embedding_model = embedding_model
        layers = [nn.Dropout(float(dropout))] if dropout else []
        if hidden_dim:
            layers += [
                nn.Linear(dim, int(hidden_dim)),
                nn.ReLU(),
                nn.Linear(hidden_dim, num_classes),
            ]
        else:
            layers.append(nn.Linear(dim, int(num_classes)))
        self.head = nn.Sequential(*layers)
        self.num_classes = int(num_classes)
        self.trainable = "all"

    def last_affine_modules(self) -> list:
        """The trunk's embedding layer (see :func:`last_affine_modules`) and the head."""
        return last_affine_modules(self.embedding_model) + [self.head]

    def last_affine_parameters(self) -> list:
        """Parameters of :meth:`last_affine_modules` (trained in stage 1)."""
        return [p for m in self.last_affine_modules() for p in m.parameters()]

    def body_parameters(self) -> list:
        """All the other parameters (frozen in stage 1)."""
        last = {id(p) for p in self.last_affine_parameters()}
        return [p for p in self.parameters() if id(p) not in last]

    def set_trainable(self, part: str) -> None:
        """``"all"``: train everything; ``"last_affine"``: only the last affine layers.

        With ``"last_affine"`` the rest of the trunk is also kept in evaluation mode, so that
        its batch-norm statistics stay those of the pre-trained model.
        """
        if part not in self.TRAINABLE:
            raise ValueError(f"trainable part must be one of {self.TRAINABLE}, got {part!r}")
        self.trainable = part
        for param in self.body_parameters():
            param.requires_grad_(part == "all")
        for param in self.last_affine_parameters():
            param.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; the frozen part of the trunk stays in eval mode."""
        super().train(mode)
        if mode and self.trainable == "last_affine":
            self.embedding_model.eval()
            for module in self.last_affine_modules():
                module.train(True)
        return self

    def embed(self, wavs: torch.Tensor, rel_lens=None) -> torch.Tensor:
        """``(B, T)`` waveforms -> ``(B, D)`` embeddings."""
        return self.embedding_model(wavs, rel_lens)

    def forward(self, wavs: torch.Tensor, rel_lens=None) -> torch.Tensor:
        """``(B, T)`` waveforms and ``(B,)`` relative lengths -> ``(B, num_classes)`` logits."""
        return self.head(self.embed(wavs, rel_lens))


# ---------------------------------------------------------------------------- data
def classification_dataset(
    csv_path, classes, label_column: str = "label", sample_rate: int = 16000, **kwargs
):
    """:func:`lasersb.data.pipelines.audio_dataset` plus the class index of each utterance.

    Arguments
    ---------
    csv_path : str or Path
        SpeechBrain CSV with ``ID``, ``duration``, ``wav`` and a label column.
    classes : sequence of str
        Class names; the index in this list is the target.
    label_column : str
        CSV column holding the class name.
    sample_rate : int
        Expected sample rate.
    **kwargs
        Other :func:`~lasersb.data.pipelines.audio_dataset` arguments.

    Returns
    -------
    DynamicItemDataset
        Outputs ``id``, ``sig``, ``duration`` and ``label_index`` (LongTensor of shape (1,)).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> soundfile.write(root / "a.wav", np.zeros(1600, dtype="float32"), 16000)
    >>> _ = (root / "d.csv").write_text(f"ID,duration,wav,label\\nu1,0.1,{root}/a.wav,sad\\n")
    >>> int(classification_dataset(root / "d.csv", ["neu", "sad"])[0]["label_index"])
    1
    """
    from lasersb.data.pipelines import audio_dataset

    dataset = audio_dataset(csv_path, sample_rate=sample_rate, **kwargs)
    with open(Path(csv_path), newline="", encoding="utf-8") as handle:
        columns = next(csv.reader(handle))
    if label_column not in columns:
        raise ValueError(
            f"Data CSV {csv_path} has no {label_column!r} column (has {columns}); rerun the "
            "data preparation or set label_column."
        )
    index = {str(name): i for i, name in enumerate(classes)}

    @sb.utils.data_pipeline.takes(label_column)
    @sb.utils.data_pipeline.provides("label_index")
    def label_pipeline(label):
        if label not in index:
            raise ValueError(
                f"Label {label!r} in {csv_path} is not one of the classes {list(index)}: fix the "
                "classes in the hparams or the data preparation."
            )
        return torch.tensor([index[label]], dtype=torch.long)

    dataset.add_dynamic_item(label_pipeline)
    keys = ["id", "sig", "label_index"] + (["duration"] if "duration" in columns else [])
    dataset.set_output_keys(keys)
    return dataset


# ---------------------------------------------------------------------------- evaluation
def chunk_posteriors(model, wavs, rel_lens, chunk_samples: int, max_chunks_per_pass=64):
    """Class posteriors averaged over the consecutive chunks of each utterance.

    Each utterance's valid part is cut into ``ceil(length / chunk_samples)`` chunks; the last
    one is aligned with the utterance's end, so every chunk is full speech (an utterance shorter
    than a chunk is one chunk of its own length, padded).

    Arguments
    ---------
    model : callable
        ``(wavs, rel_lens) -> logits``.
    wavs : torch.Tensor
        ``(B, T)`` waveforms.
    rel_lens : torch.Tensor
        ``(B,)`` relative lengths.
    chunk_samples : int
        Chunk length in samples.
    max_chunks_per_pass : int
        Chunks per forward pass (memory bound).

    Returns
    -------
    torch.Tensor
        ``(B, C)`` averaged posteriors.

    Example
    -------
    >>> model = lambda w, l: torch.stack([w.mean(1), -w.mean(1)], dim=1)
    >>> probs = chunk_posteriors(model, torch.ones(2, 10), torch.tensor([1.0, 0.5]), 4)
    >>> probs.shape, torch.allclose(probs.sum(1), torch.ones(2))
    (torch.Size([2, 2]), True)
    """
    batch, length = wavs.shape
    chunk_samples = int(chunk_samples)
    valid = torch.round(rel_lens.detach().float().cpu() * length).long().clamp(1, length)
    pieces, lens, owner = [], [], []
    for b in range(batch):
        n = int(valid[b])
        if n <= chunk_samples:
            pieces.append(F.pad(wavs[b, :n], (0, chunk_samples - n)))
            lens.append(n / chunk_samples)
            owner.append(b)
            continue
        count = math.ceil(n / chunk_samples)
        for k in range(count):
            start = min(k * chunk_samples, n - chunk_samples)
            pieces.append(wavs[b, start : start + chunk_samples])
            lens.append(1.0)
            owner.append(b)
    chunks = torch.stack(pieces)
    chunk_lens = torch.tensor(lens, device=wavs.device)
    probs = []
    for start in range(0, chunks.shape[0], max_chunks_per_pass):
        logits = model(
            chunks[start : start + max_chunks_per_pass], chunk_lens[start:][:max_chunks_per_pass]
        )
        probs.append(logits.float().softmax(dim=-1))
    probs = torch.cat(probs)
    owner = torch.tensor(owner, device=probs.device)
    total = torch.zeros(batch, probs.shape[1], device=probs.device).index_add_(0, owner, probs)
    counts = torch.bincount(owner, minlength=batch).clamp(min=1).unsqueeze(1)
    return total / counts


def aggregate_posteriors(predictions: dict, groups: dict) -> dict:
    """Average utterance posteriors per group (e.g. the ADReSS chunks of one subject).

    Arguments
    ---------
    predictions : dict
        ``{"ids": [...], "targets": [...], "probs": [[...], ...]}`` as produced by
        :meth:`UtteranceClassifierBrain.evaluate` (``brain.test_predictions``).
    groups : dict
        ``{utterance id: group id}``; utterances missing from it are their own group.

    Returns
    -------
    dict
        The same structure with one entry per group (the group's target is that of its first
        utterance; all utterances of a group must share it).

    Example
    -------
    >>> preds = {"ids": ["a-0", "a-1", "b-0"], "targets": [1, 1, 0],
    ...          "probs": [[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]}
    >>> out = aggregate_posteriors(preds, {"a-0": "a", "a-1": "a", "b-0": "b"})
    >>> out["ids"], out["targets"], [[round(p, 2) for p in row] for row in out["probs"]]
    (['a', 'b'], [1, 0], [[0.4, 0.6], [0.9, 0.1]])
    """
    order, sums, counts, targets = [], {}, {}, {}
    for uid, target, probs in zip(predictions["ids"], predictions["targets"], predictions["probs"]):
        group = groups.get(uid, uid)
        if group not in sums:
            order.append(group)
            sums[group] = [0.0] * len(probs)
            counts[group] = 0
            targets[group] = int(target)
        elif targets[group] != int(target):
            raise ValueError(f"Utterances of group {group!r} have different targets.")
        sums[group] = [s + float(p) for s, p in zip(sums[group], probs)]
        counts[group] += 1
    return {
        "ids": order,
        "targets": [targets[g] for g in order],
        "probs": [[s / counts[g] for s in sums[g]] for g in order],
    }


# ---------------------------------------------------------------------------- brain
class UtteranceClassifierBrain(DistributedBrain):
    """Fine-tunes an :class:`EmbeddingClassifier` with the two-stage or single-stage schedule.

    Expected ``modules``: ``model`` (:class:`EmbeddingClassifier`). Expected ``hparams``:
    ``classes``, ``schedule`` (``two_stage`` | ``single_stage``), ``stage1_epochs``,
    ``stage2_epochs``, ``lr`` (stage 1), ``stage2_lr``, ``single_stage_lr``,
    ``epoch_counter`` (limit ``stage1_epochs + stage2_epochs``), ``chunk_seconds`` (null:
    whole utterances), ``sample_rate``; optional ``eval_chunk_seconds``, ``warmup_fraction``
    (of each stage's steps), ``min_lr_ratio`` (cosine decay floor within each stage),
    ``label_smoothing``, ``augment`` (callable or list), ``train_logger``,
    ``num_checkpoints_to_keep``. ``opt_class`` receives two parameter groups (last affine
    layers, rest); their learning rates are set at every step.
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
        warmup = int(round(float(getattr(self.hparams, "warmup_fraction", 0.0)) * total))
        ratio = float(getattr(self.hparams, "min_lr_ratio", 1.0))
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
            chunk = self._samples(getattr(self.hparams, "chunk_seconds", None))
            if chunk is not None:
                wavs = random_crops(wavs, lens, chunk, 1)
                lens = torch.ones(wavs.shape[0], device=wavs.device)
            augment = getattr(self.hparams, "augment", None)
            if augment:
                wavs = fit_length(apply_augmentation(augment, wavs, lens)[0], wavs.shape[1])
            return model(wavs, lens)
        chunk = self._samples(getattr(self.hparams, "eval_chunk_seconds", None))
        if chunk is None:
            return model(wavs, lens).float().log_softmax(dim=-1)
        return chunk_posteriors(model, wavs, lens, chunk).clamp(min=1e-12).log()

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy; evaluation stages also collect the posteriors."""
        targets = batch.label_index.data.to(self.device).view(-1)
        if stage == sb.Stage.TRAIN:
            smoothing = float(getattr(self.hparams, "label_smoothing", 0.0) or 0.0)
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
        train_logger = getattr(self.hparams, "train_logger", None)
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
                num_to_keep=int(getattr(self.hparams, "num_checkpoints_to_keep", 1)),
            )

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, **kwargs):
        """As SpeechBrain's ``fit``; the number of batches per epoch fixes the lr schedule."""
        self._no_valid = valid_set is None
        train_kwargs = kwargs.pop("train_loader_kwargs", {}) or {}
        if not isinstance(train_set, torch.utils.data.DataLoader):
            train_kwargs = {"generator": private_loader_generator(self.hparams), **train_kwargs}
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


# ---------------------------------------------------------------------------- recipe steps
def fit_and_test(hparams: dict, run_opts: dict, manifests: dict):
    """Fine-tune on ``manifests["train"]``, then test on ``manifests["test"]``: the recipe body.

    Builds the :func:`classification_dataset` of each manifest (the test set sorted by
    duration), the :class:`UtteranceClassifierBrain` from ``hparams`` (``modules``,
    ``opt_class``, ``checkpointer``), trains with shuffled, seeded batches of ``batch_size``
    (resuming from the last checkpoint) and evaluates in batches of ``eval_batch_size``.
    Used by the IEMOCAP and ADReSS recipes. Returns ``(brain, test report)``.

    Example
    -------
    >>> brain, report = fit_and_test(hparams, run_opts, manifests)  # doctest: +SKIP
    >>> report["ua"]  # doctest: +SKIP
    0.62
    """
    from lasersb.data.pipelines import dataloader_options

    classes = hparams["classes"]
    train_data = classification_dataset(
        manifests["train"], classes, sample_rate=hparams["sample_rate"]
    )
    test_data = classification_dataset(
        manifests["test"], classes, sample_rate=hparams["sample_rate"], sort="ascending"
    )
    brain = UtteranceClassifierBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_loader = dataloader_options(
        train_data,
        batch_size=hparams["batch_size"],
        shuffle=True,
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
    )
    brain.fit(hparams["epoch_counter"], train_data, train_loader_kwargs=train_loader)
    test_loader = dataloader_options(test_data, batch_size=hparams["eval_batch_size"])
    report = brain.evaluate(test_data, test_loader_kwargs=test_loader)
    return brain, report


def transfer_settings(hparams: dict) -> dict:
    """The settings a transfer run records next to its scores in ``results.json``.

    Example
    -------
    >>> class Model:
    ...     checkpoint_meta = {"source": "dino"}
    >>> transfer_settings({"schedule": "two_stage", "chunk_seconds": 3.0,
    ...                    "eval_chunk_seconds": None, "embedding_model": Model(),
    ...                    "embedding_checkpoint": "ckpt"})["embedding_source"]
    'dino'
    """
    return {
        "schedule": hparams["schedule"],
        "chunk_seconds": hparams["chunk_seconds"],
        "eval_chunk_seconds": hparams["eval_chunk_seconds"],
        "embedding_source": hparams["embedding_model"].checkpoint_meta.get("source", "unknown"),
        "embedding_checkpoint": str(hparams["embedding_checkpoint"]),
    }
