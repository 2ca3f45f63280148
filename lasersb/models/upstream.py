"""Self-supervised speech upstreams (HuBERT, WavLM, wav2vec 2.0) from Hugging Face ``transformers``.

:func:`load_upstream` loads a hub id or a local folder through the same code path
(``AutoConfig`` + ``AutoModel.from_pretrained``), offline from the Hugging Face cache when
``HF_HUB_OFFLINE`` is set, and switches off what breaks frozen-feature use:

- ``apply_spec_augment=False``: no SpecAugment-style time/feature masking inside the model in
  training mode (``mask_time_prob`` is left as saved so the checkpoint's ``masked_spec_embed``
  still loads without an "unused weights" warning; with ``apply_spec_augment=False`` it is never
  used);
- ``layerdrop=0.0``: every transformer layer always runs, so the number and meaning of the hidden
  states never depend on the RNG.

:class:`SSLUpstream` wraps the model for the recipes: it takes a padded batch with SpeechBrain
relative lengths, applies the checkpoint family's input convention, and returns
:class:`UpstreamOutput` (all hidden states, valid frame counts and the padding mask).

Input convention (followed per checkpoint, from its ``preprocessor_config.json``):

- ``do_normalize`` (wav2vec 2.0 base/large, WavLM large): each utterance is normalised to zero
  mean / unit variance over its *valid* samples only; padding stays exactly zero.
- ``return_attention_mask`` (wav2vec2-large-lv60, WavLM, HuBERT large...): the sample-level
  attention mask is passed. Checkpoints without it (hubert-base-ls960, wav2vec2-base) were
  pretrained without padding masks, and the Hugging Face documentation says to zero-pad their
  input and *not* pass ``attention_mask`` (it degrades their batched output). Either way the
  values on padded frames are meaningless: consumers must use ``frame_lens``/``padding_mask``.
- Models with ``feat_extract_norm="group"`` (all *base* checkpoints) normalise the first conv
  layer over the whole padded length, so a padded utterance's valid frames are only
  approximately equal to those of the same utterance run alone. ``"layer"`` models with an
  attention mask are exact up to float error.

Weights are loaded strictly: a checkpoint key the model does not use, a parameter the checkpoint
lacks, or a shape mismatch raises :class:`UpstreamWeightsError` naming the keys (transformers
would only print a load report and go on with random or dropped weights). The few keys that
released checkpoints carry for heads the bare encoder does not have are listed, with the reason,
in :data:`KNOWN_UNUSED_PREFIXES`; ``strict_weights=False`` turns the error into a warning.

Adapter exports: a folder written by :meth:`SSLUpstream.save_hf` from a model with lasersb
bottleneck adapters (LASER SSFT with ``use_adapters``) keeps the adapters' weights in its
safetensors file and their configuration in ``config.json`` (key :data:`ADAPTER_EXPORT_KEY`).
:func:`load_upstream` inserts the adapters with that configuration and loads their weights, so
the hidden states are those of the fine-tuned model. Such a ``config.json`` has the
``model_type`` ``"<base>-with-lasersb-adapters (...)"``: plain
``transformers.AutoModel.from_pretrained`` refuses it with an error that names the loader,
instead of silently returning the base model without the adapters (transformers has no place
for extra modules in a stock config; registering lasersb classes with ``AutoModel`` would make
loading depend on an import side effect). Exports written before this convention (a plain
``config.json``, adapter keys in the weights, ``lasersb_export.json`` naming
``lasersb_adapters.pt``) are read too. An adapter set saved alone
(:func:`lasersb.models.adapters.save_adapters`, e.g. the ``adapters.pt`` of the adapters
recipe) is applied on top of any upstream with ``adapters=<file>``. Loaded adapters are frozen
unless ``SSLUpstream(trainable_adapters=True)``.

Trainable parameters (``trainable_layers``): whole transformer layers and, by default
(``train_encoder_layer_norm=True``), the encoder layer norm ``model.encoder.layer_norm``. That is
the set the LASER release trains: its ``runner_part_freeze.py`` freezes s3prl's HuBERT/WavLM
base parameters by position, which, replayed on s3prl's model code, leaves the top two layers
*and* ``model.encoder.layer_norm`` trainable (in post-norm *base* models that norm is applied
*before* layer 0, so its gradient flows back through the frozen layers). Everything else stays
frozen (conv feature encoder, feature projection and its layer norm, convolutional positional
embedding, WavLM's relative position bias, which lives in layer 0).
``train_encoder_layer_norm=False`` trains the layers only; the final encoder layer norm of
pre-norm *large* models (``do_stable_layer_norm=True``) is applied after the last layer, so it is
then still trained together with the top layer. ``freeze_feature_encoder=False`` also trains the
conv feature encoder. ``trainable_modules`` adds submodules by their transformers name, e.g.
``["feature_projection.layer_norm"]`` (fairseq's ``model.layer_norm``, the norm of the CNN
features before the projection, which the SCORE release also trains).

Dropout rates: ``config_overrides`` (e.g. ``{"activation_dropout": 0.0}``) sets config attributes
before the model is built, so the dropout modules get those rates; the SSFT recipes use it to give
the fine-tuned model the dropouts of the fairseq/UniSpeech checkpoints the releases fine-tune
(their Hugging Face conversions' ``config.json`` may carry other rates).

Train/eval mode: with trainable parameters, ``train()`` puts the *whole* model in train mode by
default (``dropout_in_frozen=True``), as s3prl's runner does with a trainable upstream (dropout
is active in the frozen layers too; layerdrop is 0). ``dropout_in_frozen=False`` keeps the frozen
parts in eval mode, so only the trainable modules follow ``train()``/``eval()``. A fully frozen
upstream always runs in eval mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from lasersb.models import adapters as adapter_lib

__all__ = [
    "ADAPTER_EXPORT_KEY",
    "KNOWN_UNUSED_PREFIXES",
    "SSLUpstream",
    "UpstreamNotFoundError",
    "UpstreamOutput",
    "UpstreamWeightsError",
    "adapter_export_model_type",
    "apply_adapter_checkpoint",
    "check_loading_info",
    "load_upstream",
]

logger = logging.getLogger(__name__)

#: Config attributes :func:`load_upstream` sets for frozen-feature use (see the module docstring).
FROZEN_FEATURE_CONFIG = {"apply_spec_augment": False, "layerdrop": 0.0}

#: Key of ``config.json`` that holds the adapter set of an adapter export (see :meth:`save_hf`).
ADAPTER_EXPORT_KEY = "lasersb_adapters"

#: How an export's README and error messages tell users to load an adapter export.
LOAD_HINT = "lasersb.models.upstream.load_upstream(folder) or SSLUpstream(folder)"

#: ``lasersb_export.json``: what the SSFT recipe writes next to its export.
EXPORT_INFO_FILE = "lasersb_export.json"

#: Checkpoint keys (prefixes) that released checkpoints carry for parts the bare encoder loaded
#: by ``AutoModel`` does not have; dropping them changes no hidden state. Anything else unused
#: or missing is an error (:class:`UpstreamWeightsError`).
KNOWN_UNUSED_PREFIXES = {
    # wav2vec 2.0 pretraining checkpoints (facebook/wav2vec2-base, wav2vec2-large-lv60, XLS-R):
    # the codebook quantiser and the two projections of the contrastive loss, used only by
    # Wav2Vec2ForPreTraining.
    "quantizer.": "wav2vec 2.0 pretraining quantiser",
    "project_q.": "wav2vec 2.0 pretraining projection of the quantised targets",
    "project_hid.": "wav2vec 2.0 pretraining projection of the context vectors",
    # *ForCTC checkpoints (facebook/wav2vec2-base-960h, hubert-large-ls960-ft): their CTC output
    # layer; the upstream is the encoder below it.
    "lm_head.": "CTC output layer of a fine-tuned *ForCTC checkpoint",
    # The learned mask embedding of SpecAugment-style masking: the model has it only when the
    # config asks for masking (mask_time_prob or mask_feature_prob > 0), and frozen-feature use
    # never masks (apply_spec_augment=False). Unused when the model lacks it; when the
    # checkpoint lacks it, masked training starts it from random, as transformers does.
    "masked_spec_embed": "SpecAugment mask embedding",
}


class UpstreamNotFoundError(FileNotFoundError):
    """The upstream could not be found (missing local folder, or a hub id absent offline)."""


class UpstreamWeightsError(ValueError):
    """The upstream's weights do not match its model (unused, missing or mis-shaped keys)."""


