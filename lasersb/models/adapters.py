"""Bottleneck adapters for HF wav2vec 2.0 / HuBERT / WavLM encoders (adapter transfer).

Reproduces the adapter set-up of Thomas, Kessler and Karout, "Efficient Adapter Transfer of
Self-Supervised Speech Models for Automatic Speech Recognition" (ICASSP 2022): a small
bottleneck adapter (down-projection -> activation -> up-projection, residual) is inserted twice
per chosen transformer layer, on the output of self-attention and on the output of the
feed-forward block, *before* the layer's own residual addition (Houlsby et al., 2019). The
pretrained encoder is frozen; only the adapters, optionally the encoder's layer norms, and the
task head are trained (paper, wav2vec 2.0 Base, bottleneck 256: 9.2 % of the parameters with
adapters in all 12 layers, 4.85 % in the top 6, against 95.6 % for full fine-tuning).

How the adapters are attached
-----------------------------
Adapters are attached with forward hooks on ``layer.attention`` and ``layer.feed_forward``
and stored as ``layer.bottleneck_adapters[<position>]``, so:

* the layer's residual connections stay outside the adapter (the hook changes the
  sub-layer's output, element 0 of the tuple returned by attention modules, including WavLM's
  ``(hidden, weights, position_bias)``);
* the original parameter names are unchanged (``save_pretrained``-style loading of the
  encoder still works) and the adapters only *add* keys;
* the up-projection is initialised to zero, so the adapted model computes exactly what the
  original model computes until the adapters are trained;
* adapter sets can be saved alone (:func:`save_adapters`, a small fraction of the encoder's
  size), swapped at run time on one frozen encoder (:func:`load_adapter_state_dict`) and removed
  (:func:`remove_adapters`).

SpeechBrain's ``speechbrain.nnet.adapters`` is reused where it fits: its ``replace_module``
is not needed (nothing is replaced), and its ``HoulsbyAdapterLinear`` / ``AdaptedModel`` are
not used because (1) they *replace* an ``nn.Linear`` by a wrapper, which breaks WavLM, whose
attention passes ``out_proj.weight`` directly to ``F.multi_head_attention_forward``, and renames
the pretrained parameters; (2) their up-projection is randomly initialised, so the adapted
model does not start identical to the original; (3) they have no layer-norm option and no
per-layer selection by index. The activation classes of ``speechbrain.nnet.activations``
(``Swish``) are reused for ``activation="swish"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

ADAPTER_ATTRIBUTE = "bottleneck_adapters"
POSITIONS = ("attention", "feed_forward")
CHECKPOINT_FORMAT = "lasersb-adapters-v1"


def _activation_module(activation) -> nn.Module:
    """Build an activation module from a name, a module class or a module instance."""
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    names = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
    if activation == "swish":
        from speechbrain.nnet.activations import Swish

        return Swish()
    if activation not in names:
        raise ValueError(
            f"Unknown adapter activation {activation!r}; use one of "
            f"{sorted([*names, 'swish'])} or an nn.Module class."
        )
    return names[activation]()


class BottleneckAdapter(nn.Module):
    """Houlsby bottleneck adapter: ``x + up(dropout(act(down(norm(x)))))``.

    The up-projection (weight and bias) starts at zero, so the adapter is the identity
    until trained.

    Arguments
    ---------
    input_size : int
        Feature size of the adapted sub-layer output (the encoder's hidden size).
    bottleneck : int
        Size of the bottleneck (the paper uses 256 on wav2vec 2.0 Base).
    activation : str or nn.Module class
        ``"gelu"`` (default), ``"relu"``, ``"swish"``, ``"silu"``, ``"tanh"`` or a module class.
    layer_norm : bool
        Apply a layer norm to the adapter input (inside the residual branch).
    dropout : float
        Dropout after the activation.

    Example
    -------
    >>> adapter = BottleneckAdapter(16, bottleneck=4)
    >>> x = torch.randn(2, 5, 16)
    >>> torch.equal(adapter(x), x)
    True
    >>> sum(p.numel() for p in adapter.parameters())  # 16*4+4 + 4*16+16
    148
    """

    def __init__(
        self, input_size, bottleneck=256, activation="gelu", layer_norm=False, dropout=0.0
    ):
        super().__init__()
        if int(bottleneck) < 1:
            raise ValueError(f"Adapter bottleneck must be >= 1, got {bottleneck}.")
        self.input_size = int(input_size)
        self.bottleneck = int(bottleneck)
        self.activation_name = activation if isinstance(activation, str) else repr(activation)
        self.norm = nn.LayerNorm(self.input_size) if layer_norm else nn.Identity()
        self.down_proj = nn.Linear(self.input_size, self.bottleneck)
        self.activation = _activation_module(activation)
        self.dropout = nn.Dropout(dropout)
        self.up_proj = nn.Linear(self.bottleneck, self.input_size)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)
        self.config = {
            "bottleneck": self.bottleneck,
            "activation": self.activation_name,
            "layer_norm": bool(layer_norm),
            "dropout": float(dropout),
        }

    def forward(self, x):
        """Return ``x`` plus the adapter's residual branch (same shape as ``x``)."""
        return x + self.up_proj(self.dropout(self.activation(self.down_proj(self.norm(x)))))

    def forward_hook(self, module, args, output):
        """Forward hook for a sub-layer: adapt its output (element 0 when it is a tuple)."""
        del module, args
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


def find_encoder_layers(model) -> nn.ModuleList:
    """Return the transformer layers of a wav2vec2-family model (HF model or upstream wrapper).

    Accepts an object with an ``encoder_layers`` attribute (``lasersb.models.upstream
    .SSLUpstream``), an HF ``Wav2Vec2Model``/``HubertModel``/``WavLMModel`` or any model that
    contains one (``*ForCTC``, an ``nn.ModuleDict`` of brain modules...).

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8)
    >>> len(find_encoder_layers(HubertModel(cfg)))
    2
    """
    layers = getattr(model, "encoder_layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected an nn.Module with transformer layers, got {type(model)}.")
    for _, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and all(hasattr(m, "attention") and hasattr(m, "feed_forward") for m in module)
        ):
            return module
    raise ValueError(
        f"No wav2vec2-family transformer layers (modules with .attention and .feed_forward) "
        f"found in {type(model).__name__}; pass an HF Wav2Vec2/HuBERT/WavLM model or a "
        "lasersb SSLUpstream."
    )


