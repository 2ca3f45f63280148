"""Tiny randomly initialised HuBERT / WavLM / wav2vec 2.0 upstreams for tests and ``--mini`` runs.

The models are real ``transformers`` architectures (``HubertModel``, ``WavLMModel``,
``Wav2Vec2Model``) with the *base* checkpoints' structure kept where it matters to the code that
uses them, and everything else shrunk so that a forward pass costs milliseconds on a CPU:

- the conv feature encoder keeps the real 7 layers, kernels ``(10,3,3,3,3,2,2)`` and strides
  ``(5,2,2,2,2,2,2)`` (total stride 320 samples = 20 ms, receptive field 400 samples), with
  group norm in the first layer as in the base checkpoints, but only ``conv_dim`` channels;
- the convolutional positional embedding is kept (16 taps, 4 groups instead of 128 / 16);
- a few post-norm transformer layers (default 3) of width ``hidden_size`` (default 64);
- WavLM's gated relative position bias with 32 buckets instead of 320;
- SpecAugment/LayerDrop settings as in the released configs (``apply_spec_augment=True``,
  ``mask_time_prob=0.05``, ``layerdrop=0.1``) so that :func:`lasersb.models.upstream.load_upstream`
  is exercised on what it must switch off.

Each folder is written with ``save_pretrained`` (safetensors) next to a
``Wav2Vec2FeatureExtractor`` config (``preprocessor_config.json``) that follows the checkpoint
family it stands for (see :data:`FEATURE_EXTRACTOR_SETTINGS`). Weights are a pure function of
``(kind, sizes, seed)``: the global RNG is forked, so building a model does not disturb it.

Command line: ``lasersb-tiny-upstream --kind hubert --out DIR`` (or
``python -m lasersb.models.tiny_upstream``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

__all__ = ["FEATURE_EXTRACTOR_SETTINGS", "KINDS", "build_tiny_upstream", "tiny_config", "main"]

KINDS = ("hubert", "wavlm", "wav2vec2")

#: ``Wav2Vec2FeatureExtractor`` settings per kind, as in the checkpoint each kind stands for:
#: ``facebook/hubert-base-ls960`` (no normalisation, no attention mask),
#: ``microsoft/wavlm-base-plus`` (no normalisation, attention mask) and
#: ``facebook/wav2vec2-base`` (per-utterance normalisation, no attention mask). Between them
#: the three tiny models cover every input-handling path of
#: :class:`~lasersb.models.upstream.SSLUpstream`.
FEATURE_EXTRACTOR_SETTINGS = {
    "hubert": {"do_normalize": False, "return_attention_mask": False},
    "wavlm": {"do_normalize": False, "return_attention_mask": True},
    "wav2vec2": {"do_normalize": True, "return_attention_mask": False},
}

_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)


def tiny_config(
    kind: str,
    hidden_size: int = 64,
    num_layers: int = 3,
    conv_dim: int = 32,
    **overrides,
):
    """Return the ``transformers`` config of a tiny upstream of the given kind.

    Arguments
    ---------
    kind : str
        ``"hubert"``, ``"wavlm"`` or ``"wav2vec2"``.
    hidden_size : int
        Transformer width (a multiple of 16: 4 attention heads, 4 positional conv groups).
    num_layers : int
        Number of transformer layers.
    conv_dim : int
        Channels of every conv feature-encoder layer.
    **overrides
        Any other config attribute (e.g. ``feat_extract_norm="layer",
        do_stable_layer_norm=True`` for a "large"-style pre-norm model).

    Returns
    -------
    transformers.PretrainedConfig
        ``HubertConfig``, ``WavLMConfig`` or ``Wav2Vec2Config``.

    Example
    -------
    >>> config = tiny_config("wavlm")
    >>> config.model_type, config.hidden_size, config.num_hidden_layers, config.num_buckets
    ('wavlm', 64, 3, 32)
    """
    from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig

    if kind not in KINDS:
        raise ValueError(f"Unknown tiny upstream kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if hidden_size % 16 != 0 or hidden_size <= 0:
        raise ValueError(f"hidden_size must be a positive multiple of 16, got {hidden_size}.")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    common = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        conv_dim=(conv_dim,) * len(_CONV_KERNEL),
        conv_kernel=_CONV_KERNEL,
        conv_stride=_CONV_STRIDE,
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        apply_spec_augment=True,
        mask_time_prob=0.05,
        mask_time_length=10,
        layerdrop=0.1,
        vocab_size=32,
    )
    if kind == "wavlm":
        common.update(num_buckets=32, max_bucket_distance=800)
    common.update(overrides)
    config_class = {"hubert": HubertConfig, "wavlm": WavLMConfig, "wav2vec2": Wav2Vec2Config}[kind]
    return config_class(**common)


def build_tiny_upstream(
    kind: str,
    out_dir,
    hidden_size: int = 64,
    num_layers: int = 3,
    seed: int = 0,
    **config_overrides,
) -> Path:
    """Build a tiny random upstream and save it as a local Hugging Face folder.

    Arguments
    ---------
    kind : str
        ``"hubert"``, ``"wavlm"`` or ``"wav2vec2"``.
    out_dir : str or os.PathLike
        Folder to write (created; existing files of the same names are overwritten).
    hidden_size : int
        Transformer width.
    num_layers : int
        Number of transformer layers.
    seed : int
        Seed of the random initialisation (the weights are a deterministic function of it).
    **config_overrides
        Passed to :func:`tiny_config` (config attributes), plus ``do_normalize`` /
        ``return_attention_mask`` for the feature extractor config.

    Returns
    -------
    pathlib.Path
        ``out_dir``, loadable with ``transformers.AutoModel.from_pretrained`` and
        :func:`lasersb.models.upstream.load_upstream`.

    Example
    -------
    >>> import tempfile
    >>> folder = build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "tiny")
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    from transformers import AutoModel

    extractor_settings = dict(FEATURE_EXTRACTOR_SETTINGS.get(kind, {}))
    for key in ("do_normalize", "return_attention_mask"):
        if key in config_overrides:
            extractor_settings[key] = bool(config_overrides.pop(key))
    config = tiny_config(kind, hidden_size=hidden_size, num_layers=num_layers, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    model = model.float().eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    write_feature_extractor(out_dir, kind, **extractor_settings)
    return out_dir


def write_feature_extractor(out_dir, kind: str, **settings) -> Path:
    """Write the ``preprocessor_config.json`` of a checkpoint of the given family.

    Arguments
    ---------
    out_dir : str or os.PathLike
        The model folder.
    kind : str
        ``"hubert"``, ``"wavlm"`` or ``"wav2vec2"``: the settings of
        :data:`FEATURE_EXTRACTOR_SETTINGS`.
    **settings
        ``do_normalize`` / ``return_attention_mask`` overriding the family's.

    Example
    -------
    >>> import json, tempfile
    >>> out = write_feature_extractor(tempfile.mkdtemp(), "hubert")
    >>> json.loads((out / "preprocessor_config.json").read_text())["do_normalize"]
    False
    """
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        padding_side="right",
        **{**FEATURE_EXTRACTOR_SETTINGS[kind], **settings},
    )
    out_dir = Path(out_dir)
    extractor.save_pretrained(out_dir)
    return out_dir


def main(argv=None) -> None:
    """Command line entry point (``lasersb-tiny-upstream``).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "w2v"
    >>> main(["--kind", "wav2vec2", "--out", str(out)])  # doctest: +ELLIPSIS
    Wrote tiny wav2vec2 upstream to ...w2v
    >>> (out / "model.safetensors").is_file()
    True
    """
    parser = argparse.ArgumentParser(
        prog="lasersb-tiny-upstream",
        description="Write a tiny randomly initialised HuBERT/WavLM/wav2vec 2.0 upstream "
        "(Hugging Face folder: config.json, model.safetensors, preprocessor_config.json).",
    )
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = build_tiny_upstream(
        args.kind,
        args.out,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        seed=args.seed,
    )
    print(f"Wrote tiny {args.kind} upstream to {folder}")


if __name__ == "__main__":
    main()