class UpstreamOutput(NamedTuple):
    """What :class:`SSLUpstream` returns.

    Attributes
    ----------
    hidden_states : tuple of torch.Tensor or None
        ``L + 1`` tensors ``(B, F, H)``: the input of the first transformer layer (conv features
        after projection and positional embedding), then the output of each layer. ``None`` when
        the upstream was built with ``output_hidden_states=False``.
    last_hidden_state : torch.Tensor
        ``(B, F, H)`` output of the model (after the final layer norm for pre-norm models).
    frame_lens : torch.Tensor
        ``(B,)`` int64 number of valid frames of each utterance.
    padding_mask : torch.Tensor
        ``(B, F)`` bool, ``True`` on padded frames.
    """

    hidden_states: tuple | None
    last_hidden_state: torch.Tensor
    frame_lens: torch.Tensor
    padding_mask: torch.Tensor


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _looks_local(source: str) -> bool:
    """A path rather than a hub id (``org/name`` or ``name``)."""
    if source.startswith((".", "/", "~")) or os.path.isabs(source) or "\\" in source:
        return True
    return source.count("/") > 1 or source.endswith("/")


def _resolve_source(source) -> tuple[str, bool]:
    """Return ``(source string, is_local)``; raise a clear error for a missing local folder."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    source = str(source)
    expanded = os.path.expanduser(source)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise UpstreamNotFoundError(
                f"Upstream folder {expanded} has no config.json. Point to a folder written by "
                "`save_pretrained` (or SSLUpstream.save_hf / lasersb-tiny-upstream), or use a "
                "hub id such as facebook/hubert-base-ls960."
            )
        return expanded, True
    if os.path.exists(expanded):
        raise UpstreamNotFoundError(
            f"Upstream source {expanded} is a file; pass the folder that holds config.json and "
            "the weights."
        )
    if _looks_local(source):
        raise UpstreamNotFoundError(
            f"Upstream folder not found: {expanded}. Check the path (relative paths are resolved "
            f"from {os.getcwd()}), build a tiny test upstream with `lasersb-tiny-upstream --kind "
            "hubert --out DIR`, or use a hub id such as facebook/hubert-base-ls960."
        )
    return source, False


def adapter_export_model_type(base_model_type: str) -> str:
    """The ``model_type`` written to the ``config.json`` of an adapter export.

    Not a transformers model type on purpose: ``AutoModel``/``AutoConfig.from_pretrained``
    fail with an error that quotes it (so it says how to load the folder) instead of returning
    the base model without its adapters.

    Example
    -------
    >>> adapter_export_model_type("hubert")
    'hubert-with-lasersb-adapters (load with lasersb.models.upstream.load_upstream)'
    """
    return f"{base_model_type}-with-lasersb-adapters (load with {__name__}.load_upstream)"


@contextlib.contextmanager
def _own_load_report():
    """Silence transformers' load report: :func:`check_loading_info` reports the same keys
    (with the adapter keys lasersb loads itself left out) and raises instead of going on."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    level = report_logger.level
    report_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report_logger.setLevel(level)