def resolve_layer_indices(layers, num_layers) -> list[int]:
    """Turn a layer selection into sorted layer indices.

    Arguments
    ---------
    layers : str, int, dict or sequence of int
        ``"all"``; ``{"top": k}`` (or ``"top:k"``/``"topk"``) for the top ``k`` layers; a list
        of indices (negative indices count from the top).
    num_layers : int
        Number of transformer layers.

    Example
    -------
    >>> resolve_layer_indices("all", 4)
    [0, 1, 2, 3]
    >>> resolve_layer_indices({"top": 2}, 12)
    [10, 11]
    >>> resolve_layer_indices([0, -1], 12)
    [0, 11]
    """
    if isinstance(layers, str):
        text = layers.strip().lower().replace(" ", "")
        if text == "all":
            return list(range(num_layers))
        if text.startswith("top"):
            layers = {"top": int(text[3:].lstrip(":=_"))}
        else:
            raise ValueError(
                f"Unknown layer selection {layers!r}: use 'all', {{top: k}} or a list."
            )
    if isinstance(layers, Mapping):
        if set(layers) != {"top"}:
            raise ValueError(f"Layer selection dict must be {{top: k}}, got {dict(layers)}.")
        top = int(layers["top"])
        if not 0 < top <= num_layers:
            raise ValueError(f"top: {top} is out of range for a {num_layers}-layer encoder.")
        return list(range(num_layers - top, num_layers))
    if isinstance(layers, int):
        layers = [layers]
    indices = set()
    for index in layers:
        index = int(index)
        if not -num_layers <= index < num_layers:
            raise ValueError(f"Layer index {index} out of range for {num_layers} layers.")
        indices.add(index % num_layers)
    if not indices:
        raise ValueError("Empty layer selection: give 'all', {top: k} or a non-empty list.")
    return sorted(indices)


def _hidden_size(layer) -> int:
    norm = getattr(layer, "final_layer_norm", None) or getattr(layer, "layer_norm", None)
    if norm is not None and hasattr(norm, "normalized_shape"):
        return int(norm.normalized_shape[-1])
    return int(layer.feed_forward.output_dense.out_features)


