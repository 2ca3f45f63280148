"""CTC ASR fine-tuning of a wav2vec 2.0 / HuBERT / WavLM encoder: adapters, frozen or full.

One Brain for the three settings of Thomas et al., "Efficient Adapter Transfer of
Self-Supervised Speech Models for Automatic Speech Recognition" (ICASSP 2022), chosen by the
``finetune`` hyperparameter:

- ``adapters``: bottleneck adapters (:mod:`lasersb.models.adapters`) in the chosen layers;
  the encoder is frozen except the adapters, optionally its layer norms, and the CTC head;
- ``full``: everything but the CNN feature encoder is trained (``encoder_lr``), optionally
  after ``freeze_encoder_steps`` head-only updates (fairseq's ``freeze_finetune_updates``);
- ``frozen``: only the CTC head (a lower bound).

The encoder feeds a linear CTC head (:class:`lasersb.models.heads.LinearCTCHead`) over
characters or SentencePiece units. At start the Brain prints and stores the parameter
accounting (trainable / total per group); checkpoints hold only the trainable parameters
(small in the adapter setting); at the end :meth:`AdapterCTCBrain.evaluate_splits` writes WER and
CER per split, ``results.json`` and, for adapters, the adapter-only checkpoint
``adapters.pt`` (adapters + head) that :func:`lasersb.models.adapters.load_adapters` puts back
onto one shared frozen encoder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from lasersb.brains.base import DistributedBrain
from lasersb.brains.superb import batch_ctc_loss
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics.error_rates import ErrorRateTracker
from lasersb.models import adapters as adapter_lib

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
ADAPTERS_FILE = "adapters.pt"
FINETUNE_MODES = ("adapters", "full", "frozen")


@register_checkpoint_hooks
class TrainableParameters:
    """Checkpoint only the trainable parameters of a module (adapters, norms, head...).

    Arguments
    ---------
    module : torch.nn.Module
        The module whose ``requires_grad`` parameters are saved and restored.

    Example
    -------
    >>> import tempfile, pathlib
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> _ = net[0].requires_grad_(False)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "params.ckpt"
    >>> TrainableParameters(net).save(path)
    >>> sorted(torch.load(path, weights_only=True))
    ['1.bias', '1.weight']
    >>> TrainableParameters(net).load(path)
    """

    def __init__(self, module):
        self.module = module

    def state_dict(self) -> dict:
        """The trainable parameters (CPU copies)."""
        return {
            name: param.detach().cpu().clone()
            for name, param in self.module.named_parameters()
            if param.requires_grad
        }

    @mark_as_saver
    def save(self, path):
        """Write the trainable parameters to ``path``."""
        torch.save(self.state_dict(), path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the parameters saved in ``path`` (names must exist in the module)."""
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = dict(self.module.named_parameters())
        unknown = [name for name in state if name not in own]
        if unknown:
            raise ValueError(
                f"Checkpoint {path} has parameters this model lacks ({unknown[:3]}...): it was "
                "written with another adapter/fine-tuning configuration; use a new output_folder."
            )
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device))


