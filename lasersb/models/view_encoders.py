"""How the two views of a soft-DTW SSFT pair are encoded: LASER's shared upstream, SCORE's target.

The LASER Brain (:class:`lasersb.brains.laser.LaserBrain`) compares an utterance with its
perturbed copy. The two releases it reproduces encode the pair differently, and the YAML picks
the object (``view_encoder``):

- :class:`SharedViewEncoder` (LASER, ``Trikaldarshi/LASER``): both views through the upstream
  being fine-tuned, in one padded batch, then the projection.
- :class:`FrozenTargetViewEncoder` (SCORE, ``Trikaldarshi/SCORE_Finetuning``,
  ``content_preserving_hubert/expert.py``): the first view through the upstream being
  fine-tuned, the second through a frozen copy of the *original* upstream (the module-level
  ``model_ssl`` under ``torch.no_grad()``), both through the same trained projection.
  :class:`FrozenUpstream` is that copy: never trained, but (as the release's copy, which is never
  put in eval mode) with its dropout active while training.

Both take the Brain's modules (``self.modules`` in training, ``self.unwrapped`` on one rank)
and return ``(z_a, frame_lens_a, z_b, frame_lens_b)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lasersb.augment.views import stack_views


class SharedViewEncoder:
    """Both views through ``modules.upstream`` (one padded batch) and ``modules.projection``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> from lasersb.models.projection import NormalisedProjection
    >>> up = SSLUpstream(build_tiny_upstream("hubert", pathlib.Path(tempfile.mkdtemp()) / "h"))
    >>> modules = nn.ModuleDict({"upstream": up, "projection": NormalisedProjection(64, 8)})
    >>> z_a, n_a, z_b, n_b = SharedViewEncoder()(
    ...     modules, torch.randn(2, 3200), torch.ones(2), torch.randn(2, 1600), torch.ones(2))
    >>> z_a.shape[-1], n_a.tolist(), n_b.tolist()
    (8, [9, 9], [4, 4])
    """

    def __call__(self, modules, view_a, lens_a, view_b, lens_b):
        stacked, stacked_lens = stack_views(view_a, lens_a, view_b, lens_b)
        out = modules.upstream(stacked, stacked_lens)
        z = modules.projection(out.last_hidden_state)
        frame_lens = out.frame_lens.to(z.device)
        half = view_a.shape[0]
        return z[:half], frame_lens[:half], z[half:], frame_lens[half:]

    def __repr__(self) -> str:
        return "SharedViewEncoder()"


class FrozenTargetViewEncoder:
    """View a through ``modules.upstream``, view b through ``modules.target_upstream`` (no grad).

    The projection runs once on both (padded to a common length), so a DDP-wrapped projection
    sees one forward per step.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> from lasersb.models.projection import NormalisedProjection
    >>> folder = build_tiny_upstream("hubert", pathlib.Path(tempfile.mkdtemp()) / "h")
    >>> modules = nn.ModuleDict({"upstream": SSLUpstream(folder, trainable_layers=1),
    ...                          "target_upstream": FrozenUpstream(folder),
    ...                          "projection": NormalisedProjection(64, 8)})
    >>> z_a, n_a, z_b, n_b = FrozenTargetViewEncoder()(
    ...     modules, torch.randn(2, 3200), torch.ones(2), torch.randn(2, 1600), torch.ones(2))
    >>> z_a.shape, z_b.shape, z_a.requires_grad
    (torch.Size([2, 9, 8]), torch.Size([2, 4, 8]), True)
    """

    def __call__(self, modules, view_a, lens_a, view_b, lens_b):
        online = modules.upstream(view_a, lens_a)
        with torch.no_grad():
            target = modules.target_upstream(view_b, lens_b)
        h_a, h_b = online.last_hidden_state, target.last_hidden_state.detach()
        t_a, t_b = h_a.shape[1], h_b.shape[1]
        length = max(t_a, t_b)
        hidden = torch.cat(
            [F.pad(h_a, (0, 0, 0, length - t_a)), F.pad(h_b.to(h_a.dtype), (0, 0, 0, length - t_b))]
        )
        z = modules.projection(hidden)
        half = view_a.shape[0]
        return (
            z[:half, :t_a],
            online.frame_lens.to(z.device),
            z[half:, :t_b],
            target.frame_lens.to(z.device),
        )

    def __repr__(self) -> str:
        return "FrozenTargetViewEncoder()"


class FrozenUpstream(nn.Module):
    """A frozen copy of an upstream (SCORE's target), optionally with dropout while training.

    Arguments
    ---------
    source : str or os.PathLike
        Hub id or local HF folder (the *original* checkpoint).
    dropout : bool
        ``True``: the model follows ``train()``/``eval()`` (dropout active in training, as the
        SCORE release's target copy, which is never put in eval mode); ``False``: always eval.
    exact_padding : bool
        See :class:`lasersb.models.upstream.SSLUpstream`.
    config_overrides : dict, optional
        Config attributes set before loading (the dropout rates; see ``SSLUpstream``).

    Example
    -------
    >>> import tempfile, pathlib
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> target = FrozenUpstream(build_tiny_upstream("hubert", pathlib.Path(tempfile.mkdtemp())))
    >>> _ = target.train()
    >>> target.upstream.model.training, any(p.requires_grad for p in target.parameters())
    (True, False)
    """

    def __init__(self, source, dropout: bool = True, exact_padding: bool = False,
                 config_overrides=None):  # fmt: skip
        super().__init__()
        from lasersb.models.upstream import SSLUpstream

        self.upstream = SSLUpstream(
            source,
            trainable_layers=0,
            output_hidden_states=False,
            exact_padding=exact_padding,
            config_overrides=config_overrides,
        )
        self.dropout = bool(dropout)
        self.upstream.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        """Train/eval mode; the model's dropout follows ``mode`` only when ``dropout``."""
        super().train(mode)
        self.upstream.model.train(bool(mode and self.dropout))
        return self

    def forward(self, wavs, wav_lens=None):
        """See :meth:`lasersb.models.upstream.SSLUpstream.forward`."""
        return self.upstream(wavs, wav_lens)
