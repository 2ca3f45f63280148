"""CTC loss of a padded batch, as the CTC Brains (SUPERB ASR/PR, adapter transfer) train with.

:func:`batch_ctc_loss` takes the ``(B, T, V)`` log-probabilities of a head, the valid frame
count of each utterance and the padded ``tokens`` item of a SpeechBrain batch (built by
:func:`lasersb.data.pipelines.add_ctc_targets`), and returns PyTorch's CTC loss averaged over
the utterances, each divided by its target length (``reduction="mean"``), with impossible
alignments zeroed (``zero_infinity``) instead of turning the batch loss into ``inf``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batch_ctc_loss"]


def batch_ctc_loss(log_probs, frame_lens, tokens, blank_index: int) -> torch.Tensor:
    """CTC loss of a batch: mean over utterances of each loss divided by its target length.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``(B, T, V)`` log-probabilities.
    frame_lens : torch.Tensor
        ``(B,)`` valid frames of each utterance.
    tokens : tuple of torch.Tensor
        The batch's padded ``tokens`` item (from :func:`lasersb.data.pipelines.add_ctc_targets`):
        ``(targets (B, L), relative lengths (B,))``.
    blank_index : int
        The tokenizer's blank.

    Returns
    -------
    torch.Tensor
        A scalar.

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
