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
alignments and a JSON summary per split, and the run's ``results.json`` read by
``python -m lasersb.report``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F

from lasersb.brains.base import DistributedBrain
from lasersb.data.feature_cache import pad_hidden_states
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics.error_rates import ErrorRateTracker
from lasersb.models.adapters import adapter_summary

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def add_ctc_targets(datasets, tokenizer, target_key: str, output_keys=None):
    """Add a ``tokens`` item (CTC targets) computed from ``target_key`` to each dataset.

    Arguments
    ---------
    datasets : list of speechbrain.dataio.dataset.DynamicItemDataset
        Datasets built by :func:`lasersb.data.pipelines.audio_dataset`.
    tokenizer : CharTokenizer or PhoneTokenizer
        Its ``encode`` maps the ``target_key`` field to token ids.
    target_key : str
        ``"wrd"`` (ASR) or ``"phn"`` (PR).
    output_keys : list of str, optional
        Output keys; default ``["id", "sig", "wav", "tokens", target_key]``.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> from lasersb.data.tokenizers import CharTokenizer
    >>> ds = DynamicItemDataset({"u1": {"wrd": "HI THERE"}})
    >>> add_ctc_targets([ds], CharTokenizer(), "wrd", output_keys=["id", "tokens"])
    >>> ds[0]["tokens"].tolist()
    [9, 10, 1, 21, 9, 6, 19, 6]
    """

    @sb.utils.data_pipeline.takes(target_key)
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(text):
        ids = tokenizer.encode(text)
        if not ids:
            raise ValueError(
                f"Empty {target_key!r} transcription: remove the utterance from the manifest"
            )
        return torch.LongTensor(ids)

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    if output_keys is None:
        output_keys = ["id", "sig", "wav", "tokens", target_key]
    sb.dataio.dataset.set_output_keys(datasets, output_keys)


def batch_ctc_loss(log_probs, frame_lens, tokens, blank_index: int) -> torch.Tensor:
    """CTC loss of a batch: mean over utterances of each loss divided by its target length.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``(B, T, V)`` log-probabilities.
    frame_lens : torch.Tensor
        ``(B,)`` valid frames of each utterance.
    tokens : tuple of torch.Tensor
        The batch's padded ``tokens`` item (from :func:`add_ctc_targets`): ``(targets (B, L),
        relative lengths (B,))``.
    blank_index : int
        The tokenizer's blank.

    Example
    -------
    >>> log_probs = torch.randn(2, 6, 5).log_softmax(-1)
    >>> tokens = (torch.tensor([[1, 2, 3], [4, 1, 0]]), torch.tensor([1.0, 2 / 3]))
    >>> loss = batch_ctc_loss(log_probs, torch.tensor([6, 5]), tokens, blank_index=0)
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """
    targets, token_rel_lens = tokens
    token_lens = (token_rel_lens * targets.shape[1]).round().long()
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        frame_lens.cpu(),
        token_lens.cpu(),
        blank=blank_index,
        reduction="mean",
        zero_infinity=True,
    )


def available_splits(data_folder, splits) -> list[str]:
    """The splits of ``splits`` present as folders of ``data_folder`` (others are logged).

    ``data_folder`` may be the ``LibriSpeech`` folder or its parent (the mini corpus root).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "LibriSpeech" / "test-clean").mkdir(parents=True)
    >>> available_splits(root, ["test-clean", "test-other"])
    ['test-clean']
    """
    root = Path(data_folder)
    present = []
    for split in splits:
        if (root / split).is_dir() or (root / "LibriSpeech" / split).is_dir():
            present.append(split)
        else:
            logger.warning("Split %s not found in %s: not evaluated", split, data_folder)
    return present