def _known_unused(key: str) -> bool:
    return any(key.startswith(prefix) for prefix in KNOWN_UNUSED_PREFIXES)


def _is_adapter_key(key: str) -> bool:
    return f".{adapter_lib.ADAPTER_ATTRIBUTE}." in f".{key}"


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_loading_info(source, info: dict, strict: bool = True) -> None:
    """Raise (or warn) when ``from_pretrained`` dropped, missed or mis-shaped weights.

    Arguments
    ---------
    source : str
        The upstream, named in the message.
    info : dict
        The ``loading_info`` of ``from_pretrained(..., output_loading_info=True)``, without the
        adapter keys the caller loads itself.
    strict : bool
        ``True``: raise :class:`UpstreamWeightsError`; ``False``: log a warning and go on.

    Example
    -------
    >>> check_loading_info("w2v", {"unexpected_keys": ["quantizer.codevectors"]})
    >>> check_loading_info("x", {"unexpected_keys": ["encoder.extra.weight"]})
    Traceback (most recent call last):
    ...
    lasersb.models.upstream.UpstreamWeightsError: Upstream x: its weights do not match the model ...
    """
    unexpected = [k for k in info.get("unexpected_keys", ()) if not _known_unused(k)]
    missing = [k for k in info.get("missing_keys", ()) if not _known_unused(k)]
    mismatched = [str(k) for k in info.get("mismatched_keys", ())]
    errors = [str(e) for e in info.get("error_msgs", ())]
    ignored = sorted(k for k in info.get("unexpected_keys", ()) if _known_unused(k))
    if ignored:
        reasons = sorted(
            {
                why
                for pre, why in KNOWN_UNUSED_PREFIXES.items()
                if any(k.startswith(pre) for k in ignored)
            }
        )
        logger.info(
            "Upstream %s: checkpoint keys not used by the encoder, as expected (%s): %s",
            source,
            "; ".join(reasons),
            _listing(ignored),
        )
    problems = []
    if unexpected:
        problems.append(
            f"{len(unexpected)} checkpoint key(s) the model does not use: {_listing(unexpected)}"
        )
    if missing:
        problems.append(
            f"{len(missing)} model parameter(s) absent from the checkpoint (they "
            f"would be random): {_listing(missing)}"
        )
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if errors:
        problems.append("; ".join(errors))
    if not problems:
        return
    message = (
        f"Upstream {source}: its weights do not match the model built from its config.json: "
        + "; ".join(problems)
        + ". A folder written with lasersb adapters loads with "
        f"{LOAD_HINT}; a checkpoint of another architecture needs its own config.json. To load "
        "anyway, pass strict_weights=False (the keys above are then dropped or left random)."
    )
    if strict:
        raise UpstreamWeightsError(message)
    logger.warning(message)


