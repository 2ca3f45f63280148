"""LASER self-supervised fine-tuning (SSFT) of a HuBERT/WavLM upstream.

LASER ("Learning by Aligning Self-supervised Representations of Speech", Interspeech 2024)
fine-tunes the top transformer layers of an SSL upstream so that an utterance and its
speed/pitch-perturbed copy align well under soft-DTW, while a temporal regulariser keeps
neighbouring frames close and distant frames apart (preventing the collapse to a constant
sequence that soft-DTW alone admits):

    loss = soft_dtw_divergence_gamma(z_1, z_2) + alpha * (R(z_1) + R(z_2))

with ``z = L2norm(Linear(last_hidden_state))``. Padding and per-utterance lengths are passed to
both the soft-DTW and the regulariser, so padded batches give the per-utterance losses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from lasersb.brains.scheduled import WarmupScheduledBrain
from lasersb.models.export import export_readme

logger = logging.getLogger(__name__)

ALIGNMENT_BEFORE = "alignment_before.pt"
ADAPTERS_FILE = "lasersb_adapters.pt"


class LaserBrain(WarmupScheduledBrain):
    """Brain for LASER SSFT.

    Expected ``modules``: ``upstream`` (:class:`lasersb.models.upstream.SSLUpstream` with its
    top layers trainable), ``projection`` (:class:`lasersb.models.projection.NormalisedProjection`)
    and, for SCORE, ``target_upstream`` (:class:`lasersb.models.view_encoders.FrozenUpstream`).
    The same Brain trains SCORE (``hparams/score.yaml``): no regulariser, frozen target view,
    loss divided by the pair's frame count.
    Expected ``hparams``: ``views`` (:class:`lasersb.augment.LaserViews`), ``view_encoder``
    (:mod:`lasersb.models.view_encoders`), ``soft_dtw``
    (:class:`lasersb.alignment.SoftDTWDivergence`, or SCORE's
    :class:`lasersb.alignment.LengthNormalised` of it), ``regulariser``
    (:class:`lasersb.alignment.TemporalRegulariser`), ``reg_alpha``, ``use_regulariser``,
    ``lr_schedule`` (:class:`lasersb.schedules.WarmupSchedule`), ``output_folder``,
    ``valid_seed``, ``num_checkpoints_to_keep``, ``upstream_source``, and ``train_logger``,
    ``tensorboard_logger`` (each possibly ``None``).
    """

    no_trainable_message = (
        "No trainable parameters: set trainable_layers (top transformer layers to fine-tune) "
        "to at least 1, or enable adapters."
    )

    # ------------------------------------------------------------------ forward / loss
    def encode(self, wavs, wav_lens, modules=None):
        """Upstream + projection: ``(B, T)`` waveforms -> unit-norm frames and frame counts.

        ``modules`` defaults to ``self.modules`` (through the DDP wrappers, as training needs);
        computations on one rank only pass ``self.unwrapped``.
        """
        modules = self.modules if modules is None else modules
        out = modules.upstream(wavs, wav_lens)
        z = modules.projection(out.last_hidden_state)
        return z, out.frame_lens.to(z.device)

    def make_views(self, wavs, wav_lens, stage, generator=None):
        """Perturbed views of a batch; validation views are reproducible (seeded per batch).

        The views are always computed in fp32, outside any autocast (with ``precision: bf16``
        the resampling would otherwise run in bf16, about 52 dB SNR against fp32), as the
        release computes them on the CPU in fp32.
        """
        if generator is None and stage != sb.Stage.TRAIN:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(int(self.hparams.valid_seed) + self.step)
        with torch.autocast(device_type=self.device_type, enabled=False):
            return self.hparams.views(wavs.float(), wav_lens, generator=generator)

    def compute_forward(self, batch, stage):
        """Make the two views and encode them with ``view_encoder``; return both sequences.

        ``hparams.view_encoder`` chooses how (:mod:`lasersb.models.view_encoders`): LASER puts
        both views through the trained upstream in one pass, SCORE the second view through a
        frozen copy of the original upstream (``modules.target_upstream``).
        """
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        views = self.make_views(wavs, wav_lens, stage)
        return self.hparams.view_encoder(self.modules, *views)

    def laser_loss(self, z_a, lens_a, z_b, lens_b):
        """Per-utterance LASER loss terms ``(loss, divergence, regulariser)``, each ``(B,)``."""
        # The DP and the regulariser run in fp32 whatever the autocast dtype.
        z_a, z_b = z_a.float(), z_b.float()
        divergence = self.hparams.soft_dtw(z_a, z_b, lens_a, lens_b)
        if self.hparams.use_regulariser:
            reg = self.hparams.regulariser(z_a, lens_a) + self.hparams.regulariser(z_b, lens_b)
        else:
            reg = torch.zeros_like(divergence)
        return divergence + self.hparams.reg_alpha * reg, divergence, reg

    def compute_objectives(self, predictions, batch, stage):
        """Mean LASER loss over the batch; the terms are tracked for logging."""
        loss, divergence, reg = self.laser_loss(*predictions)
        self._terms["divergence"] += divergence.detach().sum().item()
        self._terms["regulariser"] += reg.detach().sum().item()
        self._terms["utterances"] += loss.shape[0]
        if not torch.isfinite(loss).all():
            bad = [batch.id[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()]
            logger.warning("Non-finite LASER loss for utterance(s) %s", ", ".join(bad))
        return loss.mean()

    # ------------------------------------------------------------------ optimisation
    def on_fit_start(self):
        """Recover the latest checkpoint, then record the 'before' alignment on a fresh start."""
        # Per-rank random streams (each process draws its own views); the restored schedule's
        # learning rate re-applied (WarmupScheduledBrain).
        super().on_fit_start()
        self._log_parameter_counts()
        example = getattr(self, "alignment_example", None)
        if example is not None:
            self.record_alignment_before(example, seed=self.hparams.alignment_plot_seed)

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage accumulators of the loss terms."""
        self._terms = {"divergence": 0.0, "regulariser": 0.0, "utterances": 0}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch's losses and save a checkpoint after validation."""
        count = max(1, self._terms["utterances"])
        stats = {
            "loss": stage_loss,
            "soft_dtw_divergence": self._terms["divergence"] / count,
            "regulariser": self._terms["regulariser"] / count,
        }
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        meta = {"epoch": epoch, "optimizer_step": self.optimizer_step}
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            meta["lr"] = self.optimizer.param_groups[0]["lr"]
            train_logger = self.hparams.train_logger
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta=meta, train_stats=self.train_stats, valid_stats=stats
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"valid_loss": stats["loss"], "optimizer_step": self.optimizer_step},
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                )
        else:
            train_logger = self.hparams.train_logger
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                    test_stats=stats,
                )
            self.test_stats = stats

    def _log_parameter_counts(self):
        """Log the trainable share and, once per run, the exact trainable parameter names."""
        trainable = sum(p.numel() for p in self.modules.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.modules.parameters())
        logger.info(
            "%s SSFT: %d / %d parameters trainable (%.2f %%)",
            self.hparams.method_name,
            trainable,
            total,
            100.0 * trainable / max(1, total),
        )
        if not getattr(self, "_names_logged", False):
            names = [n for n, p in self.modules.named_parameters() if p.requires_grad]
            logger.info("Trainable parameters (%d): %s", len(names), ", ".join(names))
            self._names_logged = True

    # ------------------------------------------------------------------ analysis / export
    @torch.no_grad()
    def soft_alignment_of(self, wav, seed=0):
        """Soft alignment (expected alignment matrix) of one utterance with its perturbed view.

        Arguments
        ---------
        wav : torch.Tensor
            ``(T,)`` waveform.
        seed : int
            Seed of the perturbation, so that 'before' and 'after' use the same pair.

        Returns
        -------
        torch.Tensor
            ``(N, M)`` expected alignment between the two views' frames.
        """
        from lasersb.alignment import soft_alignment

        was_training = self.modules.training
        self.modules.eval()
        wavs = wav.to(self.device).unsqueeze(0)
        lens = torch.ones(1, device=self.device)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        view_a, lens_a, view_b, lens_b = self.hparams.views(wavs, lens, generator=generator)
        # Runs on rank 0 only (plots): the wrappers would start collectives the others skip.
        z_a, fl_a, z_b, fl_b = self.hparams.view_encoder(
            self.unwrapped, view_a, lens_a, view_b, lens_b
        )
        with torch.enable_grad():
            align = soft_alignment(
                z_a.float(), z_b.float(), fl_a, fl_b, gamma=self.hparams.soft_dtw.gamma
            )
        self.modules.train(was_training)
        return align[0, : int(fl_a[0]), : int(fl_b[0])].cpu()

    def record_alignment_before(self, wav, seed=0):
        """Save the soft alignment of a dev pair before any update (skipped when resuming)."""
        path = Path(self.hparams.output_folder) / ALIGNMENT_BEFORE
        if path.exists() or self.optimizer_step > 0:
            return
        if if_main_process():
            torch.save({"alignment": self.soft_alignment_of(wav, seed), "seed": seed}, path)

    def plot_alignments(self, wav, seed=0):
        """Write ``soft_alignment.png``: the dev pair's soft alignment before and after SSFT."""
        if not if_main_process():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder = Path(self.hparams.output_folder)
        after = self.soft_alignment_of(wav, seed)
        panels = [("after SSFT", after)]
        before_path = folder / ALIGNMENT_BEFORE
        if before_path.exists():
            before = torch.load(before_path, weights_only=True)["alignment"]
            panels.insert(0, ("before SSFT", before))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
        for ax, (title, mat) in zip(axes[0], panels):
            im = ax.imshow(mat.numpy(), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(f"Soft alignment {title}")
            ax.set_xlabel("perturbed view frame")
            ax.set_ylabel("view frame")
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        out = folder / "soft_alignment.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def export_upstream(self, folder=None):
        """Save the fine-tuned upstream in HF format (``save_pretrained`` + feature extractor).

        Written to ``<output_folder>/upstream_hf`` by default with ``lasersb_export.json`` and a
        ``README.md`` that say how to load it. Every recipe's upstream loader
        (:func:`lasersb.models.upstream.load_upstream`) reads it. Without adapters it is a plain
        transformers folder (``AutoModel.from_pretrained`` works). When SSFT trained adapters
        (``use_adapters``), their weights are in the safetensors file and their configuration in
        ``config.json`` (see :meth:`SSLUpstream.save_hf`): ``load_upstream`` re-inserts them,
        plain ``AutoModel`` refuses the folder with an error naming ``load_upstream``. The
        adapter set is also written alone to ``lasersb_adapters.pt``
        (``lasersb.models.adapters.load_adapters`` puts it onto the original upstream).
        """
        from lasersb.models.adapters import adapter_config, get_adapters, save_adapters
        from lasersb.models.export import export_upstream_hf
        from lasersb.models.upstream import LOAD_HINT

        folder = Path(folder or Path(self.hparams.output_folder) / "upstream_hf")
        upstream = self.unwrapped.upstream
        adapters = get_adapters(upstream.model)
        info = {
            "source": str(self.hparams.upstream_source),
            "optimizer_step": int(self.optimizer_step),
            "method": f"{self.hparams.method_name} SSFT",
            "adapters": (
                {
                    "count": len(adapters),
                    "file": ADAPTERS_FILE,
                    "config": adapter_config(upstream.model),
                }
                if adapters
                else None
            ),
            "load_with": LOAD_HINT,
            "transformers_automodel": (
                "refused (config.json model_type names lasersb's loader): plain "
                "transformers would drop the adapters"
                if adapters
                else "works: transformers.AutoModel.from_pretrained(folder)"
            ),
        }

        def _extra(tmp):
            if adapters:
                save_adapters(tmp / ADAPTERS_FILE, upstream.model)
            (tmp / "README.md").write_text(export_readme(info), encoding="utf-8")

        return export_upstream_hf(upstream, folder, info, _extra)
