"""Which parameters of an SSL encoder are trained: adapters, full fine-tuning or frozen.

:func:`configure_encoder` sets up one of the three settings of adapter transfer (Thomas et
al., ICASSP 2022) on an :class:`lasersb.models.upstream.SSLUpstream` and its task head, and
returns the parameter accounting; :class:`TrainableParameters` checkpoints only the trainable
parameters of a module (the adapters, layer norms and head: a small checkpoint in the adapter
setting), as a SpeechBrain recoverable.
"""

from __future__ import annotations

import logging

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from lasersb.models import adapters as adapter_lib

logger = logging.getLogger(__name__)

__all__ = ["FINETUNE_MODES", "TrainableParameters", "configure_encoder"]

FINETUNE_MODES = ("adapters", "full", "frozen")


@register_checkpoint_hooks
class TrainableParameters:
    """Checkpoint only the trainable parameters of a module (adapters, norms, head...).

    Arguments
    ---------
    module : torch.nn.Module
        The module whose ``requires_grad`` parameters are saved and restored.

    Example
    -------
    >>> import tempfile, pathlib
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> _ = net[0].requires_grad_(False)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "params.ckpt"
    >>> TrainableParameters(net).save(path)
    >>> sorted(torch.load(path, weights_only=True))
    ['1.bias', '1.weight']
    >>> TrainableParameters(net).load(path)
    """

    def __init__(self, module):
        self.module = module

    def state_dict(self) -> dict:
        """The trainable parameters (CPU copies)."""
        return {
            name: param.detach().cpu().clone()
            for name, param in self.module.named_parameters()
            if param.requires_grad
        }

    @mark_as_saver
    def save(self, path):
        """Write the trainable parameters to ``path``."""
        torch.save(self.state_dict(), path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the parameters saved in ``path`` (names must exist in the module)."""
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = dict(self.module.named_parameters())
        unknown = [name for name in state if name not in own]
        if unknown:
            raise ValueError(
                f"Checkpoint {path} has parameters this model lacks ({unknown[:3]}...): it was "
                "written with another adapter/fine-tuning configuration; use a new output_folder."
            )
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device))


def configure_encoder(
    upstream,
    head,
    finetune="adapters",
    adapter_layers="all",
    adapter_bottleneck=256,
    adapter_positions=adapter_lib.POSITIONS,
    adapter_layer_norm=False,
    adapter_activation="gelu",
    adapter_dropout=0.0,
    train_layer_norms=True,
):
    """Insert adapters (``finetune="adapters"``) and set which parameters are trained.

    Arguments
    ---------
    upstream : lasersb.models.upstream.SSLUpstream
        The encoder.
    head : torch.nn.Module
        The task head (always trained).
    finetune : str
        ``"adapters"``, ``"full"`` (all but the CNN) or ``"frozen"`` (head only).
    adapter_layers, adapter_bottleneck, adapter_positions, adapter_layer_norm,
    adapter_activation, adapter_dropout
        Passed to :func:`lasersb.models.adapters.add_adapters`.
    train_layer_norms : bool
        With adapters, also train the encoder's layer norms (as in the paper).

    Returns
    -------
    report : dict
        Parameter accounting (:func:`lasersb.models.adapters.parameter_report`).
    table : str
        The same as a Markdown table.

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.heads import LinearCTCHead
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> upstream = SSLUpstream(build_tiny_upstream("wav2vec2", tempfile.mkdtemp()))
    >>> head = LinearCTCHead(upstream.hidden_size, 29)
    >>> report, table = configure_encoder(upstream, head, finetune="frozen")
    >>> report["total"]["trainable"] == report["head"]["total"]
    True
    """
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}.")
    if finetune == "adapters":
        existing = adapter_lib.adapter_config(upstream)
        if existing:
            # The upstream came with adapters (an SSFT export with use_adapters): fine-tune that
            # set only if it is the one asked for, never silently in place of it.
            wanted = {
                "layers": adapter_lib.resolve_layer_indices(adapter_layers, existing["num_layers"]),
                "positions": [
                    p
                    for p in adapter_lib.POSITIONS
                    if p
                    in (
                        (adapter_positions,)
                        if isinstance(adapter_positions, str)
                        else adapter_positions
                    )
                ],
                "bottleneck": int(adapter_bottleneck),
                "layer_norm": bool(adapter_layer_norm),
            }
            if {key: existing[key] for key in wanted} != wanted:
                raise ValueError(
                    f"The upstream already carries lasersb adapters {existing} (an export with "
                    f"adapters), not the set asked for ({wanted}). Use the original upstream as "
                    "upstream_source, or ask for the same adapter set to fine-tune it further."
                )
            logger.info("Fine-tuning the adapters the upstream carries: %s", existing)
        else:
            adapter_lib.add_adapters(
                upstream,
                layers=adapter_layers,
                bottleneck=adapter_bottleneck,
                positions=adapter_positions,
                layer_norm=adapter_layer_norm,
                activation=adapter_activation,
                dropout=adapter_dropout,
            )
        adapter_lib.mark_trainable(
            upstream, adapters=True, layer_norms=train_layer_norms, extra_modules=[head]
        )
    elif finetune == "frozen":
        adapter_lib.mark_trainable(upstream, adapters=False, extra_modules=[head])
    else:
        upstream.requires_grad_(True)
        for module in adapter_lib._feature_encoder_modules(upstream):
            module.requires_grad_(False)
        head.requires_grad_(True)
    return adapter_lib.parameter_report(adapter_lib.parameter_groups(upstream, head))
