"""One Brain for SUPERB-style CTC downstream tasks on a frozen upstream (ASR and PR).

The upstream (:class:`lasersb.models.upstream.SSLUpstream`, fully frozen) runs in eval mode
without gradients; a learnable softmax-weighted sum over all its hidden states
(:class:`lasersb.models.featuriser.WeightedLayerSum`) feeds a CTC head
(:class:`lasersb.models.heads.BiLSTMCTCHead` for ASR, :class:`~lasersb.models.heads.LinearCTCHead`
for PR), with SpecAugment on the features during training when configured. Only the layer
weights and the head are optimised. Hidden states can be read from / written to an on-disk
:class:`lasersb.data.feature_cache.FeatureCache`.

Validation decodes greedily and keeps the checkpoint with the lowest dev error rate;
:meth:`SuperbCTCBrain.evaluate_splits` re-loads it, decodes each evaluation split (greedy, or
beam search when a ``beam_decoder`` is configured), writes per-utterance hypotheses,
alignments, edit counts (the paired bootstrap's input) and a JSON summary per split, and the
run's ``results.json`` read by ``python -m lasersb.report``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F

from lasersb.alignment.ctc import batch_ctc_loss
from lasersb.brains.base import DistributedBrain
from lasersb.data.feature_cache import pad_hidden_states
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics.bootstrap import write_utterance_errors
from lasersb.metrics.error_rates import ErrorRateTracker
from lasersb.models.adapters import adapter_summary

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


class SuperbCTCBrain(DistributedBrain):
    """Frozen upstream + weighted layer sum + CTC head, trained with CTC.

    Expected ``modules``: ``upstream`` (frozen ``SSLUpstream``), ``featuriser``
    (``WeightedLayerSum`` over ``upstream.num_layers + 1`` hidden states), ``head``.
    Expected ``hparams`` (all read as ``self.hparams.key``: a missing one fails with its name):
    ``tokenizer`` (``CharTokenizer``/``PhoneTokenizer``), ``task`` (``"asr"``/``"pr"``),
    ``metric`` (``"WER"``/``"PER"``), ``target_key`` (``"wrd"``/``"phn"``), ``output_folder``,
    ``epoch_counter``, ``valid_interval_epochs``, ``num_checkpoints_to_keep``,
    ``checkpoint_selection`` (``"dev"``/``"last"``), ``upstream_source``, ``upstream_name``
    (``None``: derived from the source); and, each possibly ``None``: ``specaug``
    (``FeatureSpecAugment``), ``feature_cache`` (``FeatureCache``), ``beam_decoder``
    (``CTCBeamDecoder``, used at test time for ASR), ``train_logger``, ``tensorboard_logger``.
    The recipe scripts set ``feature_cache`` and ``beam_decoder`` from ``feature_cache_folder``
    and ``decoder``.
    """

    # ------------------------------------------------------------------ front
    def upstream_hidden_states(self, batch):
        """``(L+1, B, F, H)`` hidden states and ``(B,)`` frame counts of a batch.

        Served from the feature cache when one is configured (the utterances it lacks are
        computed by one upstream pass over them alone, and stored).
        """
        wavs, wav_lens = batch.sig
        cache = self.hparams.feature_cache
        if cache is None:
            return self._run_upstream(wavs, wav_lens)
        paths = getattr(batch, "wav", None)
        if paths is None:
            raise ValueError(
                "The feature cache needs each utterance's audio path: keep 'wav' in the "
                "dataset's output keys (add_ctc_targets does by default)."
            )
        stacks = [cache.load(uid, path) for uid, path in zip(batch.id, paths)]
        missing = [i for i, stack in enumerate(stacks) if stack is None]
        if missing:
            # Only the utterances not cached yet go through the upstream: one pass each.
            rows = torch.tensor(missing, device=wavs.device)
            sub_wavs, sub_lens = wavs.index_select(0, rows), wav_lens.index_select(0, rows)
            longest = float(sub_lens.max())
            if longest < 1.0:  # trim the padding of the longer, cached utterances
                keep = int(round(longest * wavs.shape[1]))
                sub_wavs, sub_lens = sub_wavs[:, :keep], sub_lens / longest
            hidden, frame_lens = self._run_upstream(sub_wavs, sub_lens)
            for j, i in enumerate(missing):
                stacks[i] = hidden[:, j, : int(frame_lens[j])].cpu()
                cache.save(batch.id[i], paths[i], stacks[i])
        return pad_hidden_states(stacks, device=self.device)

    def _run_upstream(self, wavs, wav_lens):
        """Frozen upstream forward: no gradients, eval mode."""
        upstream = self.modules.upstream
        upstream.eval()
        with torch.no_grad():
            out = upstream(wavs, wav_lens)
        hidden = torch.stack([h.detach().float() for h in out.hidden_states], dim=0)
        return hidden, out.frame_lens.to(hidden.device).long()

    def compute_forward(self, batch, stage):
        """Hidden states -> weighted sum -> (SpecAugment) -> head -> log-probabilities."""
        batch = batch.to(self.device)
        hidden, frame_lens = self.upstream_hidden_states(batch)
        features = self.modules.featuriser(hidden, frame_lens=frame_lens)
        specaug = self.hparams.specaug
        if stage == sb.Stage.TRAIN and specaug is not None:
            features = specaug(features, frame_lens)
        logits = self.modules.head(features, frame_lens)
        return F.log_softmax(logits.float(), dim=-1), frame_lens

    # ------------------------------------------------------------------ loss / metrics
    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (mean over the batch of per-utterance losses / target lengths)."""
        log_probs, frame_lens = predictions
        loss = batch_ctc_loss(
            log_probs, frame_lens, batch.tokens, self.hparams.tokenizer.blank_index
        )
        if stage != sb.Stage.TRAIN:
            self._score(batch, log_probs, frame_lens, stage)
        return loss

    def _score(self, batch, log_probs, frame_lens, stage):
        tokenizer = self.hparams.tokenizer
        beam = self.hparams.beam_decoder
        if stage == sb.Stage.TEST and beam is not None and self.hparams.task == "asr":
            hyps = [text.split() for text in beam.decode_texts(log_probs, frame_lens)]
        else:
            ids = ctc_greedy_decode(log_probs, frame_lens, tokenizer.blank_index)
            hyps = [tokenizer.decode_units(seq) for seq in ids]
        refs = [tokenizer.units(text) for text in getattr(batch, self.hparams.target_key)]
        self.error_tracker.append(batch.id, refs, hyps)

    # ------------------------------------------------------------------ optimisation
    def init_optimizers(self):
        """One optimiser over the layer weights and the head; the upstream is never updated."""
        params = list(self.modules.featuriser.parameters()) + list(self.modules.head.parameters())
        for p in self.modules.upstream.parameters():
            p.requires_grad_(False)
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_start(self):
        """Recover the latest checkpoint and log what is trained."""
        super().on_fit_start()
        trained = sum(
            p.numel() for m in (self.modules.featuriser, self.modules.head) for p in m.parameters()
        )
        frozen = sum(p.numel() for p in self.modules.upstream.parameters())
        adapters = adapter_summary(self.modules.upstream)
        logger.info(
            "SUPERB %s: %.2fM trainable downstream parameters, %.2fM frozen upstream parameters "
            "(%d lasersb adapters in the upstream)",
            self.hparams.task.upper(),
            trained / 1e6,
            frozen / 1e6,
            adapters["count"] if adapters else 0,
        )

    def _fit_valid(self, valid_set, epoch, enable):
        """Validate every ``valid_interval_epochs`` epochs, and always at the end of training."""
        interval = int(self.hparams.valid_interval_epochs)
        last = self._optimizer_step_limit_exceeded or epoch >= self.hparams.epoch_counter.limit
        if epoch % interval == 0 or last:
            super()._fit_valid(valid_set, epoch, enable)
        elif self.checkpointer is not None:
            # No dev score this epoch: keep a resumable (non-selectable) checkpoint.
            self.checkpointer.save_and_keep_only(
                meta={"epoch": epoch},
                end_of_epoch=True,
                num_to_keep=1,
                min_keys=["error_rate"],
            )

    # ------------------------------------------------------------------ stages
    def on_stage_start(self, stage, epoch=None):
        """Fresh error-rate tracker for dev/test."""
        if stage != sb.Stage.TRAIN:
            self.error_tracker = ErrorRateTracker(self.hparams.metric)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, select checkpoints on the dev error rate, keep the test summary."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        summary = self.error_tracker.summarize()
        stats = {"loss": stage_loss, "error_rate": summary["error_rate"]}
        if stage == sb.Stage.VALID:
            weights = self.unwrapped.featuriser.layer_weights.tolist()
            stats_meta = {"epoch": epoch, "optimizer_step": self.optimizer_step}
            if self.hparams.train_logger is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta=stats_meta, train_stats=self.train_stats, valid_stats=stats
                )
            if self.hparams.tensorboard_logger is not None:
                self.hparams.tensorboard_logger.log_stats(
                    stats_meta={"step": self.optimizer_step},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
            logger.info("Layer weights: %s", " ".join(f"{w:.3f}" for w in weights))
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"error_rate": summary["error_rate"], "epoch": epoch},
                    min_keys=["error_rate"],
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                )
        else:
            self.test_summary = summary
            if self.hparams.train_logger is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta={"split": getattr(self, "eval_split", "test")},
                    test_stats=stats,
                )

    # ------------------------------------------------------------------ evaluation
    def evaluate_splits(self, datasets: dict, loader_kwargs=None, results_folder=None) -> dict:
        """Evaluate the selected checkpoint on each split; write hypotheses and results.json.

        The checkpoint is the one with the lowest dev error rate, or the latest one when the
        hparams say ``checkpoint_selection: last`` (overfitting checks).

        Arguments
        ---------
        datasets : dict
            ``{split name: dataset}`` (for example dev-clean, test-clean, test-other).
        loader_kwargs : dict, optional
            Data-loader options for evaluation.
        results_folder : str or Path, optional
            Where ``results.json`` and the per-split files go (default: ``output_folder``).

        Returns
        -------
        dict
            The content of ``results.json``.
        """
        from lasersb.report import upstream_display_name

        folder = Path(results_folder or self.hparams.output_folder)
        eval_folder = folder / "eval"
        source = str(self.hparams.upstream_source)
        results = {
            "task": self.hparams.task,
            "metric": self.hparams.metric,
            "upstream": source,
            "upstream_name": self.hparams.upstream_name or upstream_display_name(source),
            # Which adapter set (if any) the frozen upstream carried: count, config, checksum.
            "upstream_adapters": adapter_summary(self.modules.upstream),
            "decoder": (
                "beam"
                if self.hparams.beam_decoder is not None and self.hparams.task == "asr"
                else "greedy"
            ),
        }
        selection = self.hparams.checkpoint_selection
        if selection not in ("dev", "last"):
            raise ValueError(f"checkpoint_selection must be 'dev' or 'last', got {selection!r}")
        min_key = "error_rate" if selection == "dev" else None
        results["checkpoint_selection"] = selection
        for split, dataset in datasets.items():
            self.eval_split = split
            self.evaluate(dataset, min_key=min_key, test_loader_kwargs=dict(loader_kwargs or {}))
            paths = self.error_tracker.write(eval_folder, split)
            results[split] = dict(self.test_summary)
            # Per-utterance edits and reference lengths: the report's paired bootstrap reads them.
            utterances = eval_folder / f"{self.hparams.metric.lower()}_{split}_utterances.csv"
            if sb.utils.distributed.if_main_process():
                write_utterance_errors(self.error_tracker.details(), utterances)
            results[split]["utterance_errors"] = str(utterances.relative_to(folder))
            logger.info(
                "%s %s on %s: %.2f %% (ins %d, del %d, sub %d, N %d); hypotheses in %s",
                self.hparams.task.upper(),
                self.hparams.metric,
                split,
                self.test_summary["error_rate"],
                self.test_summary["insertions"],
                self.test_summary["deletions"],
                self.test_summary["substitutions"],
                self.test_summary["num_ref_tokens"],
                paths["hypotheses"],
            )
        results["layer_weights"] = [
            round(w, 6) for w in self.unwrapped.featuriser.layer_weights.tolist()
        ]
        results["optimizer_steps"] = int(self.optimizer_step)
        if sb.utils.distributed.if_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        return results