def add_adapters(
    model,
    layers="all",
    bottleneck=256,
    positions=POSITIONS,
    layer_norm=False,
    activation="gelu",
    dropout=0.0,
) -> nn.ModuleList:
    """Insert bottleneck adapters into the chosen transformer layers of a wav2vec2-family model.

    Arguments
    ---------
    model : nn.Module
        HF wav2vec 2.0 / HuBERT / WavLM model (any variant, stable-layer-norm included), a
        ``SSLUpstream`` or a module containing one.
    layers : str, dict or list
        ``"all"``, ``{"top": k}`` or a list of layer indices (see :func:`resolve_layer_indices`).
    bottleneck : int
        Adapter bottleneck size.
    positions : sequence of str
        Where to adapt in each layer: ``"attention"`` (self-attention output) and/or
        ``"feed_forward"`` (feed-forward output); both by default, as in the paper.
    layer_norm : bool
        Give each adapter its own input layer norm.
    activation : str or nn.Module class
        Adapter activation.
    dropout : float
        Adapter dropout.

    Returns
    -------
    nn.ModuleList
        The inserted adapters, in layer then position order (they stay owned by the layers).

    Example
    -------
    >>> from transformers import WavLMModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("wavlm", hidden_size=16, num_layers=3, conv_dim=8, num_buckets=8)
    >>> model = WavLMModel(cfg).eval()
    >>> wav = torch.randn(1, 400)
    >>> before = model(wav).last_hidden_state
    >>> adapters = add_adapters(model, layers={"top": 2}, bottleneck=4)
    >>> len(adapters), sorted(get_adapters(model))[:2]
    (4, ['layers.1.attention', 'layers.1.feed_forward'])
    >>> torch.equal(model(wav).last_hidden_state, before)
    True
    """
    if isinstance(positions, str):
        positions = (positions,)
    positions = tuple(positions)
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown or not positions:
        raise ValueError(
            f"Adapter positions must be a non-empty subset of {POSITIONS}, got {positions}."
        )
    encoder_layers = find_encoder_layers(model)
    indices = resolve_layer_indices(layers, len(encoder_layers))
    inserted = nn.ModuleList()
    for index in indices:
        layer = encoder_layers[index]
        store = getattr(layer, ADAPTER_ATTRIBUTE, None)
        if store is None:
            store = nn.ModuleDict()
            layer.add_module(ADAPTER_ATTRIBUTE, store)
        reference = next(layer.parameters())
        for position in positions:
            if position in store:
                raise ValueError(
                    f"Layer {index} already has a {position!r} adapter; call "
                    "remove_adapters(model) before inserting a new set, or load another set "
                    "with load_adapter_state_dict(model, state_dict)."
                )
            adapter = BottleneckAdapter(
                _hidden_size(layer), bottleneck, activation, layer_norm, dropout
            ).to(device=reference.device, dtype=reference.dtype)
            nn.init.zeros_(adapter.up_proj.weight)
            nn.init.zeros_(adapter.up_proj.bias)
            store[position] = adapter
            getattr(layer, position).register_forward_hook(adapter.forward_hook)
            inserted.append(adapter)
    return inserted


def insert_trainable_adapters(model, enabled=True, layer_norms=False, **adapter_options):
    """Insert adapters and make them the only trainable part of ``model`` (YAML helper).

    Meant for ``!apply:`` in hparams files, e.g. LASER SSFT with adapters instead of the top
    layers (build the ``SSLUpstream`` with ``trainable_layers: 0``)::

        adapters: !apply:lasersb.models.adapters.insert_trainable_adapters
          model: !ref <upstream>
          enabled: !ref <use_adapters>
          layers: top2
          bottleneck: 256

    Arguments
    ---------
    model : nn.Module
        HF wav2vec2-family model or ``SSLUpstream``.
    enabled : bool
        ``False`` leaves the model untouched and returns an empty list.
    layer_norms : bool
        Also train the encoder's layer norms.
    **adapter_options
        Passed to :func:`add_adapters` (``layers``, ``bottleneck``, ``positions``...).

    Returns
    -------
    nn.ModuleList
        The inserted adapters (empty when disabled).

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> len(insert_trainable_adapters(model, enabled=False))
    0
    >>> adapters = insert_trainable_adapters(model, layers="top1", bottleneck=4)
    >>> sum(p.numel() for p in model.parameters() if p.requires_grad)  # 2 adapters x 148
    296
    """
    if not enabled:
        return nn.ModuleList()
    adapters = add_adapters(model, **adapter_options)
    mark_trainable(model, adapters=True, layer_norms=layer_norms)
    return adapters


