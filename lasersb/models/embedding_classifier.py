"""An utterance-embedding trunk with a classification head, for transfer to utterance tasks.

Cho et al. (JSTSP 2022) transfer the DINO (or supervised x-vector) embedding model to emotion
recognition (IEMOCAP) and Alzheimer's detection (ADReSS) by putting a classification head on
the 256-d embedding (:class:`EmbeddingClassifier`); the two-stage schedule first trains only
the *last affine layers* (:func:`last_affine_modules` and the head), then everything
(:class:`lasersb.brains.embedding_classifier.EmbeddingClassifierBrain`).
:func:`load_or_init_embedding_model` gives the trunk (pre-trained or random) and
:func:`chunk_posteriors` evaluates long utterances chunk by chunk.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from lasersb.models.dino import load_embedding_model
from lasersb.models.resnet import SpeakerEmbeddingModel

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingClassifier",
    "chunk_posteriors",
    "last_affine_modules",
    "load_or_init_embedding_model",
]


def load_or_init_embedding_model(checkpoint=None, **config) -> nn.Module:
    """The embedding trunk: from a DINO/x-vector checkpoint, or randomly initialised.

    Arguments
    ---------
    checkpoint : str or Path, optional
        An ``embedding_model.ckpt`` (or the output folder of a DINO/x-vector run), read with
        :func:`lasersb.models.dino.load_embedding_model`; its stored configuration wins over
        ``config``. ``None``: a random :class:`~lasersb.models.resnet.SpeakerEmbeddingModel`.
    **config
        Keyword arguments of :class:`~lasersb.models.resnet.SpeakerEmbeddingModel` (random
        initialisation only).

    Returns
    -------
    SpeakerEmbeddingModel
        In training mode; ``checkpoint_meta`` says where it came from.

    Example
    -------
    >>> model = load_or_init_embedding_model(None, embedding_dim=8, n_mels=16,
    ...                                      base_channels=4, num_blocks=(1, 1, 1, 1))
    >>> model.checkpoint_meta
    {'source': 'random-init'}
    """
    if checkpoint in (None, "", "null", "None"):
        model = SpeakerEmbeddingModel(**config)
        model.checkpoint_meta = {"source": "random-init"}
        return model
    model = load_embedding_model(checkpoint, eval_mode=False)
    logger.info(
        "Embedding model from %s (%s); its stored configuration is used.",
        checkpoint,
        model.checkpoint_meta.get("source", "unknown source"),
    )
    return model


def last_affine_modules(embedding_model: nn.Module) -> list:
    """The trunk's embedding (last affine) layer, with its normalisation when there is one.

    Light ResNet: ``encoder.embedding`` (+ ``encoder.embedding_bn``); ECAPA-TDNN: its final
    ``fc``; other models: their last ``nn.Linear``.

    Example
    -------
    >>> model = SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                               num_blocks=(1, 1, 1, 1))
    >>> [type(m).__name__ for m in last_affine_modules(model)]
    ['Linear', 'BatchNorm1d']
    """
    encoder = getattr(embedding_model, "encoder", embedding_model)
    embedding = getattr(encoder, "embedding", None)
    if isinstance(embedding, nn.Linear):
        modules = [embedding]
        if getattr(encoder, "embedding_bn", None) is not None:
            modules.append(encoder.embedding_bn)
        return modules
    ecapa = getattr(encoder, "ecapa", None)
    if ecapa is not None and hasattr(ecapa, "fc"):
        return [ecapa.fc]
    linears = [m for m in embedding_model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"No affine embedding layer found in {type(embedding_model).__name__}")
    return [linears[-1]]


class EmbeddingClassifier(nn.Module):
    """An utterance-embedding trunk with a classification head on its embedding.

    Arguments
    ---------
    embedding_model : nn.Module
        ``(wavs, rel_lens) -> (B, D)``, e.g. from :func:`load_or_init_embedding_model`.
    num_classes : int
        Output classes.
    hidden_dim : int
        Width of a hidden ReLU layer in the head (0: a single linear layer).
    dropout : float
        Dropout on the embedding before the head.

    Example
    -------
    >>> trunk = load_or_init_embedding_model(embedding_dim=8, n_mels=16, base_channels=4,
    ...                                      num_blocks=(1, 1, 1, 1))
    >>> model = EmbeddingClassifier(trunk, num_classes=4)
    >>> model.set_trainable("last_affine")
    >>> sum(p.requires_grad for p in model.parameters()) == len(model.last_affine_parameters())
    True
    >>> _ = model.train()
    >>> model(torch.randn(2, 8000), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 4])
    """

    TRAINABLE = ("all", "last_affine")

    def __init__(self, embedding_model, num_classes: int, hidden_dim: int = 0, dropout=0.0):
        super().__init__()
        dim = int(embedding_model.embedding_dim)
        self.embedding_model = embedding_model
        layers = [nn.Dropout(float(dropout))] if dropout else []
        if hidden_dim:
            layers += [
                nn.Linear(dim, int(hidden_dim)),
                nn.ReLU(),
                nn.Linear(hidden_dim, num_classes),
            ]
        else:
            layers.append(nn.Linear(dim, int(num_classes)))
        self.head = nn.Sequential(*layers)
        self.num_classes = int(num_classes)
        self.trainable = "all"

    def last_affine_modules(self) -> list:
        """The trunk's embedding layer (see :func:`last_affine_modules`) and the head."""
        return last_affine_modules(self.embedding_model) + [self.head]

    def last_affine_parameters(self) -> list:
        """Parameters of :meth:`last_affine_modules` (trained in stage 1)."""
        return [p for m in self.last_affine_modules() for p in m.parameters()]

    def body_parameters(self) -> list:
        """All the other parameters (frozen in stage 1)."""
        last = {id(p) for p in self.last_affine_parameters()}
        return [p for p in self.parameters() if id(p) not in last]

    def set_trainable(self, part: str) -> None:
        """``"all"``: train everything; ``"last_affine"``: only the last affine layers.

        With ``"last_affine"`` the rest of the trunk is also kept in evaluation mode, so that
        its batch-norm statistics stay those of the pre-trained model.
        """
        if part not in self.TRAINABLE:
            raise ValueError(f"trainable part must be one of {self.TRAINABLE}, got {part!r}")
        self.trainable = part
        for param in self.body_parameters():
            param.requires_grad_(part == "all")
        for param in self.last_affine_parameters():
            param.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; the frozen part of the trunk stays in eval mode."""
        super().train(mode)
        if mode and self.trainable == "last_affine":
            self.embedding_model.eval()
            for module in self.last_affine_modules():
                module.train(True)
        return self

    def embed(self, wavs: torch.Tensor, rel_lens=None) -> torch.Tensor:
        """``(B, T)`` waveforms -> ``(B, D)`` embeddings."""
        return self.embedding_model(wavs, rel_lens)

    def forward(self, wavs: torch.Tensor, rel_lens=None) -> torch.Tensor:
        """``(B, T)`` waveforms and ``(B,)`` relative lengths -> ``(B, num_classes)`` logits."""
        return self.head(self.embed(wavs, rel_lens))


def chunk_posteriors(model, wavs, rel_lens, chunk_samples: int, max_chunks_per_pass=64):
    """Class posteriors averaged over the consecutive chunks of each utterance.

    Each utterance's valid part is cut into ``ceil(length / chunk_samples)`` chunks; the last
    one is aligned with the utterance's end, so every chunk is full speech (an utterance shorter
    than a chunk is one chunk of its own length, padded).

    Arguments
    ---------
    model : callable
        ``(wavs, rel_lens) -> logits``.
    wavs : torch.Tensor
        ``(B, T)`` waveforms.
    rel_lens : torch.Tensor
        ``(B,)`` relative lengths.
    chunk_samples : int
        Chunk length in samples.
    max_chunks_per_pass : int
        Chunks per forward pass (memory bound).

    Returns
    -------
    torch.Tensor
        ``(B, C)`` averaged posteriors.

    Example
    -------
    >>> model = lambda w, l: torch.stack([w.mean(1), -w.mean(1)], dim=1)
    >>> probs = chunk_posteriors(model, torch.ones(2, 10), torch.tensor([1.0, 0.5]), 4)
    >>> probs.shape, torch.allclose(probs.sum(1), torch.ones(2))
    (torch.Size([2, 2]), True)
    """
    batch, length = wavs.shape
    chunk_samples = int(chunk_samples)
    valid = torch.round(rel_lens.detach().float().cpu() * length).long().clamp(1, length)
    pieces, lens, owner = [], [], []
    for b in range(batch):
        n = int(valid[b])
        if n <= chunk_samples:
            pieces.append(F.pad(wavs[b, :n], (0, chunk_samples - n)))
            lens.append(n / chunk_samples)
            owner.append(b)
            continue
        count = math.ceil(n / chunk_samples)
        for k in range(count):
            start = min(k * chunk_samples, n - chunk_samples)
            pieces.append(wavs[b, start : start + chunk_samples])
            lens.append(1.0)
            owner.append(b)
    chunks = torch.stack(pieces)
    chunk_lens = torch.tensor(lens, device=wavs.device)
    probs = []
    for start in range(0, chunks.shape[0], max_chunks_per_pass):
        logits = model(
            chunks[start : start + max_chunks_per_pass], chunk_lens[start:][:max_chunks_per_pass]
        )
        probs.append(logits.float().softmax(dim=-1))
    probs = torch.cat(probs)
    owner = torch.tensor(owner, device=probs.device)
    total = torch.zeros(batch, probs.shape[1], device=probs.device).index_add_(0, owner, probs)
    counts = torch.bincount(owner, minlength=batch).clamp(min=1).unsqueeze(1)
    return total / counts
