"""The Brain of ``recipes/TEMPLATE``: utterance classification over a frozen SSL upstream.

The smallest complete training method in the repository, meant to be read and copied: a
frozen upstream (:class:`lasersb.models.upstream.SSLUpstream`), a learnable weighted sum of its
layers (:class:`lasersb.models.featuriser.WeightedLayerSum`), mean pooling over the valid frames
and a linear classifier trained with cross-entropy. The recipe uses it for speaker
identification; any utterance-level label (emotion, language, accent...) works the same way.

Everything a long job needs is here and nowhere else in the recipe: step-limited training,
intra-epoch checkpoints (resumed after a kill), the best checkpoint kept by validation error, a
train log, and a JSON summary of the test results.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from lasersb.brains.base import DistributedBrain
from lasersb.models.featuriser import masked_mean

logger = logging.getLogger(__name__)


class UtteranceClassifierBrain(DistributedBrain):
    """Train a weighted-sum + mean-pool + linear classifier on a frozen upstream.

    Expected ``modules``: ``upstream`` (``SSLUpstream``, frozen), ``featuriser``
    (``WeightedLayerSum``), ``classifier`` (``torch.nn.Linear``). Expected ``hparams``:
    ``label_encoder`` (a fitted ``speechbrain.dataio.encoder.CategoricalEncoder``),
    ``output_folder``, ``train_logger``, ``checkpointer``. Batches hold ``sig`` and
    ``label_encoded``.

    Example
    -------
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> class Upstream(torch.nn.Module):  # stands in for SSLUpstream in this example
    ...     def forward(self, wavs, lens):
    ...         from lasersb.models.upstream import UpstreamOutput
    ...         h = wavs.unfold(1, 4, 4)
    ...         n = (lens * h.shape[1]).round().long()
    ...         return UpstreamOutput((h, h), h, n, None)
    >>> from lasersb.models.featuriser import WeightedLayerSum
    >>> modules = {"upstream": Upstream(), "featuriser": WeightedLayerSum(2),
    ...            "classifier": torch.nn.Linear(4, 3)}
    >>> brain = UtteranceClassifierBrain(modules, lambda p: torch.optim.SGD(p, lr=0.1),
    ...                                  run_opts={"device": "cpu"})
    >>> batch = PaddedBatch([{"sig": torch.randn(16), "label_encoded": torch.tensor([1])},
    ...                      {"sig": torch.randn(12), "label_encoded": torch.tensor([2])}])
    >>> brain.compute_forward(batch, sb.Stage.TEST).shape
    torch.Size([2, 3])
    """

    def compute_forward(self, batch, stage):
        """Waveforms -> class log-probabilities ``(B, num_classes)``."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        out = self.modules.upstream(wavs, wav_lens)
        features = self.modules.featuriser(out.hidden_states, frame_lens=out.frame_lens)
        pooled = masked_mean(features, out.frame_lens)
        return torch.log_softmax(self.modules.classifier(pooled), dim=-1)

    def compute_objectives(self, predictions, batch, stage):
        """Negative log-likelihood; the classification error is tracked outside training."""
        labels = batch.label_encoded.data.flatten().to(predictions.device)
        loss = torch.nn.functional.nll_loss(predictions, labels)
        if stage != sb.Stage.TRAIN:
            self._errors += int((predictions.argmax(dim=-1) != labels).sum())
            self._count += int(labels.numel())
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the error counters."""
        self._errors, self._count = 0, 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, keep the best checkpoint by validation error, write the test summary."""
        stats = {"loss": round(float(stage_loss), 6)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["error_rate"] = self._errors / max(self._count, 1)
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "optimizer_step": self.optimizer_step},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"error_rate": stats["error_rate"]}, min_keys=["error_rate"]
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"evaluated": "test", "optimizer_step": self.optimizer_step},
                test_stats=stats,
            )
            if if_main_process():
                summary = {**stats, "optimizer_steps": int(self.optimizer_step)}
                summary["utterances"] = self._count
                path = Path(self.hparams.output_folder) / "test_summary.json"
                path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
                logger.info("Test results written to %s", path)
