"""HuBERT masked prediction (Hsu et al., 2021) around a ``transformers.HubertModel``.

``transformers`` ships HuBERT's encoder but not its pretraining objective, so this module adds
what fairseq's ``HubertModel`` (``fairseq/models/hubert/hubert.py``) puts around the encoder:

- :func:`span_mask`: fairseq's ``compute_mask_indices`` with ``mask_selection: static`` and no
  minimum spacing: ``int(mask_prob * frames / mask_length + u)`` span starts (``u`` uniform in
  [0, 1)) drawn without replacement, each masking ``mask_length`` frames (spans may overlap,
  so about 50 % of the frames are masked for ``mask_prob=0.8``, span 10). Ours takes a
  ``torch.Generator`` (transformers' ``_compute_mask_indices`` draws from numpy's global state,
  which a resumed or evaluated run cannot replay).
- :class:`HubertPretrainingModel`: the encoder (masked frames replaced by its learnt
  ``masked_spec_embed``, inside ``HubertModel.forward``), the final projection to
  ``final_dim`` and one embedding per cluster; logits are cosine similarities divided by
  ``logit_temp`` (0.1), as fairseq's ``compute_nce`` with every cluster a candidate. It also
  returns fairseq's feature penalty (mean square of the conv features, before their layer norm)
  and scales the conv encoder's gradient by ``feature_grad_mult`` (0.1), both through a forward
  hook on ``hubert.feature_extractor`` so that the encoder runs transformers' own ``forward``.

The encoder alone is what the pretraining exports (``hubert.save_pretrained``): the projection
and cluster embeddings are training-only, as in fairseq (``remove_pretraining_modules``).
"""

from __future__ import annotations

import torch

__all__ = ["HubertPretrainingModel", "span_mask"]


def span_mask(
    batch: int,
    frames: int,
    mask_prob: float,
    mask_length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean ``(batch, frames)`` span mask, fairseq's ``compute_mask_indices`` (static spans).

    Arguments
    ---------
    batch, frames : int
        Shape of the mask (the batch is cropped to one length, so no padding).
    mask_prob : float
        Share of the frames chosen as span starts, before spans overlap (0.8 in HuBERT base).
    mask_length : int
        Frames per span (10).
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator).

    Returns
    -------
    torch.Tensor
        ``bool``; every row has at least one span.

    Example
    -------
    >>> mask = span_mask(2, 100, 0.8, 10, torch.Generator().manual_seed(0))
    >>> mask.shape, bool(mask.any(dim=1).all())
    (torch.Size([2, 100]), True)
    >>> 0.3 < float(mask.float().mean()) < 0.7
    True
    """
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}.")
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}.")
    if frames < mask_length:
        raise ValueError(
            f"Cannot mask spans of {mask_length} frames in {frames} frames: raise "
            "min_sample_size (the shortest crop) or lower mask_length."
        )
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    starts_available = frames - mask_length + 1
    offsets = torch.arange(mask_length)
    for row in range(batch):
        u = float(torch.rand((), generator=generator))
        count = int(mask_prob * frames / float(mask_length) + u)
        count = min(max(count, 1), starts_available)
        starts = torch.randperm(starts_available, generator=generator)[:count]
        mask[row, (starts[:, None] + offsets[None, :]).reshape(-1)] = True
    return mask


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class HubertPretrainingModel(torch.nn.Module):
    """A ``transformers.HubertModel`` with HuBERT's masked-prediction head.

    Arguments
    ---------
    config : transformers.HubertConfig
        Encoder config (``apply_spec_augment=True`` so that ``mask_time_indices`` is applied).
    num_classes : int
        Number of k-means clusters (targets).
    final_dim : int
        Dimension of the projection and the cluster embeddings (256 in HuBERT base).
    logit_temp : float
        Temperature of the cosine-similarity logits (0.1).
    feature_grad_mult : float
        Scale of the conv encoder's gradient (0.1 in HuBERT base; 1.0 leaves it).

    Example
    -------
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertPretrainingModel(tiny_config("hubert"), num_classes=10, final_dim=16)
    >>> wav = torch.randn(2, 16000)
    >>> mask = span_mask(2, 49, 0.8, 10, torch.Generator().manual_seed(0))
    >>> logits, penalty = model(wav, mask)
    >>> logits.shape, penalty.ndim
    (torch.Size([2, 49, 10]), 0)
    """

    def __init__(
        self,
        config,
        num_classes: int,
        final_dim: int = 256,
        logit_temp: float = 0.1,
        feature_grad_mult: float = 0.1,
    ):
        super().__init__()
        from transformers import HubertModel

        if not config.apply_spec_augment:
            raise ValueError(
                "HuBERT pretraining masks frames through HubertModel's masked_spec_embed, which "
                "needs apply_spec_augment=True in the config."
            )
        self.hubert = HubertModel(config)
        self.final_proj = torch.nn.Linear(config.hidden_size, final_dim)
        self.label_embeddings = torch.nn.Parameter(torch.empty(num_classes, final_dim))
        torch.nn.init.uniform_(self.label_embeddings)  # fairseq's label_embs_concat init
        self.logit_temp = float(logit_temp)
        self.feature_grad_mult = float(feature_grad_mult)
        self._feature_penalty = None
        self.hubert.feature_extractor.register_forward_hook(self._conv_features_hook)

    def _conv_features_hook(self, module, inputs, output):
        # As fairseq's forward_features: the gradient is scaled first, and the penalty taken on
        # the scaled features, so that the penalty's gradient is scaled too.
        if self.feature_grad_mult != 1.0 and torch.is_grad_enabled():
            output = _GradScale.apply(output, self.feature_grad_mult)
        self._feature_penalty = output.float().pow(2).mean()
        return output

    def forward(self, wav: torch.Tensor, mask: torch.Tensor):
        """Logits ``(B, frames, num_classes)`` of every frame, and the feature penalty.

        Arguments
        ---------
        wav : torch.Tensor
            ``(B, T)`` waveforms of one length (the pretraining crops batches).
        mask : torch.Tensor
            ``(B, frames)`` bool: frames replaced by the mask embedding.
        """
        hidden = self.hubert(wav, mask_time_indices=mask).last_hidden_state
        projected = self.final_proj(hidden)
        # Cosine similarity with every cluster embedding, as one matrix product.
        normalize = torch.nn.functional.normalize
        logits = normalize(projected.float(), dim=-1) @ normalize(self.label_embeddings, dim=-1).T
        return logits / self.logit_temp, self._feature_penalty