def configure_encoder(
    upstream,
    head,
    finetune="adapters",
    adapter_layers="all",
    adapter_bottleneck=256,
    adapter_positions=adapter_lib.POSITIONS,
    adapter_layer_norm=False,
    adapter_activation="gelu",
    adapter_dropout=0.0,
    train_layer_norms=True,
):
    """Insert adapters (``finetune="adapters"``) and set which parameters are trained.

    Arguments
    ---------
    upstream : lasersb.models.upstream.SSLUpstream
        The encoder.
    head : torch.nn.Module
        The task head (always trained).
    finetune : str
        ``"adapters"``, ``"full"`` (all but the CNN) or ``"frozen"`` (head only).
    adapter_layers, adapter_bottleneck, adapter_positions, adapter_layer_norm,
    adapter_activation, adapter_dropout
        Passed to :func:`lasersb.models.adapters.add_adapters`.
    train_layer_norms : bool
        With adapters, also train the encoder's layer norms (as in the paper).

    Returns
    -------
    report : dict
        Parameter accounting (:func:`lasersb.models.adapters.parameter_report`).
    table : str
        The same as a Markdown table.
    """
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}.")
    if finetune == "adapters":
        existing = adapter_lib.adapter_config(upstream)
        if existing:
            # The upstream came with adapters (an SSFT export with use_adapters): fine-tune that
            # set only if it is the one asked for, never silently in place of it.
            wanted = {
                "layers": adapter_lib.resolve_layer_indices(adapter_layers, existing["num_layers"]),
                "positions": [
                    p
                    for p in adapter_lib.POSITIONS
                    if p
                    in (
                        (adapter_positions,)
                        if isinstance(adapter_positions, str)
                        else adapter_positions
                    )
                ],
                "bottleneck": int(adapter_bottleneck),
                "layer_norm": bool(adapter_layer_norm),
            }
            if {key: existing[key] for key in wanted} != wanted:
                raise ValueError(
                    f"The upstream already carries lasersb adapters {existing} (an export with "
                    f"adapters), not the set asked for ({wanted}). Use the original upstream as "
                    "upstream_source, or ask for the same adapter set to fine-tune it further."
                )
            logger.info("Fine-tuning the adapters the upstream carries: %s", existing)
        else:
            adapter_lib.add_adapters(
                upstream,
                layers=adapter_layers,
                bottleneck=adapter_bottleneck,
                positions=adapter_positions,
                layer_norm=adapter_layer_norm,
                activation=adapter_activation,
                dropout=adapter_dropout,
            )
        adapter_lib.mark_trainable(
            upstream, adapters=True, layer_norms=train_layer_norms, extra_modules=[head]
        )
    elif finetune == "frozen":
        adapter_lib.mark_trainable(upstream, adapters=False, extra_modules=[head])
    else:
        upstream.requires_grad_(True)
        for module in adapter_lib._feature_encoder_modules(upstream):
            module.requires_grad_(False)
        head.requires_grad_(True)
    return adapter_lib.parameter_report(adapter_lib.parameter_groups(upstream, head))


def character_units(text: str) -> list[str]:
    """Characters of a transcript for CER (spaces count, as ``|``).

    Example
    -------
    >>> character_units("a  cat")
    ['A', '|', 'C', 'A', 'T']
    """
    return list("|".join(str(text).upper().split()))