def _read_checkpoint_tensors(source, keys, hub_kwargs) -> dict:
    """Read the tensors ``keys`` from the safetensors file(s) of ``source`` (sharded or not)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def _file(name, required=True):
        return cached_file(
            source, name, _raise_exceptions_for_missing_entries=required, **hub_kwargs
        )

    index = _file("model.safetensors.index.json", required=False)
    if index:
        weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
        files = sorted({weight_map[k] for k in keys if k in weight_map})
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        path = _file(name, required=False)
        if path is None:
            raise UpstreamWeightsError(
                f"Upstream {source} has adapter weights but no {name}: lasersb reads adapter "
                "weights from safetensors; re-export it with SSLUpstream.save_hf."
            )
        with safe_open(path, framework="pt") as handle:
            present = set(handle.keys())
            tensors.update({k: handle.get_tensor(k) for k in keys if k in present})
    return tensors


def _legacy_adapter_config(source, is_local) -> dict | None:
    """Adapter config of an export written before config.json carried it (its .pt next to it)."""
    if not is_local:
        return None
    info_file = Path(source) / EXPORT_INFO_FILE
    if not info_file.is_file():
        return None
    name = json.loads(info_file.read_text(encoding="utf-8")).get("adapters")
    if isinstance(name, dict):
        name = name.get("file")
    if not name or not (Path(source) / name).is_file():
        return None
    payload = torch.load(Path(source) / name, map_location="cpu", weights_only=True)
    return payload.get("config")


def _insert_saved_adapters(model, source, config, adapter_keys, hub_kwargs) -> None:
    """Insert the adapters an export describes and load their weights from its checkpoint."""
    added = adapter_lib.add_adapters(
        model,
        layers=config["layers"],
        bottleneck=config["bottleneck"],
        positions=config["positions"],
        layer_norm=config["layer_norm"],
        activation=config["activation"],
        dropout=config["dropout"],
    )
    wanted = {k for k in model.state_dict() if _is_adapter_key(k)}
    found = set(adapter_keys)
    if wanted != found:
        raise UpstreamWeightsError(
            f"Upstream {source}: the adapter weights in its checkpoint do not match the adapter "
            f"configuration it records ({config}): missing {_listing(wanted - found)}; "
            f"unexpected {_listing(found - wanted)}. Re-export it with SSLUpstream.save_hf."
        )
    tensors = _read_checkpoint_tensors(source, sorted(found), hub_kwargs)
    absent = found - set(tensors)
    if absent:
        raise UpstreamWeightsError(
            f"Upstream {source}: adapter weights {_listing(absent)} are reported by transformers "
            "but not found in its safetensors file(s)."
        )
    model.load_state_dict(tensors, strict=False)
    logger.info(
        "Upstream %s carries lasersb adapters: inserted %d (layers %s, positions %s, "
        "bottleneck %d) and loaded their weights.",
        source,
        len(added),
        config["layers"],
        config["positions"],
        config["bottleneck"],
    )


def apply_adapter_checkpoint(model, path, source=None) -> dict:
    """Apply an adapter set saved alone (``save_adapters``) onto a loaded upstream model.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The upstream, without adapters.
    path : str or os.PathLike
        The adapter file (e.g. ``adapters.pt`` of the adapters recipe); its encoder layer norms,
        when saved with it, are loaded too.
    source : str, optional
        The upstream's name, for the messages.

    Returns
    -------
    dict
        The adapter configuration.
    """
    if adapter_lib.get_adapters(model):
        raise ValueError(
            f"Upstream {source} already carries adapters (from its export); adapters={path} "
            "would replace them. Load the original upstream with adapters=..., or the export "
            "without it."
        )
    payload = adapter_lib.load_adapters(path, model)
    saved_for = payload.get("extra", {}).get("upstream")
    if saved_for and source is not None and str(saved_for) != str(source):
        logger.warning(
            "Adapter set %s was trained on upstream %s, applied here to %s.",
            path,
            saved_for,
            source,
        )
    config = payload["config"]
    logger.info(
        "Upstream %s: applied %d lasersb adapters from %s (layers %s, bottleneck %d%s).",
        source,
        len(adapter_lib.get_adapters(model)),
        path,
        config["layers"],
        config["bottleneck"],
        ", with their encoder layer norms" if payload.get("layer_norms") else "",
    )
    return config


def load_upstream(source, strict_weights: bool = True, adapters=None, **kwargs):
    """Load a HuBERT / WavLM / wav2vec 2.0 model for feature extraction or fine-tuning.

    Arguments
    ---------
    source : str or os.PathLike
        A hub id (``facebook/hubert-base-ls960``, ``microsoft/wavlm-base-plus``...) or a local
        folder written by ``save_pretrained`` or :meth:`SSLUpstream.save_hf`. Both go through
        ``AutoModel.from_pretrained``. With ``HF_HUB_OFFLINE=1`` a hub id is read from the
        Hugging Face cache only. A folder with lasersb adapters (LASER SSFT
        ``use_adapters``) gets them inserted and loaded (see the module docstring).
    strict_weights : bool
        Checkpoint keys the model does not use or parameters it lacks (other than
        :data:`KNOWN_UNUSED_PREFIXES`) raise :class:`UpstreamWeightsError`; ``False`` logs
        a warning instead.
    adapters : str or os.PathLike, optional
        An adapter set saved alone (:func:`lasersb.models.adapters.save_adapters`, e.g. the
        ``adapters.pt`` of recipes/LibriSpeech/adapters) to apply on top.
    **kwargs
        Config attributes to override (e.g. ``hidden_dropout=0.0``), and any other keyword of
        ``from_pretrained`` (``cache_dir``, ``revision``, ``local_files_only``...).

    Returns
    -------
    transformers.PreTrainedModel
        The model in float32 and eval mode, with ``apply_spec_augment=False`` and
        ``layerdrop=0.0`` (unless overridden in ``kwargs``).

    Raises
    ------
    UpstreamNotFoundError
        A local-looking path that does not exist, a folder without ``config.json``, or a hub id
        that cannot be fetched (offline and not in the cache).
    UpstreamWeightsError
        The checkpoint's keys do not match the model (``strict_weights=True``).

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> folder = build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "hubert")
    >>> model = load_upstream(folder)
    >>> type(model).__name__, model.config.apply_spec_augment, model.config.layerdrop
    ('HubertModel', False, 0.0)
    """
    from transformers import AutoConfig, AutoModel, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    source, is_local = _resolve_source(source)
    hub_kwargs = {
        key: kwargs.pop(key)
        for key in ("cache_dir", "revision", "local_files_only", "token", "force_download")
        if key in kwargs
    }
    if not is_local and _env_flag("HF_HUB_OFFLINE"):
        hub_kwargs.setdefault("local_files_only", True)
    overrides = {**FROZEN_FEATURE_CONFIG, **kwargs}
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source, **hub_kwargs)
        export = config_dict.pop(ADAPTER_EXPORT_KEY, None)
        if export is not None:
            # An adapter export: its config is the base model's with another model_type.
            config_dict["model_type"] = export["base_model_type"]
            config_class = CONFIG_MAPPING[export["base_model_type"]]
            config, model_kwargs = config_class.from_dict(
                config_dict, return_unused_kwargs=True, **overrides
            )
        else:
            config, model_kwargs = AutoConfig.from_pretrained(
                source, return_unused_kwargs=True, **hub_kwargs, **overrides
            )
        # Loading initialises (then overwrites) weights with the global RNG: keep it untouched.
        with torch.random.fork_rng(devices=[]), _own_load_report():
            model, info = AutoModel.from_pretrained(
                source, config=config, output_loading_info=True, **hub_kwargs, **model_kwargs
            )
    except OSError as err:
        if is_local:
            raise
        offline = hub_kwargs.get("local_files_only") or _env_flag("HF_HUB_OFFLINE")
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache: download it once "
            f"with network access (`huggingface-cli download {source}`) or pass a local folder."
            if offline
            else "Check the hub id and your network access, or pass a local folder."
        )
        if "/" in source:
            hint += f" (No local folder {os.path.abspath(source)} exists either.)"
        raise UpstreamNotFoundError(f"Cannot load upstream {source!r}: {hint} ({err})") from err
    adapter_keys = sorted(k for k in info.get("unexpected_keys", ()) if _is_adapter_key(k))
    info = {
        **info,
        "unexpected_keys": [k for k in info.get("unexpected_keys", ()) if not _is_adapter_key(k)],
    }
    check_loading_info(source, info, strict=strict_weights)
    adapter_config = export["adapters"] if export is not None else None
    if adapter_config is None and adapter_keys:
        adapter_config = _legacy_adapter_config(source, is_local)
        if adapter_config is None:
            message = (
                f"Upstream {source}: its weights hold lasersb adapters ({_listing(adapter_keys)}) "
                f"but neither its config.json ({ADAPTER_EXPORT_KEY}) nor {EXPORT_INFO_FILE} "
                "describes them, so they cannot be rebuilt. Save the model with "
                "SSLUpstream.save_hf, or load the base upstream with adapters=<save_adapters "
                "file>; strict_weights=False drops them."
            )
            if strict_weights:
                raise UpstreamWeightsError(message)
            logger.warning(message)
            adapter_keys = []
    if adapter_config is not None:
        if not adapter_keys:
            raise UpstreamWeightsError(
                f"Upstream {source}: its config records lasersb adapters ({adapter_config}) but "
                "its weights hold none. Re-export it with SSLUpstream.save_hf."
            )
        _insert_saved_adapters(model, source, adapter_config, adapter_keys, hub_kwargs)
    if adapters is not None:
        apply_adapter_checkpoint(model, adapters, source)
    return model.float().eval()


def _check_overrides(source, overrides: dict) -> None:
    """Raise when a config override names an attribute the upstream's config class lacks."""
    if not overrides:
        return
    from transformers import PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(_resolve_source(source)[0])
    except OSError:
        return  # load_upstream says why the upstream cannot be read
    export = config_dict.get(ADAPTER_EXPORT_KEY)
    model_type = export["base_model_type"] if export else config_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        return
    config = CONFIG_MAPPING[model_type]()
    unknown = sorted(key for key in overrides if not hasattr(config, key))
    if unknown:
        raise ValueError(
            f"config_overrides {unknown}: upstream {source} ({type(config).__name__}) has no "
            "such config attribute; use its config.json names (hidden_dropout, "
            "attention_dropout, activation_dropout, feat_proj_dropout...)."
        )


