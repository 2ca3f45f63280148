"""Spin's prediction head, codebook and swapped-prediction loss with Sinkhorn-Knopp targets.

Spin (Chang, Liu & Glass, "Self-supervised Fine-tuning for Improved Content Representations by
Speaker-invariant Clustering", Interspeech 2023; release ``vectominist/spin``, ``src/nn/dnn.py``
and ``src/nn/swav_vq_dis.py``, after SwAV): frames of an utterance and of its speaker-perturbed
copy go through a prediction head, are L2-normalised and scored against a codebook of
L2-normalised codewords; each view's Sinkhorn-Knopp assignment (equipartitioned over the
codewords, computed from the codeword scores *before* the temperature) is the target of the
*other* view's softmax over the scores divided by the temperature.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.02, iterations: int = 3):
    """Soft equipartitioned assignments of ``B`` frames to ``K`` codewords (SwAV's Sinkhorn).

    ``Q = exp(scores / epsilon)``, normalised to sum 1, then ``iterations`` times: each
    codeword's total made ``1 / K``, each frame's total made ``1 / B``; returned scaled so that
    each frame's row sums to 1. Under DDP the totals run over all processes' frames.

    Arguments
    ---------
    scores : torch.Tensor
        ``(B, K)`` codeword scores (cosine similarities in Spin).
    epsilon : float
        Entropic smoothing (Spin: 0.02).
    iterations : int
        Sinkhorn-Knopp iterations (Spin: 3).

    Returns
    -------
    torch.Tensor
        ``(B, K)`` assignments, rows summing to 1.

    Example
    -------
    >>> q = sinkhorn_knopp(torch.randn(6, 3), epsilon=0.5, iterations=50)
    >>> torch.allclose(q.sum(1), torch.ones(6)), torch.allclose(q.sum(0), torch.full((3,), 2.0))
    (True, True)
    """
    distributed = dist.is_available() and dist.is_initialized()
    scores = scores.float()
    # Subtracting the global maximum leaves Q unchanged after the first normalisation and keeps
    # exp() finite (scores / 0.02 reach 50 for unit vectors).
    shift = scores.max()
    if distributed:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((scores - shift) / epsilon).t()  # (K, B)
    frames, codes = scores.shape[0], scores.shape[1]
    total = q.sum()
    count = torch.tensor(float(frames), device=scores.device)
    if distributed:
        dist.all_reduce(total)
        dist.all_reduce(count)
    q /= total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(rows)
        q /= rows * codes
        q /= q.sum(dim=0, keepdim=True) * count
    return (q * count).t()


class PredictionHead(nn.Module):
    """Spin's ``DNN`` head: linear layers with an activation between them (none after the last).

    With ``hidden_sizes=[256]`` (the release) it is a single ``Linear(768, 256)``.

    Arguments
    ---------
    input_size : int
        Upstream width.
    hidden_sizes : sequence of int
        Output width of each linear layer.
    dropout : float
        Dropout after each hidden layer (release: 0).

    Example
    -------
    >>> PredictionHead(8, [16, 4])(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 4])
    """

    def __init__(self, input_size: int, hidden_sizes=(256,), dropout: float = 0.0):
        super().__init__()
        sizes = [int(input_size)] + [int(h) for h in hidden_sizes]
        if len(sizes) < 2:
            raise ValueError("PredictionHead needs at least one hidden size, e.g. [256].")
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers += [nn.Dropout(dropout), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.output_size = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., input_size)`` -> ``(..., output_size)``."""
        return self.layers(x)


def perplexity(probs: torch.Tensor) -> torch.Tensor:
    """``exp(entropy)`` of a distribution over codewords (``K``: uniform use, 1: collapse).

    Example
    -------
    >>> round(float(perplexity(torch.full((4,), 0.25))), 3)
    4.0
    """
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(-1))


class SwappedPredictionLoss(nn.Module):
    """Spin's codebook and swapped-prediction loss (``SwavVQDisentangle`` in the release).

    Arguments
    ---------
    input_size : int
        Width of the head's output (256).
    num_codewords : int
        Codebook size (Spin: 256).
    epsilon : float
        Sinkhorn smoothing (0.02).
    sinkhorn_iterations : int
        Sinkhorn iterations (3).
    temperature : float
        Softmax temperature of the predictions (0.1).

    Example
    -------
    >>> loss = SwappedPredictionLoss(8, num_codewords=4)
    >>> out = loss(torch.randn(10, 8), torch.randn(10, 8))
    >>> sorted(out)
    ['accuracy', 'code_perplexity', 'loss', 'prob_perplexity']
    >>> torch.allclose(loss.codebook.weight.norm(dim=1), torch.ones(4))
    True
    """

    def __init__(self, input_size: int, num_codewords: int = 256, epsilon: float = 0.02,
                 sinkhorn_iterations: int = 3, temperature: float = 0.1):  # fmt: skip
        super().__init__()
        self.codebook = nn.Linear(int(input_size), int(num_codewords), bias=False)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.temperature = float(temperature)
        self.normalise_codebook()

    @torch.no_grad()
    def normalise_codebook(self) -> None:
        """L2-normalise every codeword (the release does it after every update)."""
        self.codebook.weight.copy_(F.normalize(self.codebook.weight, dim=1))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine scores ``(..., K)`` of frames ``(..., D)`` against the codewords."""
        return self.codebook(F.normalize(z, dim=-1))

    def forward(self, z_1: torch.Tensor, z_2: torch.Tensor) -> dict:
        """Loss and codebook statistics for ``(N, D)`` frames of the two views (same order).

        Returns
        -------
        dict
            ``loss`` (scalar, with gradient), ``code_perplexity`` (of the hard assignments of
            both views' frames), ``prob_perplexity`` (of the mean softmax), ``accuracy`` (how
            often a view's argmax equals the other view's target argmax).
        """
        scores_1 = self.scores(z_1).float()
        scores_2 = self.scores(z_2).float()
        targets_1 = sinkhorn_knopp(scores_1.detach(), self.epsilon, self.sinkhorn_iterations)
        targets_2 = sinkhorn_knopp(scores_2.detach(), self.epsilon, self.sinkhorn_iterations)
        log_p_1 = (scores_1 / self.temperature).log_softmax(dim=-1)
        log_p_2 = (scores_2 / self.temperature).log_softmax(dim=-1)
        loss = -0.5 * ((targets_1 * log_p_2).sum(-1).mean() + (targets_2 * log_p_1).sum(-1).mean())
        with torch.no_grad():
            both = torch.cat([scores_1, scores_2])
            hard = F.one_hot(both.argmax(-1), both.shape[-1]).float().mean(0)
            soft = (both / self.temperature).softmax(-1).mean(0)
            accuracy = 0.5 * (
                (scores_1.argmax(-1) == targets_2.argmax(-1)).float().mean()
                + (scores_2.argmax(-1) == targets_1.argmax(-1)).float().mean()
            )
        return {
            "loss": loss,
            "code_perplexity": perplexity(hard),
            "prob_perplexity": perplexity(soft),
            "accuracy": accuracy,
        }
