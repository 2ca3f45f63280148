"""Spin self-supervised fine-tuning (speaker-invariant clustering) of a HuBERT/WavLM upstream.

Spin (Chang, Liu & Glass, Interspeech 2023; release ``vectominist/spin``, ``config/spin.yaml``,
``src/model/spin.py``): each utterance (randomly cropped) and a speaker-perturbed copy
(:class:`lasersb.augment.speaker.SpeakerPerturbation`) go through the upstream in one batch; the
last layer's frames go through a prediction head and are scored against a learnable codebook of
L2-normalised codewords; the loss is swapped prediction with Sinkhorn-Knopp targets
(:class:`lasersb.models.spin.SwappedPredictionLoss`) over all valid frames of the batch. The
codewords are re-normalised after every update. The fine-tuned upstream is exported in Hugging
Face format exactly like LASER's (:func:`lasersb.models.export.export_upstream_hf`), so SUPERB
reads it unchanged (the head and codebook are not part of it, as in the release's s3prl expert,
which serves the encoder's hidden states).

Where the perturbed view is made (``hparams.speaker_perturbation``): ``praat`` (the release's)
crops and perturbs each utterance with Praat in the data-loader workers
(:class:`lasersb.augment.praat.SpeakerViewCollate`, the loaders' ``collate_fn``); ``batched``
crops the padded batch and perturbs it on the device
(:class:`lasersb.augment.speaker.SpeakerPerturbation`, an approximation, much faster).
"""

from __future__ import annotations

import logging
from pathlib import Path

import speechbrain as sb
import torch

from lasersb.augment.lengths import random_crop
from lasersb.brains.scheduled import WarmupScheduledBrain

logger = logging.getLogger(__name__)

STAT_KEYS = ("loss", "code_perplexity", "prob_perplexity", "accuracy")


