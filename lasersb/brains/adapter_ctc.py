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
import torch.nn.functional as F

from lasersb.alignment.ctc import batch_ctc_loss
from lasersb.brains.scheduled import WarmupScheduledBrain
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics.error_rates import ErrorRateTracker, character_units
from lasersb.models import adapters as adapter_lib
from lasersb.models.finetuning import TrainableParameters, configure_encoder

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
ADAPTERS_FILE = "adapters.pt"


class AdapterCTCBrain(WarmupScheduledBrain):
    """Encoder (adapted / frozen / fully fine-tuned) + linear CTC head, trained with CTC.

    Expected ``modules``: ``upstream`` (:class:`lasersb.models.upstream.SSLUpstream` built with
    ``trainable_layers=0``; this Brain sets what is trained) and ``head``
    (:class:`lasersb.models.heads.LinearCTCHead`). Expected ``hparams``: ``tokenizer``
    (``CharTokenizer`` or ``SentencePieceTokenizer``), ``finetune``, ``output_folder``,
    ``upstream_source``, ``num_checkpoints_to_keep``, ``select_metric`` (``WER`` or ``CER``: the
    dev metric that picks the checkpoint), the adapter set (``adapter_layers``,
    ``adapter_bottleneck``, ``adapter_positions``, ``adapter_layer_norm``,
    ``adapter_activation``, ``adapter_dropout``, ``train_layer_norms``: see
    :func:`lasersb.models.finetuning.configure_encoder`), ``encoder_lr`` and
    ``freeze_encoder_steps`` (full fine-tuning), ``mask_time_prob`` / ``mask_time_length`` (HF
    SpecAugment-style time masking of the encoder input during training; ``0`` or ``None``:
    none); and, each possibly ``None``: ``lr_schedule``
    (:class:`lasersb.schedules.WarmupSchedule`), ``train_logger``, ``tensorboard_logger``.
    All are read as ``self.hparams.key``: a missing one fails with its name.
    """

    @property
    def ddp_find_unused_parameters(self):
        """Full fine-tuning trains ``masked_spec_embed``, used only in steps that mask frames."""
        return self.finetune == "full"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.finetune = self.hparams.finetune
        self.select_metric = self.hparams.select_metric
        if self.select_metric not in ("WER", "CER"):
            raise ValueError(f"select_metric must be WER or CER, got {self.select_metric!r}.")
        self.parameter_accounting, self.parameter_table = configure_encoder(
            self.modules.upstream,
            self.modules.head,
            finetune=self.finetune,
            adapter_layers=self.hparams.adapter_layers,
            adapter_bottleneck=self.hparams.adapter_bottleneck,
            adapter_positions=self.hparams.adapter_positions,
            adapter_layer_norm=self.hparams.adapter_layer_norm,
            adapter_activation=self.hparams.adapter_activation,
            adapter_dropout=self.hparams.adapter_dropout,
            train_layer_norms=self.hparams.train_layer_norms,
        )
        fraction = 100.0 * self.parameter_accounting["trainable_fraction"]
        message = (
            f"Fine-tuning mode {self.finetune!r}: {fraction:.2f} % of the parameters are trained\n"
            f"{self.parameter_table}"
        )
        logger.debug(message)  # to the experiment's log file; printed once on the console
        if sb.utils.distributed.if_main_process():
            print(message, flush=True)
            folder = Path(self.hparams.output_folder)
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
        mask_prob = float(self.hparams.mask_time_prob or 0.0)
        if mask_prob > 0 and hasattr(model, "masked_spec_embed"):
            model.config.apply_spec_augment = training
            model.config.mask_time_prob = mask_prob
            model.config.mask_time_length = int(self.hparams.mask_time_length)
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
    def optimizer_params(self):
        """Two groups: encoder parameters at ``encoder_lr`` (full), the rest at ``lr``."""
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
            lr = float(self.hparams.encoder_lr)
            groups.append({"params": encoder, "lr": lr, "name": "encoder"})
        return groups

    def on_lr_update(self):
        """Zero the encoder group's lr during the first ``freeze_encoder_steps`` updates."""
        steps = int(self.hparams.freeze_encoder_steps or 0)
        for group in self.optimizer.param_groups:
            if group.get("name") == "encoder" and self.optimizer_step < steps:
                group["lr"] = 0.0

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
        train_logger = self.hparams.train_logger
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "optimizer_step": self.optimizer_step}
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta=meta,
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            tb = self.hparams.tensorboard_logger
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
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
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
            "upstream": str(self.hparams.upstream_source),
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
                    layer_norms=bool(self.hparams.train_layer_norms),
                )
                results["adapter_checkpoint"] = str(path)
                results["adapter_checkpoint_bytes"] = path.stat().st_size
            (folder / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        return results