class AdapterCTCBrain(DistributedBrain):
    """Encoder (adapted / frozen / fully fine-tuned) + linear CTC head, trained with CTC.

    Expected ``modules``: ``upstream`` (:class:`lasersb.models.upstream.SSLUpstream` built with
    ``trainable_layers=0``; this Brain sets what is trained) and ``head``
    (:class:`lasersb.models.heads.LinearCTCHead`). Expected ``hparams``: ``tokenizer``
    (``CharTokenizer`` or ``SentencePieceTokenizer``), ``finetune``, ``lr``, ``output_folder``,
    and for adapters ``adapter_layers``, ``adapter_bottleneck``, ``adapter_positions``,
    ``adapter_layer_norm``, ``adapter_activation``, ``adapter_dropout``, ``train_layer_norms``;
    optional: ``encoder_lr`` and ``freeze_encoder_steps`` (full), ``mask_time_prob`` /
    ``mask_time_length`` (HF SpecAugment-style time masking of the encoder input during
    training), ``lr_schedule`` (:class:`lasersb.schedules.WarmupSchedule`),
    ``select_metric`` (``WER``, default, or ``CER``: the dev metric that picks the checkpoint),
    ``train_logger``, ``tensorboard_logger``, ``epoch_counter``, ``upstream_source``.
    """

    @property
    def ddp_find_unused_parameters(self):
        """Full fine-tuning trains ``masked_spec_embed``, used only in steps that mask frames."""
        return self.finetune == "full"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hp = self.hparams
        self.finetune = getattr(hp, "finetune", "adapters")
        self.select_metric = getattr(hp, "select_metric", "WER")
        if self.select_metric not in ("WER", "CER"):
            raise ValueError(f"select_metric must be WER or CER, got {self.select_metric!r}.")
        self.parameter_accounting, self.parameter_table = configure_encoder(
            self.modules.upstream,
            self.modules.head,
            finetune=self.finetune,
            adapter_layers=getattr(hp, "adapter_layers", "all"),
            adapter_bottleneck=getattr(hp, "adapter_bottleneck", 256),
            adapter_positions=getattr(hp, "adapter_positions", adapter_lib.POSITIONS),
            adapter_layer_norm=getattr(hp, "adapter_layer_norm", False),
            adapter_activation=getattr(hp, "adapter_activation", "gelu"),
            adapter_dropout=getattr(hp, "adapter_dropout", 0.0),
            train_layer_norms=getattr(hp, "train_layer_norms", True),
        )
        fraction = 100.0 * self.parameter_accounting["trainable_fraction"]
        message = (
            f"Fine-tuning mode {self.finetune!r}: {fraction:.2f} % of the parameters are trained\n"
            f"{self.parameter_table}"
        )
        logger.debug(message)  # to the experiment's log file; printed once on the console
        if sb.utils.distributed.if_main_process():
            print(message, flush=True)
            folder = Path(hp.output_folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "parameters.md").write_text(self.parameter_table + "\n", encoding="utf-8")
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "encoder_trainable", TrainableParameters(self.modules.upstream)
            )
            self.checkpointer.add_recoverable("head", self.modules.head)

    # ------------------------------------------------------------------ forward
    def _set_encoder_mode(self, stage):
        """Dropout/masking of the encoder: full fine-tuning trains with dropout, masking opt."""
        model = self.unwrapped.upstream.model
        training = stage == sb.Stage.TRAIN
        if self.finetune == "full":
            model.train(training)
            model.feature_extractor.eval()
        mask_prob = float(getattr(self.hparams, "mask_time_prob", 0.0) or 0.0)
        if mask_prob > 0 and hasattr(model, "masked_spec_embed"):
            model.config.apply_spec_augment = training
            model.config.mask_time_prob = mask_prob
            model.config.mask_time_length = int(getattr(self.hparams, "mask_time_length", 10))
            model.training = training  # the top-level flag only: masking, no extra dropout

    def compute_forward(self, batch, stage):
        """Waveforms -> encoder (last layer) -> linear head -> log-probabilities, frame counts."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        self._set_encoder_mode(stage)
        out = self.modules.upstream(wavs, wav_lens)
        logits = self.modules.head(out.last_hidden_state, out.frame_lens)
        return F.log_softmax(logits.float(), dim=-1), out.frame_lens.to(logits.device).long()

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (mean of per-utterance losses divided by target lengths)."""
        log_probs, frame_lens = predictions
        tokenizer = self.hparams.tokenizer
        loss = batch_ctc_loss(log_probs, frame_lens, batch.tokens, tokenizer.blank_index)
        if stage != sb.Stage.TRAIN:
            ids = ctc_greedy_decode(log_probs, frame_lens, tokenizer.blank_index)
            texts = [tokenizer.decode(seq) for seq in ids]
            refs = list(batch.wrd)
            self.wer_tracker.append(
                batch.id, [tokenizer.units(r) for r in refs], [t.split() for t in texts]
            )
            self.cer_tracker.append(
                batch.id, [character_units(r) for r in refs], [character_units(t) for t in texts]
            )
        return loss

    # ------------------------------------------------------------------ optimisation
    def init_optimizers(self):
        """One optimiser: encoder parameters at ``encoder_lr`` (full), the rest at ``lr``."""
        upstream_ids = {id(p) for p in self.modules.upstream.parameters()}
        adapter_ids = {
            id(p)
            for a in adapter_lib.get_adapters(self.unwrapped.upstream).values()
            for p in a.parameters()
        }
        norm_ids = {
            id(p)
            for m in adapter_lib.encoder_layer_norms(self.unwrapped.upstream)
            for p in m.parameters()
        }
        encoder, small = [], []
        for param in self.modules.parameters():
            if not param.requires_grad:
                continue
            is_encoder = id(param) in upstream_ids and id(param) not in adapter_ids
            if self.finetune == "full" and is_encoder:
                encoder.append(param)
            elif self.finetune != "full" and is_encoder and id(param) not in norm_ids:
                encoder.append(param)
            else:
                small.append(param)
        groups = [{"params": small, "name": "adapters_head"}]
        if encoder:
            lr = float(getattr(self.hparams, "encoder_lr", self.hparams.lr))
            groups.append({"params": encoder, "lr": lr, "name": "encoder"})
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"optimizer": self.optimizer}
        schedule = getattr(self.hparams, "lr_schedule", None)
        if schedule is not None:
            schedule.attach(self.optimizer)
        self._apply_encoder_freeze()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)
            if schedule is not None:
                self.checkpointer.add_recoverable("lr_schedule", schedule)

    def _apply_encoder_freeze(self):
        """Zero the encoder group's lr during the first ``freeze_encoder_steps`` updates."""
        steps = int(getattr(self.hparams, "freeze_encoder_steps", 0) or 0)
        for group in self.optimizer.param_groups:
            if group.get("name") == "encoder" and self.optimizer_step < steps:
                group["lr"] = 0.0

    def on_fit_start(self):
        """Recover the latest checkpoint and re-apply the schedule's learning rate."""
        super().on_fit_start()
        schedule = getattr(self.hparams, "lr_schedule", None)
        if schedule is not None and getattr(self, "optimizer", None) is not None:
            schedule._apply(self.optimizer)
            self._apply_encoder_freeze()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Advance the schedule; log the loss and learning rate per step to TensorBoard."""
        if not should_step:
            return
        schedule = getattr(self.hparams, "lr_schedule", None)
        if schedule is not None:
            schedule.step(self.optimizer)
        self._apply_encoder_freeze()
        tb = getattr(self.hparams, "tensorboard_logger", None)
        if tb is not None:  # log_stats runs on the main process only (and syncs all)
            tb.log_stats(
                stats_meta={"step": self.optimizer_step},
                train_stats={
                    "loss": float(loss.detach()),
                    "lr": self.optimizer.param_groups[0]["lr"],
                },
            )

    # ------------------------------------------------------------------ stages
    def on_stage_start(self, stage, epoch=None):
        """Fresh WER/CER trackers for dev/test."""
        if stage != sb.Stage.TRAIN:
            self.wer_tracker = ErrorRateTracker("WER")
            self.cer_tracker = ErrorRateTracker("CER")

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log; after validation keep the checkpoint with the lowest dev ``select_metric``."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        wer = self.wer_tracker.summarize()
        cer = self.cer_tracker.summarize()
        stats = {"loss": stage_loss, "WER": wer["error_rate"], "CER": cer["error_rate"]}
        train_logger = getattr(self.hparams, "train_logger", None)
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "optimizer_step": self.optimizer_step}
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta=meta,
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            tb = getattr(self.hparams, "tensorboard_logger", None)
            if tb is not None:  # log_stats runs on the main process only (and syncs all)
                tb.log_stats(
                    stats_meta={"step": self.optimizer_step},
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"WER": stats["WER"], "CER": stats["CER"], "epoch": epoch},
                    min_keys=[self.select_metric],
                    num_to_keep=int(getattr(self.hparams, "num_checkpoints_to_keep", 1)),
                )
        else:
            self.test_summary = {"WER": wer, "CER": cer, "loss": float(stage_loss)}
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"split": getattr(self, "eval_split", "test")}, test_stats=stats
                )

    # ------------------------------------------------------------------ evaluation
    def evaluate_splits(
        self,
        datasets: dict,
        loader_kwargs=None,
        results_folder=None,
        write_results=True,
        before=None,
        extra=None,
    ) -> dict:
        """Evaluate the best dev checkpoint on each split; write results and adapters.pt.

        Arguments
        ---------
        datasets : dict
            ``{split name: dataset}``.
        loader_kwargs : dict, optional
            Data-loader options for evaluation.
        results_folder : str or Path, optional
            Where ``results.json``, ``eval/`` and ``adapters.pt`` go (default:
            ``output_folder``).
        write_results : bool
            ``False``: only return the scores (used before training).
        before : dict, optional
            Scores of the untrained model (a previous call's return), stored under
            ``"before_training"``.
        extra : dict, optional
            More entries for ``results.json`` (e.g. ``trained_steps``).

        Returns
        -------
        dict
            The content of ``results.json``: per split ``WER``/``CER`` summaries, the
            ``parameters`` accounting, the adapter configuration and checkpoint size.
        """
        folder = Path(results_folder or self.hparams.output_folder)
        results = {
            "task": "asr",
            "finetune": self.finetune,
            "upstream": str(getattr(self.hparams, "upstream_source", "")),
            "tokenizer": repr(self.hparams.tokenizer),
            "adapters": adapter_lib.adapter_config(self.unwrapped.upstream),
            "parameters": self.parameter_accounting,
            "trainable_percent": 100.0 * self.parameter_accounting["trainable_fraction"],
            "parameter_table": self.parameter_table,
            "select_metric": self.select_metric,
            **dict(extra or {}),
        }
        for split, dataset in datasets.items():
            self.eval_split = split
            self.evaluate(
                dataset, min_key=self.select_metric, test_loader_kwargs=dict(loader_kwargs or {})
            )
            if write_results:
                self.wer_tracker.write(folder / "eval", split)
                self.cer_tracker.write(folder / "eval", split)
            results[split] = {
                "WER": self.test_summary["WER"]["error_rate"],
                "CER": self.test_summary["CER"]["error_rate"],
                "loss": self.test_summary["loss"],
                "wer_details": self.test_summary["WER"],
            }
            logger.info(
                "%s: WER %.2f %%, CER %.2f %%",
                split,
                results[split]["WER"],
                results[split]["CER"],
            )
        results["selected_checkpoint_step"] = int(self.optimizer_step)
        if before is not None:
            results["before_training"] = {
                split: {k: before[split][k] for k in ("WER", "CER", "loss")}
                for split in datasets
                if split in before
            }
        if write_results and sb.utils.distributed.if_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            if self.finetune == "adapters":
                path = folder / ADAPTERS_FILE
                adapter_lib.save_adapters(
                    path,
                    self.unwrapped.upstream,
                    self.unwrapped.head,
                    extra={"upstream": results["upstream"], "tokenizer": results["tokenizer"]},
                    layer_norms=bool(getattr(self.hparams, "train_layer_norms", True)),
                )
                results["adapter_checkpoint"] = str(path)
                results["adapter_checkpoint_bytes"] = path.stat().st_size
            (folder / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        return results


# ---------------------------------------------------------------------- data preparation
def prepare_adapter_asr_data(hparams: dict) -> dict:
    """Prepare the manifests of an adapter-transfer ASR run (idempotent).

    ``train_corpus`` picks the training data: ``librilight`` (``librilight_folder``,
    ``librilight_subset``; the paper's English setting), ``librispeech`` (LibriSpeech splits
    named in ``train_splits``, e.g. ``train-clean-100``) or ``commonvoice``
    (``commonvoice_folder``, ``commonvoice_language``, ``commonvoice_hours``; the paper's
    second language). Dev/test splits named like ``cv-<lang>-<split>`` come from Common
    Voice, the others from LibriSpeech (``data_folder``); LibriSpeech evaluation splits
    missing on disk are skipped. Returns ``{split name: manifest path}``.
    """
    from data_prep.librispeech_prepare import prepare_librispeech
    from lasersb.brains.superb import available_splits

    corpus = hparams.get("train_corpus", "librilight")
    folder = hparams["manifest_folder"]
    manifests = {}
    wanted = [*hparams["train_splits"], hparams["dev_split"], *hparams["test_splits"]]
    if corpus == "librilight":
        from data_prep.librilight_prepare import prepare_librilight

        if not hparams.get("librilight_folder"):
            raise ValueError(
                "train_corpus: librilight needs --librilight_folder=<librispeech_finetuning>; "
                "or use --train_corpus=librispeech --train_splits=[train-clean-100]."
            )
        manifests.update(
            prepare_librilight(
                hparams["librilight_folder"],
                folder,
                subset=hparams["librilight_subset"],
                num_workers=hparams["prep_num_workers"],
            )
        )
    elif corpus == "commonvoice":
        from data_prep.commonvoice_prepare import prepare_commonvoice

        if not hparams.get("commonvoice_folder"):
            raise ValueError("train_corpus: commonvoice needs --commonvoice_folder=<cv/lang>.")
        manifests.update(
            prepare_commonvoice(
                hparams["commonvoice_folder"],
                folder,
                language=hparams["commonvoice_language"],
                max_train_hours=hparams.get("commonvoice_hours"),
                seed=hparams.get("seed", 0),
                num_workers=hparams["prep_num_workers"],
            )
        )
    elif corpus != "librispeech":
        raise ValueError(
            f"train_corpus must be librilight, librispeech or commonvoice, got {corpus!r}."
        )
    librispeech = [s for s in dict.fromkeys(wanted) if s not in manifests]
    required = [s for s in librispeech if s in (*hparams["train_splits"], hparams["dev_split"])]
    optional = [s for s in librispeech if s not in required]
    splits = required + available_splits(hparams["data_folder"], optional)
    if splits:
        manifests.update(
            prepare_librispeech(
                hparams["data_folder"],
                folder,
                splits=tuple(splits),
                lexicon_file=hparams.get("lexicon_file"),
                skip_bad_files=hparams.get("skip_bad_files", False),
                num_workers=hparams["prep_num_workers"],
            )
        )
    return manifests


def fit_tokenizer(hparams: dict, manifests: dict):
    """Train (or load) a SentencePiece tokenizer on the training transcripts; no-op for chars."""
    tokenizer = hparams["tokenizer"]
    if not hasattr(tokenizer, "fit"):
        return tokenizer
    from lasersb.data.manifests import merge_manifests

    train = [manifests[s] for s in hparams["train_splits"]]
    csv_path = train[0]
    if len(train) > 1:
        csv_path = merge_manifests(train, Path(hparams["manifest_folder"]) / "train.csv")
    return tokenizer.fit(csv_path)
