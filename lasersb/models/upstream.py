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
conv feature encoder.

Train/eval mode: with trainable parameters, ``train()`` puts the *whole* model in train mode by
default (``dropout_in_frozen=True``), as s3prl's runner does with a trainable upstream (dropout
is active in the frozen layers too; layerdrop is 0). ``dropout_in_frozen=False`` keeps the frozen
parts in eval mode, so only the trainable modules follow ``train()``/``eval()``. A fully frozen
upstream always runs in eval mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["SSLUpstream", "UpstreamNotFoundError", "UpstreamOutput", "load_upstream"]

logger = logging.getLogger(__name__)

#: Config attributes :func:`load_upstream` sets for frozen-feature use (see the module docstring).
FROZEN_FEATURE_CONFIG = {"apply_spec_augment": False, "layerdrop": 0.0}


class UpstreamNotFoundError(FileNotFoundError):
    """The upstream could not be found (missing local folder, or a hub id absent offline)."""


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


def load_upstream(source, **kwargs):
    """Load a HuBERT / WavLM / wav2vec 2.0 model for feature extraction or fine-tuning.

    Arguments
    ---------
    source : str or os.PathLike
        A hub id (``facebook/hubert-base-ls960``, ``microsoft/wavlm-base-plus``...) or a local
        folder written by ``save_pretrained``. Both go through ``AutoModel.from_pretrained``.
        With ``HF_HUB_OFFLINE=1`` a hub id is read from the Hugging Face cache only.
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

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> folder = build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "hubert")
    >>> model = load_upstream(folder)
    >>> type(model).__name__, model.config.apply_spec_augment, model.config.layerdrop
    ('HubertModel', False, 0.0)
    """
    from transformers import AutoConfig, AutoModel

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
        config, model_kwargs = AutoConfig.from_pretrained(
            source, return_unused_kwargs=True, **hub_kwargs, **overrides
        )
        # Loading initialises (then overwrites) weights with the global RNG: keep it untouched.
        with torch.random.fork_rng(devices=[]):
            model = AutoModel.from_pretrained(source, config=config, **hub_kwargs, **model_kwargs)
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
    return model.float().eval()


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
    ):
        super().__init__()
        from transformers import PreTrainedModel

        if isinstance(source, PreTrainedModel):
            model, source_name = source, getattr(source, "name_or_path", None)
            for key, value in FROZEN_FEATURE_CONFIG.items():
                setattr(model.config, key, value)
        else:
            model, source_name = load_upstream(source), source
        self.model = model
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
        return modules

    def _set_trainable(self) -> None:
        self.model.requires_grad_(False)
        for module in self._trainable_modules():
            module.requires_grad_(True)
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

        The folder reloads with ``transformers.AutoModel.from_pretrained(folder)`` and with
        :func:`load_upstream` / :class:`SSLUpstream` (identical hidden states).

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
        return folder

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, trainable_layers={list(self.trainable_layer_indices)}, "
            f"freeze_feature_encoder={self.freeze_feature_encoder}, "
            f"train_encoder_layer_norm={self.train_encoder_layer_norm}, "
            f"dropout_in_frozen={self.dropout_in_frozen}, "
            f"normalize_waveform={self.normalize_waveform}, "
            f"use_attention_mask={self.use_attention_mask}"
        )