def _adapter_stores(model):
    """Yield ``(index, layer, {position: adapter})`` for each encoder layer holding adapters."""
    for index, layer in enumerate(find_encoder_layers(model)):
        store = getattr(layer, ADAPTER_ATTRIBUTE, None)
        if store is not None:
            yield index, layer, store


def get_adapters(model) -> dict[str, BottleneckAdapter]:
    """Return the inserted adapters keyed ``"layers.<index>.<position>"``.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> _ = add_adapters(model, layers=[0], bottleneck=4)
    >>> list(get_adapters(model))
    ['layers.0.attention', 'layers.0.feed_forward']
    """
    found = {}
    for index, _, store in _adapter_stores(model):
        for position in POSITIONS:
            if position in store:
                found[f"layers.{index}.{position}"] = store[position]
    return found


def remove_adapters(model) -> int:
    """Detach and delete every adapter of ``model``; return how many were removed.

    Example
    -------
    >>> from transformers import Wav2Vec2Model
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = Wav2Vec2Model(tiny_config("wav2vec2", hidden_size=16, num_layers=2, conv_dim=8))
    >>> _ = add_adapters(model, bottleneck=4)
    >>> remove_adapters(model), len(get_adapters(model))
    (4, 0)
    """
    removed = 0
    for _, layer, store in _adapter_stores(model):
        adapters = {id(a) for a in store.values()}
        for position in POSITIONS:
            hooks = getattr(layer, position)._forward_hooks
            for key in [
                k for k, hook in hooks.items() if id(getattr(hook, "__self__", None)) in adapters
            ]:
                del hooks[key]
        removed += len(store)
        delattr(layer, ADAPTER_ATTRIBUTE)
    return removed


def adapter_config(model) -> dict:
    """Describe the inserted adapter set (enough to re-create it with :func:`add_adapters`).

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> _ = add_adapters(model, layers=[1], bottleneck=4, positions="feed_forward")
    >>> adapter_config(model)["layers"], adapter_config(model)["positions"]
    ([1], ['feed_forward'])
    """
    adapters = get_adapters(model)
    if not adapters:
        return {}
    layers = sorted({int(name.split(".")[1]) for name in adapters})
    positions = [p for p in POSITIONS if any(name.endswith("." + p) for name in adapters)]
    first = next(iter(adapters.values()))
    config = {"layers": layers, "positions": positions, **first.config}
    config["hidden_size"] = first.input_size
    config["num_layers"] = len(find_encoder_layers(model))
    return config


def adapter_summary(model) -> dict | None:
    """Count, configuration and checksum of the adapter set of ``model`` (``None`` without).

    Recorded in results files, so a table row says which adapter set produced it.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> adapter_summary(model) is None
    True
    >>> _ = add_adapters(model, layers="top1", bottleneck=4)
    >>> summary = adapter_summary(model)
    >>> summary["count"], summary["config"]["layers"], len(summary["checksum"])
    (2, [1], 16)
    """
    import hashlib

    state = adapter_state_dict(model)
    if not state:
        return None
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(state.items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.float().contiguous().reshape(-1).numpy().tobytes())
    return {
        "count": len(get_adapters(model)),
        "config": adapter_config(model),
        "checksum": digest.hexdigest(),
    }


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """Return the adapters' parameters, keyed ``layers.<i>.<position>.<param>`` (CPU copies).

    The keys do not depend on where the encoder sits (HF model, ``SSLUpstream``, brain
    modules), so an adapter set can be loaded into any wrapper of the same encoder.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> _ = add_adapters(model, layers={"top": 1}, bottleneck=4, positions=["attention"])
    >>> sorted(adapter_state_dict(model))
    ['layers.1.attention.down_proj.bias', 'layers.1.attention.down_proj.weight', \
'layers.1.attention.up_proj.bias', 'layers.1.attention.up_proj.weight']
    """
    state = {}
    for name, adapter in get_adapters(model).items():
        for key, value in adapter.state_dict().items():
            state[f"{name}.{key}"] = value.detach().cpu().clone()
    return state