class SpinBrain(WarmupScheduledBrain):
    """Brain for Spin SSFT.

    Expected ``modules``: ``upstream`` (:class:`lasersb.models.upstream.SSLUpstream`, top layers
    trainable), ``head`` (:class:`lasersb.models.spin.PredictionHead`), ``loss``
    (:class:`lasersb.models.spin.SwappedPredictionLoss`, holding the codebook). Expected
    ``hparams``: ``speaker_perturbation`` (``praat`` or ``batched``), ``praat_perturbation``
    (:class:`lasersb.augment.praat.PraatSpeakerPerturbation`), ``perturbation``
    (:class:`lasersb.augment.speaker.SpeakerPerturbation`), ``random_crop_samples``,
    ``lr_schedule``, ``valid_seed``, ``method_name``,
    ``upstream_source``, ``output_folder``, ``num_checkpoints_to_keep``, ``train_logger``,
    ``tensorboard_logger``, ``epoch_counter``.
    """

    # ------------------------------------------------------------------ data
    @property
    def praat_views(self) -> bool:
        """Whether the loaders make the perturbed views with Praat (``speaker_perturbation``)."""
        mode = self.hparams.speaker_perturbation
        if mode not in ("praat", "batched"):
            raise ValueError(f"speaker_perturbation must be 'praat' or 'batched', got {mode!r}.")
        return mode == "praat"

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """With ``speaker_perturbation: praat``, the loader's ``collate_fn`` crops and perturbs
        each utterance (in the workers); dev views are seeded by ``valid_seed``."""
        if self.praat_views and "collate_fn" not in loader_kwargs:
            from lasersb.augment.praat import SpeakerViewCollate

            loader_kwargs["collate_fn"] = SpeakerViewCollate(
                self.hparams.praat_perturbation,
                self.hparams.random_crop_samples,
                seed=None if stage == sb.Stage.TRAIN else int(self.hparams.valid_seed),
            )
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    # ------------------------------------------------------------------ forward / loss
    def compute_forward(self, batch, stage):
        """Crop, perturb, encode both views in one pass; return the valid frames of each view."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if hasattr(batch, "sig_perturbed"):  # cropped and perturbed by the loader (Praat)
            return self._encode_views(wavs, batch.sig_perturbed.data, wav_lens)
        generator = None
        if stage != sb.Stage.TRAIN:  # reproducible dev views
            generator = torch.Generator(device="cpu")
            generator.manual_seed(int(self.hparams.valid_seed) + self.step)
        wavs, wav_lens = random_crop(wavs, wav_lens, self.hparams.random_crop_samples, generator)
        with torch.autocast(device_type=self.device_type, enabled=False):
            perturbed = self.hparams.perturbation(wavs.float(), wav_lens, generator=generator)
        return self._encode_views(wavs, perturbed, wav_lens)

    def _encode_views(self, wavs, perturbed, wav_lens):
        """Both views through the upstream in one batch; the valid frames of each."""
        stacked = torch.cat([wavs, perturbed.to(wavs.dtype)])
        out = self.modules.upstream(stacked, torch.cat([wav_lens, wav_lens]))
        z = self.modules.head(out.last_hidden_state)
        half = wavs.shape[0]
        valid = ~out.padding_mask[:half]  # both views have the same length
        return z[:half][valid], z[half:][valid]

    def compute_objectives(self, predictions, batch, stage):
        """Swapped-prediction loss over all valid frames; codebook statistics are tracked."""
        z_1, z_2 = predictions
        result = self.modules.loss(z_1, z_2)
        for key in STAT_KEYS:
            self._stats[key] += float(result[key].detach())
        self._stats["batches"] += 1
        self._last = {key: float(result[key].detach()) for key in STAT_KEYS}
        return result["loss"]

    # ------------------------------------------------------------------ optimisation
    no_trainable_message = (
        "No trainable parameters: set trainable_layers (top transformer layers to fine-tune) "
        "to at least 1."
    )

    def on_fit_start(self):
        """Recover, then re-apply the schedule's learning rate and log the trainable set."""
        super().on_fit_start()
        trainable = [n for n, p in self.modules.named_parameters() if p.requires_grad]
        count = sum(p.numel() for p in self.modules.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.modules.parameters())
        logger.info(
            "%s SSFT: %d / %d parameters trainable (%.2f %%): %s",
            self.hparams.method_name,
            count,
            total,
            100.0 * count / max(1, total),
            ", ".join(trainable),
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Re-normalise the codewords, then advance the schedule and log the step."""
        if should_step:
            self.unwrapped.loss.normalise_codebook()
        super().on_fit_batch_end(batch, outputs, loss, should_step)

    def step_stats(self, loss) -> dict:
        """The step's loss, perplexities and accuracy (TensorBoard)."""
        return dict(self._last)

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage accumulators."""
        self._stats = {key: 0.0 for key in STAT_KEYS}
        self._stats["batches"] = 0
        self._last = {}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage's mean loss and codebook perplexity; checkpoint after validation."""
        count = max(1, self._stats["batches"])
        stats = {key: self._stats[key] / count for key in STAT_KEYS}
        stats["loss"] = stage_loss
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            meta = {
                "epoch": epoch,
                "optimizer_step": self.optimizer_step,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            self.hparams.train_logger.log_stats(
                stats_meta=meta, train_stats=self.train_stats, valid_stats=stats
            )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"valid_loss": stats["loss"], "optimizer_step": self.optimizer_step},
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                )
        else:
            self.test_stats = stats
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )

    # ------------------------------------------------------------------ export
    def export_upstream(self, folder=None):
        """Save the fine-tuned upstream in HF format (as LASER's export; head/codebook left out)."""
        from lasersb.models.export import export_upstream_hf

        folder = Path(folder or Path(self.hparams.output_folder) / "upstream_hf")
        info = {
            "source": str(self.hparams.upstream_source),
            "optimizer_step": int(self.optimizer_step),
            "method": f"{self.hparams.method_name} SSFT",
        }
        return export_upstream_hf(self.unwrapped.upstream, folder, info)