def _previous_splits(manifest_folder) -> list[str]:
    """Splits of an earlier preparation in ``manifest_folder`` (empty when there is none)."""
    from data_prep.librispeech_prepare import OPTIONS_FILE

    path = Path(manifest_folder) / OPTIONS_FILE
    try:
        return list(json.loads(path.read_text())["options"]["splits"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def prepare_superb_data(hparams: dict) -> dict:
    """Prepare the LibriSpeech manifests a SUPERB run needs (idempotent).

    Training and dev splits must exist; evaluation splits missing from ``data_folder`` are
    skipped. When ``manifest_folder`` is shared with another run that prepared a superset of
    these splits (LASER's run.sh), its split list is reused, so the preparation is not redone.
    Phone transcriptions are written for PR always, and for ASR when a ``lexicon_file`` is
    given (so that ASR and PR runs given the same lexicon can share one manifest folder, while
    ASR without a lexicon never fails on a word without pronunciation).
    Returns ``{split: manifest path}``.
    """
    from data_prep.librispeech_prepare import prepare_librispeech

    wanted = list(hparams["train_splits"]) + [hparams["dev_split"]]
    evaluation = [s for s in hparams["test_splits"] if s not in wanted]
    splits = wanted + available_splits(hparams["data_folder"], evaluation)
    previous = _previous_splits(hparams["manifest_folder"])
    if previous and set(splits) <= set(previous):
        splits = previous
    return prepare_librispeech(
        hparams["data_folder"],
        hparams["manifest_folder"],
        splits=tuple(splits),
        lexicon_file=hparams.get("lexicon_file"),
        skip_bad_files=hparams.get("skip_bad_files", False),
        with_phonemes=hparams["target_key"] == "phn" or bool(hparams.get("lexicon_file")),
        num_workers=hparams["prep_num_workers"],
    )


def superb_datasets(hparams: dict, manifests: dict):
    """Build the train, dev and evaluation datasets and their data-loader options.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters (``train_splits``, ``dev_split``, ``test_splits``,
        ``tokenizer``, ``target_key``, batch and sorting options).
    manifests : dict
        ``{split: csv path}`` from :func:`prepare_superb_data`.

    Returns
    -------
    dict
        ``train`` and ``dev`` datasets, ``eval`` (``{split: dataset}``: dev, the test splits
        that were prepared and, with ``evaluate_train_set``, the training set as ``train``),
        and ``train_loader``, ``eval_loader`` options.
    """
    from lasersb.data.manifests import merge_manifests
    from lasersb.data.pipelines import audio_dataset, dataloader_options

    rate = hparams.get("sample_rate", 16000)
    train_csvs = [manifests[s] for s in hparams["train_splits"]]
    if len(train_csvs) == 1:
        train_csv = train_csvs[0]
    else:
        train_csv = merge_manifests(train_csvs, Path(hparams["manifest_folder"]) / "train.csv")
    sorting = hparams.get("train_sorting", "random")
    train = audio_dataset(
        train_csv,
        sample_rate=rate,
        max_duration=hparams.get("max_duration"),
        sort=None if sorting in ("random", "bucket") else sorting,
    )
    subset = hparams.get("train_max_utterances")
    if subset:
        train = train.filtered_sorted(select_n=int(subset))
    eval_sets = {}
    for split in [hparams["dev_split"], *hparams["test_splits"]]:
        if split in manifests and split not in eval_sets:
            eval_sets[split] = audio_dataset(manifests[split], sample_rate=rate, sort="ascending")
    if hparams.get("evaluate_train_set"):
        eval_sets["train"] = train
    datasets = [train, *[d for d in eval_sets.values() if d is not train]]
    add_ctc_targets(datasets, hparams["tokenizer"], hparams["target_key"])
    bucketing = sorting == "bucket"
    train_loader = dataloader_options(
        train,
        batch_size=hparams["batch_size"],
        dynamic_batching=hparams.get("dynamic_batching", False),
        max_batch_length=hparams.get("max_batch_length"),
        shuffle=sorting in ("random", "bucket"),
        num_workers=hparams.get("num_workers", 0),
        seed=hparams.get("seed", 0),
        bucketing=bucketing,
        halve_above_seconds=hparams["halve_batch_above_seconds"] if bucketing else None,
        epoch_counter=hparams["epoch_counter"] if bucketing else None,
    )
    eval_loader = {"batch_size": hparams.get("eval_batch_size", hparams["batch_size"])}
    if hparams.get("num_workers", 0):
        eval_loader["num_workers"] = hparams["num_workers"]
    return {
        "train": train,
        "dev": eval_sets[hparams["dev_split"]],
        "eval": eval_sets,
        "train_loader": train_loader,
        "eval_loader": eval_loader,
    }


def attach_optional_components(hparams: dict) -> dict:
    """Add the feature cache and the beam decoder to ``hparams`` when they are configured.

    ``feature_cache_folder`` (not null) creates a :class:`FeatureCache` keyed by the
    upstream's checksum; ``decoder: beam`` creates a :class:`CTCBeamDecoder` (ASR).
    """
    folder = hparams.get("feature_cache_folder")
    if folder:
        from lasersb.data.feature_cache import FeatureCache, module_checksum

        upstream = hparams["upstream"]
        checksum = module_checksum(upstream, extra=repr(upstream))
        hparams["feature_cache"] = FeatureCache(
            folder, checksum, dtype=hparams.get("feature_cache_dtype", "float16")
        )
        logger.info("Frozen upstream features cached under %s", hparams["feature_cache"].root)
    decoder = hparams.get("decoder", "greedy")
    if decoder == "beam":
        from lasersb.decoding import CTCBeamDecoder

        tokenizer = hparams["tokenizer"]
        hparams["beam_decoder"] = CTCBeamDecoder(
            tokenizer.labels,
            blank_index=tokenizer.blank_index,
            beam_size=hparams.get("beam_size", 100),
            kenlm_model_path=hparams.get("kenlm_model_path"),
            alpha=hparams.get("lm_alpha", 0.5),
            beta=hparams.get("lm_beta", 1.5),
        )
    elif decoder != "greedy":
        raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")
    return hparams


def _as_run_options(run_opts):
    """Type the integer run options that SpeechBrain's argument parser leaves as strings.

    ``--optimizer_step_limit=200`` on the command line arrives as ``"200"`` and would break
    the step-limit comparison inside ``Brain.fit``.

    Example
    -------
    >>> from speechbrain.utils.run_opts import RunOptions
    >>> _, opts, _ = RunOptions.from_command_line_args(["x.yaml", "--optimizer_step_limit=20"])
    >>> _as_run_options(opts).optimizer_step_limit
    20
    >>> _as_run_options({"device": "cpu", "optimizer_step_limit": "5"})["optimizer_step_limit"]
    5
    """
    keys = ("optimizer_step_limit", "ckpt_interval_steps", "grad_accumulation_factor")
    if isinstance(run_opts, dict):
        return {k: int(v) if k in keys and isinstance(v, str) else v for k, v in run_opts.items()}
    if run_opts is None:
        return None
    changes = {k: int(getattr(run_opts, k)) for k in keys if isinstance(getattr(run_opts, k), str)}
    return dataclasses.replace(run_opts, **changes) if changes else run_opts


class SuperbCTCBrain(DistributedBrain):
    """Frozen upstream + weighted layer sum + CTC head, trained with CTC.

    Expected ``modules``: ``upstream`` (frozen ``SSLUpstream``), ``featuriser``
    (``WeightedLayerSum`` over ``upstream.num_layers + 1`` hidden states), ``head``.
    Expected ``hparams``: ``tokenizer`` (``CharTokenizer``/``PhoneTokenizer``), ``task``
    (``"asr"``/``"pr"``), ``metric`` (``"WER"``/``"PER"``), ``target_key`` (``"wrd"``/``"phn"``),
    ``output_folder``; optional: ``specaug`` (``FeatureSpecAugment``), ``feature_cache``
    (``FeatureCache``), ``beam_decoder`` (``CTCBeamDecoder``, used at test time),
    ``valid_interval_epochs``, ``upstream_source``, ``upstream_name``, ``train_logger``,
    ``tensorboard_logger``, ``epoch_counter``.
    """

    def __init__(
        self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None
    ):
        super().__init__(
            modules=modules,
            opt_class=opt_class,
            hparams=hparams,
            run_opts=_as_run_options(run_opts),
            checkpointer=checkpointer,
        )

    # ------------------------------------------------------------------ front
    def upstream_hidden_states(self, batch):
        """``(L+1, B, F, H)`` hidden states and ``(B,)`` frame counts of a batch.

        Served from the feature cache when one is configured (missing entries are computed
        by one upstream pass over the batch and stored).
        """
        wavs, wav_lens = batch.sig
        cache = getattr(self.hparams, "feature_cache", None)
        if cache is None:
            return self._run_upstream(wavs, wav_lens)
        paths = getattr(batch, "wav", None)
        if paths is None:
            raise ValueError(
                "The feature cache needs each utterance's audio path: keep 'wav' in the "
                "dataset's output keys (add_ctc_targets does by default)."
            )
        stacks = [cache.load(uid, path) for uid, path in zip(batch.id, paths)]
        if any(s is None for s in stacks):
            hidden, frame_lens = self._run_upstream(wavs, wav_lens)
            for i, (uid, path) in enumerate(zip(batch.id, paths)):
                if stacks[i] is None:
                    stacks[i] = hidden[:, i, : int(frame_lens[i])].cpu()
                    cache.save(uid, path, stacks[i])
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
        specaug = getattr(self.hparams, "specaug", None)
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
        beam = getattr(self.hparams, "beam_decoder", None)
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
        interval = int(getattr(self.hparams, "valid_interval_epochs", 1) or 1)
        counter = getattr(self.hparams, "epoch_counter", None)
        last = self._optimizer_step_limit_exceeded or (
            counter is not None and epoch >= counter.limit
        )
        if epoch % interval == 0 or last:
            super()._fit_valid(valid_set, epoch, enable)
        elif self.checkpointer is not None:
            # No dev score this epoch: keep a resumable (non-selectable) checkpoint.
            # importance_keys is passed explicitly: SpeechBrain's default is a shared mutable
            # list that grows with every call (checkpoint listing then becomes quadratic).
            self.checkpointer.save_and_keep_only(
                meta={"epoch": epoch},
                end_of_epoch=True,
                num_to_keep=1,
                min_keys=["error_rate"],
                importance_keys=[],
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
            if hasattr(self.hparams, "train_logger"):
                self.hparams.train_logger.log_stats(
                    stats_meta=stats_meta, train_stats=self.train_stats, valid_stats=stats
                )
            tb = getattr(self.hparams, "tensorboard_logger", None)
            if tb is not None:
                tb.log_stats(
                    stats_meta={"step": self.optimizer_step},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
            logger.info("Layer weights: %s", " ".join(f"{w:.3f}" for w in weights))
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"error_rate": summary["error_rate"], "epoch": epoch},
                    min_keys=["error_rate"],
                    num_to_keep=int(getattr(self.hparams, "num_checkpoints_to_keep", 1)),
                    importance_keys=[],
                )
        else:
            self.test_summary = summary
            if hasattr(self.hparams, "train_logger"):
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
        source = str(getattr(self.hparams, "upstream_source", ""))
        results = {
            "task": self.hparams.task,
            "metric": self.hparams.metric,
            "upstream": source,
            "upstream_name": getattr(self.hparams, "upstream_name", None)
            or upstream_display_name(source),
            # Which adapter set (if any) the frozen upstream carried: count, config, checksum.
            "upstream_adapters": adapter_summary(self.modules.upstream),
            "decoder": (
                "beam"
                if getattr(self.hparams, "beam_decoder", None) is not None
                and self.hparams.task == "asr"
                else "greedy"
            ),
        }
        selection = getattr(self.hparams, "checkpoint_selection", "dev")
        if selection not in ("dev", "last"):
            raise ValueError(f"checkpoint_selection must be 'dev' or 'last', got {selection!r}")
        min_key = "error_rate" if selection == "dev" else None
        results["checkpoint_selection"] = selection
        for split, dataset in datasets.items():
            self.eval_split = split
            self.evaluate(dataset, min_key=min_key, test_loader_kwargs=dict(loader_kwargs or {}))
            paths = self.error_tracker.write(eval_folder, split)
            results[split] = dict(self.test_summary)
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


def run_superb_recipe(argv) -> dict | None:
    """Run one SUPERB CTC recipe (ASR or PR) from its command line: the body of its train.py.

    Parses ``argv`` like ``sb.parse_arguments`` (:func:`lasersb.experiment.setup_experiment`),
    prepares the LibriSpeech manifests on the main process, builds the datasets and the
    optional feature cache / beam decoder, then trains :class:`SuperbCTCBrain` (resuming from
    the last checkpoint; with ``--test_only`` only the evaluation runs) and evaluates the
    selected checkpoint on every evaluation split.

    Returns the content of ``results.json``, or ``None`` when ``evaluate_after_training`` is
    false and ``--test_only`` is not given (train only).

    Example
    -------
    >>> run_superb_recipe(["recipes/SUPERB/pr/hparams/pr_mini.yaml",
    ...                    "--data_folder=/data/LibriSpeech"])  # doctest: +SKIP
    """
    from speechbrain.utils.distributed import run_on_main

    from lasersb.experiment import setup_experiment

    hparams, run_opts = setup_experiment(argv)
    manifests = run_on_main(prepare_superb_data, kwargs={"hparams": hparams})
    data = superb_datasets(hparams, manifests)
    attach_optional_components(hparams)
    brain = SuperbCTCBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    # Resumes from the last checkpoint; with --test_only, only the evaluation runs.
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data["dev"],
        train_loader_kwargs=data["train_loader"],
        valid_loader_kwargs=data["eval_loader"],
    )
    if not hparams["evaluate_after_training"] and not run_opts.get("test_only"):
        return None
    return brain.evaluate_splits(data["eval"], loader_kwargs=data["eval_loader"])
