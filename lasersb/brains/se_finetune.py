"""Position-invariant fine-tuning of a speech-enhancement front-end through a frozen SSL model.

Seed: A. Meghanani and T. Hain, "Position-invariant Fine-tuning of Speech Enhancement Models
with Self-supervised Speech Representations", ICASSP 2026. The SE model (Demucs ``master64`` in
the paper) is fine-tuned so that a frozen SSL model (HuBERT base) represents the enhanced
speech like the clean speech. Gradients flow *through* the frozen SSL model to the SE model
(:class:`~lasersb.models.upstream.SSLUpstream` runs with autograd whenever its input requires
grad). Three losses, chosen by ``hparams.loss``:

``mse``
    frame-wise MSE between ``SSL(enhanced)`` and ``SSL(clean)``: the baseline. Both inputs
    have the same length, so frame ``t`` of both sits at the same position, and the loss can be
    lowered through the positional information the SSL model's frames carry.
``mse_zeropad``
    the clean reference is zero-padded by ``U[a, b]`` (default [0.02, 0.05]) of its length,
    rounded to whole SSL frames (:func:`lasersb.augment.zero_pad_reference`; at the start, the
    end, or split at random), so its frame ``t + k`` holds the content of the enhanced frame
    ``t`` at a shifted position; the ``k`` padded frames (and those after the content) are
    dropped before the frame-wise MSE.
``softdtw``
    the clean reference is speed-perturbed (:func:`lasersb.augment.speed_perturb`) and the
    soft-DTW divergence between the two SSL sequences is minimised; it needs no frame-to-frame
    correspondence.

Scale (``feature_reduction``, ``softdtw_length_norm``): by default every loss uses the paper's
frame distance, ``||x_i - x'_i||^2`` summed over the ``H`` feature dimensions; the MSE losses
are its mean over frames, ``(1/m) sum_i ||x_i - x'_i||^2`` (the paper's SSL-MSE), and the
soft-DTW divergence is taken on the same cell costs, so ``gamma`` means what it means in LASER.
``feature_reduction: mean`` divides the frame distance by ``H`` (a per-dimension MSE; the
soft-DTW features are then scaled by ``1/sqrt(H)``), and ``softdtw_length_norm: True`` divides
each divergence by the mean of the two sequence lengths; both are explicit options only.

The compared layers are configurable (``ssl_layers``: indices into ``hidden_states``, 0 = the
input of the first transformer layer, ``L`` = the last layer; the loss is the mean over them).
An optional signal-level term ``signal_loss_weight * L1(enhanced, clean)`` can be added.

Whatever the loss, validation and test also report the same aligned, unperturbed frame-wise
``ssl_mse`` and the SI-SNR of the enhanced speech, so the variants can be compared on one
scale (``valid_curve.csv``); ``loss_curve.csv`` holds the training loss of every step.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.utils.distributed import if_main_process, run_on_main

from lasersb.alignment.frame_losses import frame_mse, gather_frames, soft_dtw_frame_loss
from lasersb.augment import speed_perturb, zero_pad_reference
from lasersb.brains.scheduled import WarmupScheduledBrain
from lasersb.metrics.enhancement import si_snr

logger = logging.getLogger(__name__)


LOSSES = ("mse", "mse_zeropad", "softdtw")
LOSS_CURVE = "loss_curve.csv"
VALID_CURVE = "valid_curve.csv"


def _optional_metrics():
    """PESQ / STOI functions when the packages are importable, else ``{}`` (logged once)."""
    metrics = {}
    try:
        from pesq import pesq

        metrics["pesq"] = lambda ref, deg, sr: pesq(sr, ref, deg, "wb")
    except ImportError:
        logger.info("Package 'pesq' not installed: PESQ is not computed (pip install pesq).")
    try:
        from pystoi import stoi

        metrics["stoi"] = lambda ref, deg, sr: stoi(ref, deg, sr, extended=False)
    except ImportError:
        logger.info("Package 'pystoi' not installed: STOI is not computed (pip install pystoi).")
    return metrics


# ---------------------------------------------------------------------- Brain
class SEFinetuneBrain(WarmupScheduledBrain):
    """Fine-tune an SE front-end so that a frozen SSL model sees enhanced speech as clean speech.

    Expected ``modules``: ``enhancer`` (an SE model from :mod:`lasersb.models.enhancement`:
    ``(wavs, lens) -> wavs``), ``upstream`` (a frozen
    :class:`~lasersb.models.upstream.SSLUpstream`, ``trainable_layers=0``).

    Expected ``hparams``: ``loss`` (one of :data:`LOSSES`), ``ssl_layers`` (list of
    ``hidden_states`` indices), ``zeropad_fraction`` ([a, b]), ``zeropad_where``
    (start/end/random), ``ssl_hop`` (samples per SSL frame, 320), ``speed_factors``,
    ``soft_dtw`` (:class:`~lasersb.alignment.SoftDTWDivergence`), ``signal_loss_weight``,
    ``feature_reduction``, ``softdtw_length_norm``, ``lr_schedule`` (a
    :class:`lasersb.schedules.WarmupSchedule`, or null), ``valid_seed``, ``train_logger``,
    ``tensorboard_logger`` (or null), ``num_checkpoints_to_keep`` and ``output_folder``: all
    of them (the YAML is the single source of truth).

    Batches carry ``noisy_sig`` and ``clean_sig`` (same lengths), as built by
    :func:`data_prep.noisy_prepare.noisy_dataset`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        loss = self.hparams.loss
        if loss not in LOSSES:
            raise ValueError(f"hparams 'loss' must be one of {LOSSES}, got {loss!r}.")
        upstream = self.modules.upstream
        if any(p.requires_grad for p in upstream.parameters()):
            raise ValueError(
                "The SSL upstream must be frozen for SE fine-tuning: build it with "
                "trainable_layers=0 (only the enhancer is trained)."
            )
        num_states = upstream.num_layers + 1
        layers = [int(i) for i in self.hparams.ssl_layers]
        bad = [i for i in layers if not -num_states <= i < num_states]
        if not layers or bad:
            raise ValueError(
                f"ssl_layers={layers}: give hidden-state indices in 0..{num_states - 1} "
                f"(0 = transformer input, {num_states - 1} = last layer) or negative ones."
            )
        self.layers = [i % num_states for i in layers]

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Enhance the noisy batch; returns ``(enhanced, lens)``."""
        batch = batch.to(self.device)
        noisy, lens = batch.noisy_sig
        return self.modules.enhancer(noisy, lens), lens

    def _generator(self, stage):
        if stage == sb.Stage.TRAIN:
            return None  # the global RNG, saved in checkpoints by lasersb.checkpoints.RandomState
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(self.hparams.valid_seed) + self.step)
        return generator

    def reference(self, clean, lens, generator=None):
        """The clean reference of the configured loss.

        Returns
        -------
        ref : torch.Tensor
            ``(B, T')`` reference waveforms.
        ref_lens : torch.Tensor
            ``(B,)`` relative lengths w.r.t. ``T'``.
        frame_offsets : torch.Tensor
            ``(B,)`` SSL frames before the content (zero-padding at the start), else zeros.
        """
        loss = self.hparams.loss
        zeros = torch.zeros(clean.shape[0], dtype=torch.long)
        if loss == "mse":
            return clean, lens, zeros
        if loss == "mse_zeropad":
            hop = int(self.hparams.ssl_hop)
            ref, ref_lens, _, offsets = zero_pad_reference(
                clean, lens, fraction_range=tuple(self.hparams.zeropad_fraction), hop=hop,
                where=self.hparams.zeropad_where, generator=generator, return_offsets=True,
            )  # fmt: skip
            return ref, ref_lens, offsets // hop
        ref, ref_lens, _ = speed_perturb(clean, lens, self.hparams.speed_factors, generator)
        return ref, ref_lens, zeros

    def ssl_states(self, wavs, lens):
        """The selected hidden states ``[(B, F, H)]`` and the frame counts of a batch."""
        out = self.modules.upstream(wavs, lens)
        return [out.hidden_states[i] for i in self.layers], out.frame_lens

    def representation_loss(self, enhanced, lens, ref, ref_lens, frame_offsets):
        """Per-utterance SSL loss ``(B,)`` between enhanced speech and the clean reference."""
        enh_states, enh_frames = self.ssl_states(enhanced, lens)
        with torch.no_grad():
            ref_states, ref_frames = self.ssl_states(ref, ref_lens)
        terms = []
        for enh, ref_h in zip(enh_states, ref_states):
            if self.hparams.loss == "softdtw":
                terms.append(soft_dtw_frame_loss(
                    enh, ref_h, enh_frames, ref_frames, self.hparams.soft_dtw,
                    feature_reduction=self.hparams.feature_reduction,
                    length_norm=self.hparams.softdtw_length_norm,
                ))  # fmt: skip
                continue
            offsets = frame_offsets.to(enh.device)
            aligned = gather_frames(ref_h, offsets, enh.shape[1])
            frames = torch.minimum(enh_frames, ref_frames - offsets)
            terms.append(frame_mse(enh.float(), aligned.float(), frames,
                                   self.hparams.feature_reduction))  # fmt: skip
        return torch.stack(terms).mean(dim=0)

    def signal_loss(self, enhanced, clean, lens):
        """Per-utterance L1 between enhanced and clean waveforms over the valid samples."""
        total = clean.shape[1]
        samples = torch.round(lens * total).long().clamp(min=1)
        mask = length_to_mask(samples, max_len=total, dtype=clean.dtype)
        return ((enhanced - clean).abs() * mask).sum(1) / samples.to(clean.dtype)

    def compute_objectives(self, predictions, batch, stage):
        """The configured loss (mean over the batch); valid/test stages also track metrics."""
        enhanced, lens = predictions
        clean, _ = batch.clean_sig
        ref, ref_lens, offsets = self.reference(clean, lens, self._generator(stage))
        loss = self.representation_loss(enhanced, lens, ref, ref_lens, offsets)
        weight = float(self.hparams.signal_loss_weight or 0.0)
        if weight > 0:
            loss = loss + weight * self.signal_loss(enhanced, clean, lens)
        if not torch.isfinite(loss).all():
            bad = [batch.id[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()]
            logger.warning("Non-finite SE loss for utterance(s) %s", ", ".join(bad))
        if stage != sb.Stage.TRAIN:
            self._track(batch, enhanced.detach(), clean, lens, loss.detach())
        return loss.mean()

    @torch.no_grad()
    def _track(self, batch, enhanced, clean, lens, loss):
        noisy, _ = batch.noisy_sig
        enh_states, frames = self.ssl_states(enhanced, lens)
        clean_states, _ = self.ssl_states(clean, lens)
        noisy_states, _ = self.ssl_states(noisy, lens)
        reduction = self.hparams.feature_reduction
        ssl = torch.stack(
            [frame_mse(e, c, frames, reduction) for e, c in zip(enh_states, clean_states)]
        )
        ssl_noisy = torch.stack(
            [frame_mse(n, c, frames, reduction) for n, c in zip(noisy_states, clean_states)]
        )
        stats = {
            "loss": loss,
            "ssl_mse": ssl.mean(0),
            "ssl_mse_noisy": ssl_noisy.mean(0),
            "si_snr": si_snr(enhanced, clean, lens),
            "si_snr_noisy": si_snr(noisy, clean, lens),
        }
        if self._metrics:
            total = clean.shape[1]
            for i, n in enumerate(torch.round(lens * total).long().tolist()):
                ref, deg = clean[i, :n].cpu().numpy(), enhanced[i, :n].cpu().numpy()
                for name, fn in self._metrics.items():
                    try:
                        self._sums.setdefault(name, []).append(float(fn(ref, deg, 16000)))
                    except Exception as err:  # noqa: BLE001 - e.g. PESQ on too-short input
                        logger.debug("%s failed on %s: %s", name, batch.id[i], err)
        for name, values in stats.items():
            self._sums.setdefault(name, []).extend(values.float().cpu().tolist())

    # ------------------------------------------------------------------ optimisation
    no_trainable_message = "The enhancer has no trainable parameters."

    def optimizer_params(self) -> list:
        """The enhancer's parameters (the upstream is frozen)."""
        return [p for p in self.modules.enhancer.parameters() if p.requires_grad]

    def on_fit_start(self):
        """Recover the latest checkpoint and re-apply the schedule's learning rate."""
        super().on_fit_start()
        # Steps already in the loss curve after a resume are dropped and re-logged.
        self._truncate_curve(LOSS_CURVE, self.optimizer_step)
        self._truncate_curve(VALID_CURVE, self.optimizer_step)

    def _curve_path(self, name) -> Path:
        return Path(self.hparams.output_folder) / name

    def _truncate_curve(self, name, step):
        path = self._curve_path(name)
        if not path.is_file() or not if_main_process():
            return
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(keep)

    def _append_curve(self, name, header, values):
        if not if_main_process():
            return
        path = self._curve_path(name)
        new = not path.is_file()
        with open(path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(header)
            writer.writerow(values)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Advance the schedule, log the step (TensorBoard) and append it to ``loss_curve.csv``."""
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        if should_step:
            lr = self.optimizer.param_groups[0]["lr"]
            value = float(loss.detach())
            self._append_curve(
                LOSS_CURVE,
                ["step", "loss", "lr"],
                [self.optimizer_step, f"{value:.6g}", f"{lr:.6g}"],
            )

    def on_stage_start(self, stage, epoch=None):
        """Reset the metric accumulators."""
        self._sums = {}
        self._metrics = _optional_metrics() if stage == sb.Stage.TEST else {}

    def summary(self) -> dict:
        """Means of the tracked metrics of the last valid/test stage (``si_snr_i`` included)."""
        stats = {k: sum(v) / len(v) for k, v in self._sums.items() if v}
        if "si_snr" in stats and "si_snr_noisy" in stats:
            stats["si_snr_i"] = stats["si_snr"] - stats["si_snr_noisy"]
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log stats, write the valid curve, checkpoint after validation."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = self.summary()
        stats["loss"] = stage_loss
        logger_ = self.hparams.train_logger
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            self._append_curve(
                VALID_CURVE, ["step", "loss", "ssl_mse", "si_snr"],
                [self.optimizer_step, f"{stage_loss:.6g}", f"{stats.get('ssl_mse', 0):.6g}",
                 f"{stats.get('si_snr', 0):.4f}"],
            )  # fmt: skip
            if logger_ is not None:
                logger_.log_stats(
                    stats_meta={"epoch": epoch, "optimizer_step": self.optimizer_step},
                    train_stats=getattr(self, "train_stats", None), valid_stats=stats,
                )  # fmt: skip
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"ssl_mse": stats.get("ssl_mse", stage_loss),
                          "optimizer_step": self.optimizer_step},
                    min_keys=["ssl_mse"],
                    num_to_keep=int(self.hparams.num_checkpoints_to_keep),
                )  # fmt: skip
        else:
            self.test_stats = stats
            if logger_ is not None:
                logger_.log_stats(stats_meta={"set": getattr(self, "test_name", "test")},
                                  test_stats=stats)  # fmt: skip

    # ------------------------------------------------------------------ enhancement export
    @torch.no_grad()
    def enhance_to_folder(self, dataset, out_folder, split, loader_kwargs=None) -> Path:
        """Enhance a dataset into a LibriSpeech-layout folder (for downstream recipes).

        Writes ``<out_folder>/LibriSpeech/<split>/<spk>/<chapter>/<id>.flac`` (IDs must be
        LibriSpeech ``spk-chapter-utt``) and the ``*.trans.txt`` files from the ``wrd`` column,
        so that e.g. the SUPERB recipes run on it with ``--data_folder=<out_folder>``.

        Returns
        -------
        pathlib.Path
            ``out_folder``.
        """
        # One process writes the folder, with the enhancer outside its DDP wrapper (a forward
        # through the wrapper on one rank only would start collectives); the others wait.
        run_on_main(self._enhance_to_folder, args=[dataset, Path(out_folder), split, loader_kwargs])
        return Path(out_folder)

    @torch.no_grad()
    def _enhance_to_folder(self, dataset, out_folder, split, loader_kwargs):
        import soundfile as sf

        enhancer = self.unwrapped.enhancer
        was_training = enhancer.training
        enhancer.eval()
        loader = sb.dataio.dataloader.make_dataloader(dataset, **(loader_kwargs or {}))
        transcripts = {}
        for batch in loader:
            batch = batch.to(self.device)
            noisy, lens = batch.noisy_sig
            enhanced = enhancer(noisy, lens)
            total = enhanced.shape[1]
            for i, uid in enumerate(batch.id):
                parts = uid.split("-")
                if len(parts) != 3:
                    raise ValueError(
                        f"Utterance id {uid!r} is not a LibriSpeech id spk-chapter-utt; "
                        "enhance_to_folder writes the LibriSpeech layout."
                    )
                folder = out_folder / "LibriSpeech" / split / parts[0] / parts[1]
                folder.mkdir(parents=True, exist_ok=True)
                n = int(round(float(lens[i]) * total))
                wav = enhanced[i, :n].float().cpu().clamp(-1, 1).numpy()
                sf.write(str(folder / f"{uid}.flac"), wav, 16000, subtype="PCM_16")
                words = getattr(batch, "wrd", None)
                if words is not None:
                    transcripts.setdefault(folder / f"{parts[0]}-{parts[1]}.trans.txt", []).append(
                        f"{uid} {words[i]}"
                    )
        for path, lines in transcripts.items():
            path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
        enhancer.train(was_training)