def load_adapter_state_dict(model, state_dict, strict=True) -> None:
    """Copy an adapter set (from :func:`adapter_state_dict`) into the model's adapters.

    This is how one frozen encoder serves several tasks: load the adapter set of the task
    to run; the encoder's own weights are never touched.

    Arguments
    ---------
    model : nn.Module
        Model with adapters inserted at the same layers/positions as ``state_dict``.
    state_dict : dict
        Adapter parameters keyed ``layers.<i>.<position>.<param>``.
    strict : bool
        Raise when keys are missing or unexpected.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> model = HubertModel(tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8))
    >>> _ = add_adapters(model, bottleneck=4)
    >>> state = {k: torch.ones_like(v) for k, v in adapter_state_dict(model).items()}
    >>> load_adapter_state_dict(model, state)
    >>> float(get_adapters(model)["layers.0.attention"].up_proj.weight.detach().sum())
    64.0
    """
    adapters = get_adapters(model)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unexpected = []
    for key, value in state_dict.items():
        parts = key.split(".")
        name = ".".join(parts[:3])
        if len(parts) < 4 or name not in adapters:
            unexpected.append(key)
            continue
        grouped.setdefault(name, {})[".".join(parts[3:])] = value
    missing = [name for name in adapters if name not in grouped]
    if strict and (unexpected or missing):
        raise ValueError(
            "Adapter set does not match the model's adapters: "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}, "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}. Insert adapters at the "
            "same layers/positions (add_adapters with the saved config) or use load_adapters."
        )
    for name, sub_state in grouped.items():
        adapters[name].load_state_dict(sub_state, strict=strict)


def _head_state(head):
    if head is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


def layer_norm_state_dict(model) -> dict[str, torch.Tensor]:
    """The encoder layer norms' parameters keyed by position (``layer_norms.<k>.<param>``).

    Keys do not depend on the wrapper (HF model or ``SSLUpstream``), like adapter keys.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("hubert", hidden_size=16, num_layers=1, conv_dim=8)
    >>> sorted(layer_norm_state_dict(HubertModel(cfg)))[:2]
    ['layer_norms.0.bias', 'layer_norms.0.weight']
    """
    state = {}
    for index, norm in enumerate(encoder_layer_norms(model)):
        for key, value in norm.state_dict().items():
            state[f"layer_norms.{index}.{key}"] = value.detach().cpu().clone()
    return state


def load_layer_norm_state_dict(model, state_dict) -> None:
    """Load :func:`layer_norm_state_dict` output back into the encoder's layer norms."""
    norms = encoder_layer_norms(model)
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        _, index, name = key.split(".", 2)
        grouped.setdefault(int(index), {})[name] = value
    if sorted(grouped) != list(range(len(norms))):
        raise ValueError(
            f"Saved layer norms ({len(grouped)}) do not match the encoder's ({len(norms)}): "
            "the adapter set was trained on another architecture."
        )
    for index, norm in enumerate(norms):
        norm.load_state_dict(grouped[index])


