"""Frozen-upstream front for SUPERB-style downstream tasks.

:class:`WeightedLayerSum` is s3prl's "featurizer": a learnable softmax-weighted sum over all the
hidden states of a frozen self-supervised upstream (the conv/embedding output and every
transformer layer), optionally with a parameter-free layer norm applied to each layer first.
:class:`FeatureSpecAugment` is a small batched SpecAugment (time warp, time masks, feature
masks) applied to the weighted-sum features during training, as in s3prl's ASR downstream; it
only touches the valid (unpadded) frames of each utterance.

Both take integer frame counts (``frame_lens``, as in ``UpstreamOutput.frame_lens``) or a
boolean ``padding_mask`` (``True`` marks padded frames) to honour padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def lengths_to_padding_mask(frame_lens, max_len: int) -> torch.Tensor:
    """Return a ``(B, max_len)`` boolean mask that is ``True`` on padded frames.

    Arguments
    ---------
    frame_lens : torch.Tensor or Sequence[int]
        Integer number of valid frames per utterance, shape ``(B,)``.
    max_len : int
        Padded length of the batch.

    Returns
    -------
    torch.Tensor
        Boolean tensor ``(B, max_len)``.

    Example
    -------
    >>> lengths_to_padding_mask(torch.tensor([2, 3]), 3)
    tensor([[False, False,  True],
            [False, False, False]])
    """
    frame_lens = torch.as_tensor(frame_lens)
    steps = torch.arange(max_len, device=frame_lens.device)
    return steps.unsqueeze(0) >= frame_lens.unsqueeze(1)


def masked_mean(features: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
    """Average ``(B, F, H)`` features over the first ``frame_lens[b]`` frames of each row.

    Kept instead of ``speechbrain.nnet.pooling.StatisticsPooling(return_std=False)``, which
    adds Gaussian noise to the mean (it takes relative lengths, too).

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    >>> masked_mean(x, torch.tensor([2, 3])).flatten().tolist()
    [2.0, 4.0]
    """
    # The mask of lengths_to_padding_mask, not speechbrain's length_to_mask (the same values):
    # this module imports on the bare GPU image without speechbrain (bench/gpu_check.py).
    valid = ~lengths_to_padding_mask(frame_lens.to(features.device), features.shape[1])
    mask = valid.to(features.dtype)
    total = (features * mask.unsqueeze(-1)).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def stack_hidden_states(hidden_states) -> torch.Tensor:
    """Stack a tuple/list of ``(B, F, H)`` hidden states into one ``(L, B, F, H)`` tensor.

    A tensor that is already 4-D is returned unchanged.

    Arguments
    ---------
    hidden_states : Sequence[torch.Tensor] or torch.Tensor
        The upstream's hidden states.

    Returns
    -------
    torch.Tensor
        ``(L, B, F, H)``.

    Example
    -------
    >>> stack_hidden_states((torch.zeros(2, 5, 4), torch.ones(2, 5, 4))).shape
    torch.Size([2, 2, 5, 4])
    """
    if isinstance(hidden_states, torch.Tensor):
        if hidden_states.dim() != 4:
            raise ValueError(
                "hidden_states must be a (L, B, F, H) tensor or a sequence of (B, F, H) tensors, "
                f"got a tensor of shape {tuple(hidden_states.shape)}"
            )
        return hidden_states
    hidden_states = list(hidden_states)
    if not hidden_states:
        raise ValueError("hidden_states is empty: the upstream returned no layers")
    shapes = {tuple(h.shape) for h in hidden_states}
    if len(shapes) != 1:
        raise ValueError(f"All hidden states must have the same (B, F, H) shape, got {shapes}")
    return torch.stack(hidden_states, dim=0)


class WeightedLayerSum(nn.Module):
    """Learnable softmax-weighted sum over the hidden layers of a frozen upstream.

    The layer logits start at zero, so the initial weights are uniform (``1 / num_layers``);
    the softmax keeps them a probability distribution throughout training. Padded frames of
    the output are set to zero.

    Arguments
    ---------
    num_layers : int
        Number of hidden states the upstream returns (conv/embedding output + each layer,
        i.e. ``upstream.num_layers + 1`` for an ``SSLUpstream``).
    layer_norm : bool
        Apply a parameter-free layer norm over the feature dimension of each layer before the
        weighted sum (s3prl's ``normalize`` option).
    eps : float
        Epsilon of the layer norm.

    Example
    -------
    >>> featuriser = WeightedLayerSum(num_layers=3)
    >>> hidden = [torch.randn(2, 7, 4) for _ in range(3)]
    >>> out = featuriser(hidden, frame_lens=torch.tensor([7, 5]))
    >>> out.shape
    torch.Size([2, 7, 4])
    >>> float(out[1, 5:].detach().abs().sum())
    0.0
    >>> featuriser.layer_weights
    tensor([0.3333, 0.3333, 0.3333])
    """

    def __init__(self, num_layers: int, layer_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        num_layers = int(num_layers)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.layer_norm = bool(layer_norm)
        self.eps = float(eps)
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))

    @property
    def layer_weights(self) -> torch.Tensor:
        """The current softmax weights (a detached probability distribution over layers)."""
        return F.softmax(self.layer_logits.detach(), dim=0)

    def forward(self, hidden_states, frame_lens=None, padding_mask=None) -> torch.Tensor:
        """Weighted sum of the hidden states.

        Arguments
        ---------
        hidden_states : Sequence[torch.Tensor] or torch.Tensor
            ``num_layers`` tensors of shape ``(B, F, H)`` or one ``(L, B, F, H)`` tensor.
        frame_lens : torch.Tensor, optional
            Integer valid-frame counts ``(B,)``.
        padding_mask : torch.Tensor, optional
            Boolean ``(B, F)``, ``True`` on padded frames (alternative to ``frame_lens``).

        Returns
        -------
        torch.Tensor
            ``(B, F, H)`` features, zero on padded frames.
        """
        stacked = stack_hidden_states(hidden_states)
        if stacked.shape[0] != self.num_layers:
            raise ValueError(
                f"WeightedLayerSum was built for {self.num_layers} hidden states but received "
                f"{stacked.shape[0]}; set num_layers to the upstream's num_layers + 1 "
                "(embedding output + each layer)."
            )
        stacked = stacked.to(self.layer_logits.dtype)
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:], eps=self.eps)
        weights = F.softmax(self.layer_logits, dim=0)
        features = torch.einsum("l,lbfh->bfh", weights, stacked)
        mask = _resolve_padding_mask(frame_lens, padding_mask, features.shape[0], features.shape[1])
        if mask is not None:
            features = features.masked_fill(mask.to(features.device).unsqueeze(-1), 0.0)
        return features

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return f"num_layers={self.num_layers}, layer_norm={self.layer_norm}"


def _resolve_padding_mask(frame_lens, padding_mask, batch: int, max_len: int):
    """Build or check a ``(B, F)`` padding mask from ``frame_lens`` or ``padding_mask``."""
    if padding_mask is not None:
        padding_mask = torch.as_tensor(padding_mask, dtype=torch.bool)
        if tuple(padding_mask.shape) != (batch, max_len):
            raise ValueError(
                f"padding_mask has shape {tuple(padding_mask.shape)}, expected {(batch, max_len)}"
            )
        return padding_mask
    if frame_lens is None:
        return None
    frame_lens = torch.as_tensor(frame_lens)
    if frame_lens.shape != (batch,):
        raise ValueError(f"frame_lens has shape {tuple(frame_lens.shape)}, expected ({batch},)")
    if frame_lens.is_floating_point():
        raise TypeError(
            "frame_lens must hold integer frame counts (UpstreamOutput.frame_lens), not "
            "SpeechBrain relative lengths; multiply relative lengths by the padded length first."
        )
    return lengths_to_padding_mask(frame_lens, max_len)


class FeatureSpecAugment(nn.Module):
    """Batched SpecAugment on frame-level features ``(B, F, D)``, honouring padding.

    Follows s3prl's ASR ``specaug`` block: an optional time warp, ``num_time_masks`` time
    masks with widths drawn uniformly from ``time_mask_width_range`` and ``num_freq_masks``
    feature masks with widths from ``freq_mask_width_range``. Masks and warps stay inside each
    utterance's valid frames; padded frames are left untouched. The module is the identity in
    ``eval()`` mode. Masked values are replaced by zeros (the features are centred after a
    layer norm or close to it for SSL hidden states) or by the utterance mean.

    Arguments
    ---------
    time_warp_window : int
        Maximum shift of the warp point, in frames (0 disables time warping).
    time_mask_width_range : Sequence[int]
        ``[min, max]`` width of a time mask, in frames (max exclusive, as in s3prl).
    num_time_masks : int
        Number of time masks per utterance.
    freq_mask_width_range : Sequence[int]
        ``[min, max]`` width of a feature mask, in feature bins (max exclusive).
    num_freq_masks : int
        Number of feature masks per utterance.
    replace_with : str
        ``"zero"`` or ``"mean"`` (per-utterance mean over valid frames).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> aug = FeatureSpecAugment(time_mask_width_range=(2, 4), freq_mask_width_range=(1, 3))
    >>> feats = torch.ones(2, 20, 8)
    >>> out = aug(feats, frame_lens=torch.tensor([20, 12]))
    >>> out.shape
    torch.Size([2, 20, 8])
    >>> bool((out == 0).any()), bool((out[1, 12:] == 1).all())
    (True, True)
    >>> bool(torch.equal(aug.eval()(feats, torch.tensor([20, 12])), feats))
    True
    """

    def __init__(
        self,
        time_warp_window: int = 5,
        time_mask_width_range: Sequence[int] = (0, 40),
        num_time_masks: int = 2,
        freq_mask_width_range: Sequence[int] = (0, 50),
        num_freq_masks: int = 4,
        replace_with: str = "zero",
    ):
        super().__init__()
        self.time_warp_window = int(time_warp_window)
        self.time_mask_width_range = _check_range(time_mask_width_range, "time_mask_width_range")
        self.num_time_masks = int(num_time_masks)
        self.freq_mask_width_range = _check_range(freq_mask_width_range, "freq_mask_width_range")
        self.num_freq_masks = int(num_freq_masks)
        if replace_with not in ("zero", "mean"):
            raise ValueError(f"replace_with must be 'zero' or 'mean', got {replace_with!r}")
        self.replace_with = replace_with
        if self.time_warp_window < 0 or self.num_time_masks < 0 or self.num_freq_masks < 0:
            raise ValueError("time_warp_window, num_time_masks and num_freq_masks must be >= 0")

    def forward(self, features: torch.Tensor, frame_lens=None) -> torch.Tensor:
        """Augment ``features`` (training mode only).

        Arguments
        ---------
        features : torch.Tensor
            ``(B, F, D)`` features.
        frame_lens : torch.Tensor, optional
            Integer valid-frame counts ``(B,)``; all frames are valid when omitted.

        Returns
        -------
        torch.Tensor
            Augmented ``(B, F, D)`` features (a new tensor; the input is not modified).
        """
        if not self.training:
            return features
        if features.dim() != 3:
            raise ValueError(f"features must be (B, F, D), got shape {tuple(features.shape)}")
        batch, max_len, dim = features.shape
        device = features.device
        if frame_lens is None:
            frame_lens = torch.full((batch,), max_len, dtype=torch.long, device=device)
        frame_lens = torch.as_tensor(frame_lens, device=device).long().clamp(max=max_len)

        if self.time_warp_window > 0:
            features = self._time_warp(features, frame_lens)

        valid = ~lengths_to_padding_mask(frame_lens, max_len)  # (B, F)
        drop = torch.zeros(batch, max_len, dim, dtype=torch.bool, device=device)
        if self.num_time_masks > 0:
            time_mask = _random_band_mask(
                batch, self.num_time_masks, self.time_mask_width_range, frame_lens, max_len, device
            )
            drop |= time_mask.unsqueeze(-1)
        if self.num_freq_masks > 0:
            full = torch.full((batch,), dim, dtype=torch.long, device=device)
            freq_mask = _random_band_mask(
                batch, self.num_freq_masks, self.freq_mask_width_range, full, dim, device
            )
            drop |= freq_mask.unsqueeze(1)
        drop &= valid.unsqueeze(-1)

        if self.replace_with == "zero":
            fill = torch.zeros((), dtype=features.dtype, device=device)
        else:
            denom = frame_lens.clamp(min=1).to(features.dtype).view(batch, 1, 1)
            fill = (features * valid.unsqueeze(-1)).sum(dim=1, keepdim=True) / denom
            fill = fill.detach()
        return torch.where(drop, fill, features)

    def _time_warp(self, features: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        """Warp each utterance around a random centre (piecewise-linear, valid frames only)."""
        window = self.time_warp_window
        out = features.clone()
        for i, length in enumerate(frame_lens.tolist()):
            if length - window <= window + 1:
                continue  # too short to warp
            centre = int(torch.randint(window + 1, length - window, (1,)))
            warped = int(torch.randint(centre - window, centre + window + 1, (1,)))
            warped = max(1, min(length - 1, warped))
            if warped == centre:
                continue
            seg = features[i, :length].transpose(0, 1).unsqueeze(0)  # (1, D, length)
            left = F.interpolate(seg[..., :centre], size=warped, mode="linear", align_corners=False)
            right = F.interpolate(
                seg[..., centre:], size=length - warped, mode="linear", align_corners=False
            )
            out[i, :length] = torch.cat([left, right], dim=-1).squeeze(0).transpose(0, 1)
        return out

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return (
            f"time_warp_window={self.time_warp_window}, "
            f"time_mask_width_range={self.time_mask_width_range}, "
            f"num_time_masks={self.num_time_masks}, "
            f"freq_mask_width_range={self.freq_mask_width_range}, "
            f"num_freq_masks={self.num_freq_masks}, replace_with={self.replace_with!r}"
        )


def _check_range(value, name: str) -> tuple[int, int]:
    """Validate a ``[min, max]`` width range."""
    low, high = (int(v) for v in value)
    if low < 0 or high < low:
        raise ValueError(f"{name} must be [min, max] with 0 <= min <= max, got {list(value)}")
    return low, high


def _random_band_mask(batch, num_masks, width_range, lens, size, device) -> torch.Tensor:
    """``(B, size)`` mask with ``num_masks`` random bands per row inside ``[0, lens[b])``."""
    low, high = width_range
    widths = torch.randint(low, max(high, low + 1), (batch, num_masks), device=device)
    widths = torch.minimum(widths, lens.view(-1, 1))
    room = (lens.view(-1, 1) - widths).clamp(min=0)
    starts = (torch.rand(batch, num_masks, device=device) * (room + 1).float()).long()
    starts = torch.minimum(starts, room)
    steps = torch.arange(size, device=device).view(1, 1, -1)
    bands = (steps >= starts.unsqueeze(-1)) & (steps < (starts + widths).unsqueeze(-1))
    return bands.any(dim=1)