def _load_feature_extractor(source, model):
    """The checkpoint's ``Wav2Vec2FeatureExtractor``, or the Hugging Face defaults for its type."""
    from transformers import Wav2Vec2FeatureExtractor

    if isinstance(source, (str, os.PathLike)):
        try:
            return Wav2Vec2FeatureExtractor.from_pretrained(source)
        except (OSError, ValueError):
            pass
    # No preprocessor_config.json: the convention of the released checkpoints is that
    # layer-norm ("large", pre-norm) models normalise the input and use an attention mask.
    layer_norm = getattr(model.config, "feat_extract_norm", "group") == "layer"
    logger.warning(
        "No preprocessor_config.json for upstream %s; assuming do_normalize=%s and "
        "return_attention_mask=%s from feat_extract_norm.",
        source,
        layer_norm,
        layer_norm,
    )
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=layer_norm,
        return_attention_mask=layer_norm,
    )


def _normalise(wavs: torch.Tensor, valid: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance over the valid samples of each row; padding set to 0.

    Same statistics as ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` (population
    variance, ``eps=1e-7``).
    """
    valid_f = valid.to(wavs.dtype)
    count = valid_f.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (wavs * valid_f).sum(dim=1, keepdim=True) / count
    var = (((wavs - mean) * valid_f) ** 2).sum(dim=1, keepdim=True) / count
    return (wavs - mean) / torch.sqrt(var + eps) * valid_f


def _first_group_norm(model) -> nn.GroupNorm | None:
    """The group norm of the first conv layer of ``feat_extract_norm="group"`` models."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    norm = getattr(layers[0], "layer_norm", None) if layers else None
    return norm if isinstance(norm, nn.GroupNorm) else None


class SSLUpstream(nn.Module):
    """A HuBERT / WavLM / wav2vec 2.0 upstream with (partly) frozen weights for recipes.

    Arguments
    ---------
    source : str, os.PathLike or transformers.PreTrainedModel
        Hub id or local folder (loaded with :func:`load_upstream`), or an already loaded model.
    trainable_layers : int or Sequence[int]
        ``N > 0``: the top ``N`` transformer layers are trainable; a list: those layer indices
        (0 = first layer; negative indices count from the top); ``0``/empty: fully frozen, and
        then :meth:`forward` runs the model under ``torch.no_grad`` in eval mode.
    freeze_feature_encoder : bool
        Keep the conv feature encoder frozen (default). ``False`` trains it as well.
    output_hidden_states : bool
        Return all ``L + 1`` hidden states (``False``: ``hidden_states`` is ``None``, cheaper).
    normalize_waveform : bool, optional
        Per-utterance normalisation of the input; ``None`` follows the checkpoint's feature
        extractor (``do_normalize``).
    use_attention_mask : bool, optional
        Pass the attention mask; ``None`` follows the feature extractor
        (``return_attention_mask``), as the Hugging Face documentation recommends.
    exact_padding : bool
        Make every utterance of a padded batch give exactly the hidden states it gives alone
        (a batch of one): the group norm of *base* checkpoints'
        first conv layer takes its statistics over each utterance's valid conv frames only, and
        the attention mask is passed. ``False`` (default) keeps the Hugging Face behaviour,
        where padding shifts those statistics. (The LASER release pads an utterance and its
        perturbed copy in one batch of two, without this correction.)
    train_encoder_layer_norm : bool
        With ``trainable_layers``, also train ``model.encoder.layer_norm`` (the LASER release's
        set; see the module docstring). ``False``: the layers only.
    dropout_in_frozen : bool
        With trainable parameters, ``train()`` puts the whole model in train mode (s3prl and
        the LASER release: dropout in the frozen layers too). ``False``: frozen parts stay in
        eval mode.
    trainable_modules : Sequence[str]
        Further submodules of the transformers model to train with ``trainable_layers``, by
        their transformers name (``"feature_projection.layer_norm"``: fairseq's
        ``model.layer_norm``, which the SCORE release trains). A name the model lacks raises
        ``ValueError``.
    config_overrides : dict, optional
        Config attributes set before the model is built from ``source`` (dropout rates:
        ``hidden_dropout``, ``attention_dropout``, ``activation_dropout``,
        ``feat_proj_dropout``...). Not possible with an already built model (``ValueError``).
    trainable_adapters : bool
        Train the lasersb adapters the upstream carries (from an adapter export or
        ``adapters``). ``False`` (default): they stay frozen, also inside trainable layers.
    adapters : str or os.PathLike, optional
        An adapter set saved alone (``save_adapters``, e.g. the adapters recipe's
        ``adapters.pt``) to apply to the upstream (see :func:`load_upstream`).
    strict_weights : bool
        Raise when the checkpoint's keys do not match the model (see :func:`load_upstream`);
        ``False`` only warns.

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> folder = build_tiny_upstream("wavlm", Path(tempfile.mkdtemp()) / "wavlm")
    >>> upstream = SSLUpstream(folder, trainable_layers=1, train_encoder_layer_norm=False)
    >>> out = upstream(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> len(out.hidden_states), tuple(out.last_hidden_state.shape), out.frame_lens.tolist()
    (4, (2, 49, 64), [49, 24])
    >>> out.padding_mask.sum(dim=1).tolist()
    [0, 25]
    >>> sorted({name.split(".")[3] for name in upstream.trainable_parameter_names()})
    ['2']
    >>> [n for n in SSLUpstream(folder, trainable_layers=1).trainable_parameter_names()
    ...  if not n.startswith("model.encoder.layers.")]
    ['model.encoder.layer_norm.weight', 'model.encoder.layer_norm.bias']
    """

    def __init__(
        self,
        source,
        trainable_layers: int | Sequence[int] = 0,
        freeze_feature_encoder: bool = True,
        output_hidden_states: bool = True,
        normalize_waveform: bool | None = None,
        use_attention_mask: bool | None = None,
        exact_padding: bool = False,
        train_encoder_layer_norm: bool = True,
        dropout_in_frozen: bool = True,
        trainable_modules: Sequence[str] = (),
        config_overrides: dict | None = None,
        trainable_adapters: bool = False,
        adapters=None,
        strict_weights: bool = True,
    ):
        super().__init__()
        from transformers import PreTrainedModel

        config_overrides = dict(config_overrides or {})
        if isinstance(source, PreTrainedModel):
            if config_overrides:
                raise ValueError(
                    f"config_overrides {sorted(config_overrides)} need an upstream to load (a hub "
                    "id or folder): a built model's dropout modules already have their rates."
                )
            model, source_name = source, getattr(source, "name_or_path", None)
            for key, value in FROZEN_FEATURE_CONFIG.items():
                setattr(model.config, key, value)
            if adapters is not None:
                apply_adapter_checkpoint(model, adapters, source_name)
        else:
            _check_overrides(source, config_overrides)
            model = load_upstream(
                source, strict_weights=strict_weights, adapters=adapters, **config_overrides
            )
            source_name = source
        self.model = model
        self.trainable_adapters = bool(trainable_adapters)
        self.source = str(source_name) if source_name is not None else None
        self.feature_extractor = _load_feature_extractor(source_name, model)
        self.output_hidden_states = bool(output_hidden_states)
        self.normalize_waveform = (
            bool(self.feature_extractor.do_normalize)
            if normalize_waveform is None
            else bool(normalize_waveform)
        )
        self.use_attention_mask = (
            bool(self.feature_extractor.return_attention_mask)
            if use_attention_mask is None
            else bool(use_attention_mask)
        )
        self.exact_padding = bool(exact_padding)
        if self.exact_padding:
            self.use_attention_mask = True
        self._conv0_lens = None
        self._group_norm = _first_group_norm(model)
        if self._group_norm is not None:
            self._group_norm.register_forward_hook(self._mask_group_norm)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.train_encoder_layer_norm = bool(train_encoder_layer_norm)
        self.dropout_in_frozen = bool(dropout_in_frozen)
        self.trainable_layer_indices = self._layer_indices(trainable_layers)
        self.trainable_modules = tuple(str(name) for name in trainable_modules)
        self._extra_modules = [self._submodule(name) for name in self.trainable_modules]
        self._set_trainable()
        self.train(self.training)

    # ------------------------------------------------------------------ structure
    @property
    def hidden_size(self) -> int:
        """Width ``H`` of every hidden state."""
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers ``L`` (``hidden_states`` has ``L + 1`` entries)."""
        return len(self.encoder_layers)

    @property
    def encoder_layers(self) -> nn.ModuleList:
        """The ``nn.ModuleList`` of transformer layers."""
        return self.model.encoder.layers

    @property
    def sample_rate(self) -> int:
        """Sample rate the upstream expects (16 kHz for all released checkpoints)."""
        return int(getattr(self.feature_extractor, "sampling_rate", 16000))

    def _layer_indices(self, trainable_layers) -> tuple[int, ...]:
        num = self.num_layers
        if isinstance(trainable_layers, bool):
            raise TypeError("trainable_layers must be an int or a list of layer indices.")
        if isinstance(trainable_layers, int):
            if not 0 <= trainable_layers <= num:
                raise ValueError(
                    f"trainable_layers={trainable_layers} but the upstream has {num} layers; "
                    f"use 0..{num} or a list of layer indices."
                )
            return tuple(range(num - trainable_layers, num))
        indices = set()
        for index in trainable_layers:
            index = int(index)
            if not -num <= index < num:
                raise ValueError(f"Layer index {index} out of range for {num} transformer layers.")
            indices.add(index % num)
        return tuple(sorted(indices))

    def _submodule(self, name: str) -> nn.Module:
        """The transformers submodule ``name`` (a clear error when the model lacks it)."""
        try:
            return self.model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(
                f"trainable_modules: upstream {self.source} ({type(self.model).__name__}) has no "
                f"submodule {name!r}; use a transformers module name such as "
                "'feature_projection.layer_norm' (see model.named_modules())."
            ) from err

    def _adapters(self) -> list[nn.Module]:
        """The lasersb adapters the upstream carries (empty for a plain upstream)."""
        return list(adapter_lib.get_adapters(self.model).values())

    def _trainable_modules(self) -> list[nn.Module]:
        modules = [self.encoder_layers[i] for i in self.trainable_layer_indices]
        top = self.num_layers - 1
        pre_norm_top = top in self.trainable_layer_indices and getattr(
            self.model.config, "do_stable_layer_norm", False
        )
        with_norm = self.train_encoder_layer_norm and bool(self.trainable_layer_indices)
        if pre_norm_top or with_norm:
            modules.append(self.model.encoder.layer_norm)
        if not self.freeze_feature_encoder:
            modules.append(self.model.feature_extractor)
        return modules + self._extra_modules

    def _set_trainable(self) -> None:
        self.model.requires_grad_(False)
        for module in self._trainable_modules():
            module.requires_grad_(True)
        for adapter in self._adapters():
            adapter.requires_grad_(self.trainable_adapters)
        if self.freeze_feature_encoder:
            # Also stops HF from forcing requires_grad on the conv output in training mode.
            conv = self.model.feature_extractor
            if hasattr(conv, "_freeze_parameters"):
                conv._freeze_parameters()

    @property
    def has_trainable(self) -> bool:
        """Whether any parameter of the upstream is trainable."""
        return any(p.requires_grad for p in self.model.parameters())

    def trainable_parameter_names(self) -> list[str]:
        """Names (``model.…``) of the upstream parameters that are trained, in model order."""
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        """Set train/eval mode (see ``dropout_in_frozen``); a frozen upstream stays in eval."""
        self.training = mode
        if self.dropout_in_frozen and self.has_trainable:
            self.model.train(mode)
            return self
        self.model.eval()
        for module in self._trainable_modules():
            module.train(mode)
        # Adapters follow their own trainability (trainable_adapters, or made trainable later
        # by insert_trainable_adapters), also inside frozen or trainable layers.
        for adapter in self._adapters():
            adapter.train(mode and any(p.requires_grad for p in adapter.parameters()))
        return self

    # ------------------------------------------------------------------ lengths
    def frames_from_samples(self, num_samples) -> torch.Tensor:
        """Number of output frames for inputs of ``num_samples`` samples (int or tensor).

        Example
        -------
        >>> import tempfile
        >>> from lasersb.models.tiny_upstream import build_tiny_upstream
        >>> upstream = SSLUpstream(build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "h"))
        >>> upstream.frames_from_samples([399, 400, 720, 16000]).tolist()
        [0, 1, 2, 49]
        """
        num_samples = torch.as_tensor(num_samples, dtype=torch.long)
        frames = self.model._get_feat_extract_output_lengths(num_samples)
        return torch.as_tensor(frames, dtype=torch.long).clamp(min=0)

    def _mask_group_norm(self, module, args, output):
        """Forward hook: recompute the first conv layer's group norm over valid frames only."""
        lens = self._conv0_lens
        if lens is None:
            return None
        x = args[0]
        steps = torch.arange(x.shape[-1], device=x.device)
        valid = (steps.unsqueeze(0) < lens.to(x.device).unsqueeze(1)).unsqueeze(1).to(x.dtype)
        batch, channels, _ = x.shape
        groups = module.num_groups
        xg = x.reshape(batch, groups, channels // groups, -1)
        mask = valid.unsqueeze(1)  # (B, 1, 1, T)
        count = (mask.sum(dim=-1, keepdim=True) * xg.shape[2]).sum(dim=2, keepdim=True).clamp(1)
        mean = (xg * mask).sum(dim=(2, 3), keepdim=True) / count
        var = (((xg - mean) * mask) ** 2).sum(dim=(2, 3), keepdim=True) / count
        normed = ((xg - mean) / torch.sqrt(var + module.eps)).reshape_as(x) * valid
        if module.affine:
            normed = normed * module.weight.view(1, -1, 1) + module.bias.view(1, -1, 1)
        return normed

    # ------------------------------------------------------------------ forward
    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None) -> UpstreamOutput:
        """Run the upstream on a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, T)`` waveforms at :attr:`sample_rate` (or ``(T,)`` for one utterance).
        wav_lens : torch.Tensor, optional
            ``(B,)`` relative lengths in ``(0, 1]`` (SpeechBrain convention); ``None`` = all
            full length.

        Returns
        -------
        UpstreamOutput
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (batch, samples), got shape {tuple(wavs.shape)}.")
        batch, total = wavs.shape
        device = wavs.device
        if wav_lens is None:
            sample_lens = torch.full((batch,), total, dtype=torch.long, device=device)
        else:
            wav_lens = torch.as_tensor(wav_lens, device=device)
            sample_lens = torch.round(wav_lens.float() * total).long().clamp(1, total)
        valid = torch.arange(total, device=device).unsqueeze(0) < sample_lens.unsqueeze(1)
        wavs = wavs.to(torch.float32)
        if self.normalize_waveform:
            wavs = _normalise(wavs, valid)
        elif wav_lens is not None:
            wavs = wavs * valid.to(wavs.dtype)  # padding must be zero for group-norm models
        attention_mask = valid.long() if self.use_attention_mask else None

        grad = torch.is_grad_enabled() and (self.has_trainable or wavs.requires_grad)
        if self.exact_padding and self._group_norm is not None:
            conv = self.model.feature_extractor.conv_layers[0].conv
            kernel, stride = conv.kernel_size[0], conv.stride[0]
            self._conv0_lens = torch.div(sample_lens - kernel, stride, rounding_mode="floor") + 1
        try:
            with torch.set_grad_enabled(grad):
                out = self.model(
                    wavs,
                    attention_mask=attention_mask,
                    output_hidden_states=self.output_hidden_states,
                    return_dict=True,
                )
        finally:
            self._conv0_lens = None
        last = out.last_hidden_state
        frame_lens = self.frames_from_samples(sample_lens).to(device).clamp(max=last.shape[1])
        padding_mask = torch.arange(last.shape[1], device=device).unsqueeze(0) >= (
            frame_lens.unsqueeze(1)
        )
        hidden_states = tuple(out.hidden_states) if self.output_hidden_states else None
        return UpstreamOutput(hidden_states, last, frame_lens, padding_mask)

    # ------------------------------------------------------------------ saving
    def save_hf(self, folder) -> Path:
        """Save the (fine-tuned) model and its feature extractor config as a Hugging Face folder.

        The folder reloads with :func:`load_upstream` / :class:`SSLUpstream` (identical hidden
        states) and, without adapters, with ``transformers.AutoModel.from_pretrained(folder)``.
        With lasersb adapters, their weights are in the safetensors file and their
        configuration in ``config.json`` (:data:`ADAPTER_EXPORT_KEY`), whose ``model_type``
        (:func:`adapter_export_model_type`) makes plain ``AutoModel`` fail loudly rather than
        return the model without its adapters.

        Arguments
        ---------
        folder : str or os.PathLike
            Output folder (created).

        Returns
        -------
        pathlib.Path
            The folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.feature_extractor.save_pretrained(folder)
        config = adapter_lib.adapter_config(self.model)
        if config:
            path = folder / "config.json"
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved[ADAPTER_EXPORT_KEY] = {
                "format": adapter_lib.CHECKPOINT_FORMAT,
                "base_model_type": saved["model_type"],
                "adapters": config,
                "load_with": LOAD_HINT,
            }
            saved["model_type"] = adapter_export_model_type(saved["model_type"])
            path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, trainable_layers={list(self.trainable_layer_indices)}, "
            f"freeze_feature_encoder={self.freeze_feature_encoder}, "
            f"train_encoder_layer_norm={self.train_encoder_layer_norm}, "
            f"dropout_in_frozen={self.dropout_in_frozen}, "
            f"trainable_modules={list(self.trainable_modules)}, "
            f"normalize_waveform={self.normalize_waveform}, "
            f"use_attention_mask={self.use_attention_mask}"
        )