def save_adapters(path, model, head=None, extra=None, layer_norms=False):
    """Save only the adapters (and a task head) of ``model`` to ``path``.

    When the encoder's layer norms were trained with the adapters (``layer_norms=True``) they
    belong to the task too and are saved (a few thousand parameters) and swapped with it.

    Arguments
    ---------
    path : str or Path
        Output file (``torch.save`` format).
    model : nn.Module
        Model with adapters.
    head : nn.Module, optional
        Task head to save with the adapters (for example the CTC output layer).
    extra : dict, optional
        Extra JSON-friendly metadata (task name, tokenizer path...).
    layer_norms : bool
        Also save the encoder's layer norms (see :func:`encoder_layer_norms`).

    Example
    -------
    >>> import tempfile, pathlib
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8)
    >>> model, head = HubertModel(cfg), nn.Linear(16, 5)
    >>> _ = add_adapters(model, bottleneck=4)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "task.adapters.pt"
    >>> save_adapters(path, model, head)
    >>> fresh, fresh_head = HubertModel(cfg), nn.Linear(16, 5)
    >>> _ = load_adapters(path, fresh, fresh_head)
    >>> torch.equal(fresh_head.weight, head.weight), len(get_adapters(fresh))
    (True, 4)
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": adapter_config(model),
        "adapters": adapter_state_dict(model),
        "head": _head_state(head),
        "extra": dict(extra or {}),
        "layer_norms": layer_norm_state_dict(model) if layer_norms else None,
    }
    if not payload["adapters"]:
        raise ValueError("save_adapters: the model has no adapters; call add_adapters first.")
    torch.save(payload, str(path))


def load_adapters(path, model, head=None) -> dict:
    """Load an adapter set saved by :func:`save_adapters` into ``model`` (and ``head``).

    Adapters are inserted from the saved configuration when the model has none; when it has
    a set with another configuration, that set is removed first. Layer norms saved with the set
    are loaded too. Returns the saved payload.
    """
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Adapter checkpoint {path} not found; train the adapters first or fix the path."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a lasersb adapter checkpoint (save_adapters output).")
    config = payload["config"]
    current = adapter_config(model)
    wanted = {k: config[k] for k in ("layers", "positions", "bottleneck", "layer_norm")}
    if current and {k: current[k] for k in wanted} != wanted:
        remove_adapters(model)
        current = {}
    if not current:
        add_adapters(
            model,
            layers=config["layers"],
            bottleneck=config["bottleneck"],
            positions=config["positions"],
            layer_norm=config["layer_norm"],
            activation=config["activation"],
            dropout=config["dropout"],
        )
    load_adapter_state_dict(model, payload["adapters"])
    if payload.get("layer_norms"):
        load_layer_norm_state_dict(model, payload["layer_norms"])
    if head is not None:
        if payload.get("head") is None:
            raise ValueError(f"{path} holds no task head; it was saved without one.")
        head.load_state_dict(payload["head"])
    return payload


def _feature_encoder_modules(model) -> list[nn.Module]:
    return [
        module
        for name, module in model.named_modules()
        if name.split(".")[-1] in ("feature_extractor", "feature_encoder")
    ]


def encoder_layer_norms(model) -> nn.ModuleList:
    """Return the encoder's ``nn.LayerNorm`` modules (not the CNN's, not the adapters').

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8)
    >>> len(encoder_layer_norms(HubertModel(cfg)))  # projection, encoder, 2 x 2 per layer
    6
    """
    excluded = set()
    for module in _feature_encoder_modules(model):
        excluded.update(id(m) for m in module.modules())
    for adapter in (m for m in model.modules() if isinstance(m, BottleneckAdapter)):
        excluded.update(id(m) for m in adapter.modules())
    return nn.ModuleList(
        m for m in model.modules() if isinstance(m, nn.LayerNorm) and id(m) not in excluded
    )


def mark_trainable(model, adapters=True, layer_norms=False, extra_modules=()) -> int:
    """Freeze ``model`` except its adapters, optionally its layer norms, and extra modules.

    Arguments
    ---------
    model : nn.Module
        The adapted encoder (HF model or ``SSLUpstream``).
    adapters : bool
        Train the adapters.
    layer_norms : bool
        Train the encoder's layer norms (see :func:`encoder_layer_norms`).
    extra_modules : iterable of nn.Module
        Further modules to train (the task head).

    Returns
    -------
    int
        Number of trainable parameters in ``model`` and ``extra_modules``.

    Example
    -------
    >>> from transformers import HubertModel
    >>> from lasersb.models.tiny_upstream import tiny_config
    >>> cfg = tiny_config("hubert", hidden_size=16, num_layers=2, conv_dim=8)
    >>> model, head = HubertModel(cfg), nn.Linear(16, 5)
    >>> _ = add_adapters(model, bottleneck=4)
    >>> mark_trainable(model, extra_modules=[head])  # 4 adapters x 148 + 85
    677
    """
    for param in model.parameters():
        param.requires_grad_(False)
    if adapters:
        for adapter in get_adapters(model).values():
            adapter.requires_grad_(True)
    if layer_norms:
        for norm in encoder_layer_norms(model):
            norm.requires_grad_(True)
    params = {id(p): p for p in model.parameters()}
    for module in extra_modules or ():
        module.requires_grad_(True)
        params.update({id(p): p for p in module.parameters()})
    return sum(p.numel() for p in params.values() if p.requires_grad)


def parameter_groups(model, head=None) -> dict[str, nn.Module]:
    """Split an adapted encoder (+ head) into the groups reported by :func:`parameter_report`.

    Groups: ``feature encoder (CNN)``, ``transformer (rest)`` (everything else in the encoder),
    ``encoder layer norms``, ``adapters`` and ``head``.

    Example
    -------
    >>> list(parameter_groups(nn.Linear(2, 2)))
    ['encoder']
    """
    groups: dict[str, nn.Module] = {}
    cnn = _feature_encoder_modules(model)
    try:
        find_encoder_layers(model)
    except (ValueError, TypeError):
        groups["encoder"] = model
    else:
        if cnn:
            groups["feature encoder (CNN)"] = nn.ModuleList(cnn)
        groups["transformer (rest)"] = model
        groups["encoder layer norms"] = encoder_layer_norms(model)
        adapters = get_adapters(model)
        if adapters:
            groups["adapters"] = nn.ModuleList(adapters.values())
    if head is not None:
        groups["head"] = head
    return groups


def parameter_report(modules, total_label="total") -> tuple[dict, str]:
    """Count trainable / total parameters per group, each parameter counted once.

    A parameter that belongs to several groups is counted in the smallest of them (so a
    group ``transformer`` that contains the ``adapters`` group reports the rest).

    Arguments
    ---------
    modules : nn.Module or dict of str -> nn.Module
        The groups (a single module is split with :func:`parameter_groups`).
    total_label : str
        Label of the total row.

    Returns
    -------
    report : dict
        ``{group: {"trainable": int, "total": int}}`` plus ``total_label`` and
        ``"trainable_fraction"`` (trainable / total over all groups).
    markdown : str
        The same as a Markdown table.

    Example
    -------
    >>> a, b = nn.Linear(4, 4), nn.Linear(4, 2)
    >>> _ = a.requires_grad_(False)
    >>> report, table = parameter_report({"frozen": a, "head": b})
    >>> report["total"], round(report["trainable_fraction"], 3)
    ({'trainable': 10, 'total': 30}, 0.333)
    >>> print(table.splitlines()[0])
    | group | trainable | total | trainable % of total |
    """
    if isinstance(modules, nn.Module):
        modules = parameter_groups(modules)
    group_params = {
        name: {id(p): p for p in module.parameters()} for name, module in modules.items()
    }
    owner: dict[int, str] = {}
    for name, params in sorted(group_params.items(), key=lambda item: len(item[1])):
        for pid in params:
            owner.setdefault(pid, name)
    report: dict = {}
    all_params = {}
    for name, params in group_params.items():
        own = [p for pid, p in params.items() if owner[pid] == name]
        all_params.update({id(p): p for p in own})
        report[name] = {
            "trainable": sum(p.numel() for p in own if p.requires_grad),
            "total": sum(p.numel() for p in own),
        }
    total = sum(p.numel() for p in all_params.values())
    trainable = sum(p.numel() for p in all_params.values() if p.requires_grad)
    report[total_label] = {"trainable": trainable, "total": total}
    report["trainable_fraction"] = trainable / total if total else 0.0
    lines = [
        "| group | trainable | total | trainable % of total |",
        "|---|---:|---:|---:|",
    ]
    for name in [*modules, total_label]:
        row = report[name]
        share = 100.0 * row["trainable"] / total if total else math.nan
        lines.append(f"| {name} | {row['trainable']:,} | {row['total']:,} | {share:.2f} |")
    return report, "\n".join(lines)


def count_parameters(modules: Iterable[nn.Module] | nn.Module, trainable_only=False) -> int:
    """Count the unique parameters of one or several modules.

    Example
    -------
    >>> count_parameters([nn.Linear(2, 2), nn.Linear(2, 1)])
    9
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    params = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in params.values() if p.requires_grad or not trainable_only)


__all__: Sequence[str] = (
    "BottleneckAdapter",
    "add_adapters",
    "adapter_config",
    "adapter_state_dict",
    "adapter_summary",
    "count_parameters",
    "encoder_layer_norms",
    "find_encoder_layers",
    "get_adapters",
    "insert_trainable_adapters",
    "layer_norm_state_dict",
    "load_layer_norm_state_dict",
    "load_adapter_state_dict",
    "load_adapters",
    "mark_trainable",
    "parameter_groups",
    "parameter_report",
    "remove_adapters",
    "resolve_layer_indices",
    "save_adapters",
)
