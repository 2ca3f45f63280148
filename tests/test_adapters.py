"""Tests of lasersb.models.adapters: insertion, identity at start, trainability, swapping,
adapter-only checkpoints and the parameter accounting against the ICASSP 2022 paper."""

import copy

import pytest
import torch
from torch import nn

from lasersb.models.adapters import (
    BottleneckAdapter,
    adapter_config,
    adapter_state_dict,
    add_adapters,
    find_encoder_layers,
    get_adapters,
    load_adapter_state_dict,
    load_adapters,
    mark_trainable,
    parameter_groups,
    parameter_report,
    remove_adapters,
    resolve_layer_indices,
    save_adapters,
)

KINDS = ("hubert", "wavlm", "wav2vec2")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids oversubscription when the two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wavs(batch=2, samples=4000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.randn(batch, samples, generator=gen)
    wavs[1, samples // 2 :] = 0.0
    return wavs


def _load(folder):
    from lasersb.models.upstream import load_upstream

    return load_upstream(folder)


def _randomise(adapters, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapters:
            for param in adapter.parameters():
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))


def _hidden(model, wavs):
    with torch.no_grad():
        return model(wavs, output_hidden_states=True).hidden_states


def _encoder_state(model):
    names = set()
    for name, _ in model.named_parameters():
        if ".bottleneck_adapters." not in name:
            names.add(name)
    return {k: v.clone() for k, v in model.state_dict().items() if k in names}


@pytest.mark.parametrize("kind", KINDS)
def test_adapted_model_starts_identical(tiny_upstreams, kind):
    model = _load(tiny_upstreams[kind])
    wavs = _wavs()
    before = _hidden(model, wavs)
    adapters = add_adapters(model, layers="all", bottleneck=8, layer_norm=True)
    assert len(adapters) == 2 * model.config.num_hidden_layers
    after = _hidden(model, wavs)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    # Trained adapters change the output; removing them restores the original model.
    _randomise(adapters, seed=1)
    assert not torch.allclose(_hidden(model, wavs)[-1], before[-1])
    assert remove_adapters(model) == len(adapters)
    assert all(torch.equal(a, b) for a, b in zip(before, _hidden(model, wavs)))
    assert not any("bottleneck_adapters" in name for name, _ in model.named_parameters())


def test_stable_layer_norm_variant_is_adapted(tmp_path):
    from lasersb.models.tiny_upstream import build_tiny_upstream

    folder = build_tiny_upstream(
        "wav2vec2", tmp_path / "large", feat_extract_norm="layer", do_stable_layer_norm=True
    )
    model = _load(folder)
    wavs = _wavs()
    before = _hidden(model, wavs)[-1]
    adapters = add_adapters(model, layers={"top": 2}, bottleneck=4)
    assert type(find_encoder_layers(model)[0]).__name__.endswith("StableLayerNorm")
    assert torch.equal(_hidden(model, wavs)[-1], before)
    _randomise(adapters, seed=2)
    assert not torch.allclose(_hidden(model, wavs)[-1], before)


@pytest.mark.parametrize("kind", ("hubert", "wavlm"))
def test_adapters_act_before_the_residual(tiny_upstreams, kind):
    """Houlsby placement: the adapter transforms the sub-layer output, the layer adds x."""
    model = _load(tiny_upstreams[kind])
    layer = find_encoder_layers(model)[0]
    adapters = add_adapters(model, layers=[0], bottleneck=4)
    _randomise(adapters, seed=3)
    attn_adapter, ff_adapter = adapters
    x = torch.randn(1, 7, model.config.hidden_size)
    extra = {}
    if kind == "wavlm":
        extra = {"index": 0}
    with torch.no_grad():
        out = layer(x, **extra)
        out = out[0] if isinstance(out, tuple) else out
        attn = layer.attention.forward(x, **extra)[0]  # .forward bypasses the hook
        h = layer.layer_norm(x + layer.dropout(attn_adapter(attn)))
        expected = layer.final_layer_norm(h + ff_adapter(layer.feed_forward.forward(h)))
    torch.testing.assert_close(out, expected)


def test_layer_selection_and_positions(tiny_upstreams):
    model = _load(tiny_upstreams["hubert"])
    adapters = add_adapters(model, layers={"top": 2}, bottleneck=4, positions=["feed_forward"])
    assert len(adapters) == 2
    assert sorted(get_adapters(model)) == ["layers.1.feed_forward", "layers.2.feed_forward"]
    assert adapter_config(model)["layers"] == [1, 2]
    with pytest.raises(ValueError, match="remove_adapters"):
        add_adapters(model, layers=[2], bottleneck=4, positions=["feed_forward"])
    # A different position on the same layer is fine.
    add_adapters(model, layers=[2], bottleneck=4, positions=["attention"])
    assert len(get_adapters(model)) == 3
    with pytest.raises(ValueError, match="positions"):
        add_adapters(model, positions=["output"])
    assert resolve_layer_indices("top3", 12) == [9, 10, 11]
    assert resolve_layer_indices([-2, 0, 0], 4) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer_indices({"top": 5}, 4)
    with pytest.raises(ValueError, match="Unknown layer selection"):
        resolve_layer_indices("bottom", 4)
    with pytest.raises(ValueError, match="transformer layers"):
        add_adapters(nn.Linear(3, 3))


def test_ssl_upstream_wrapper_is_adaptable(tiny_upstreams):
    from lasersb.models.upstream import SSLUpstream

    upstream = SSLUpstream(tiny_upstreams["wavlm"], trainable_layers=0)
    wavs, lens = _wavs(), torch.tensor([1.0, 0.5])
    before = upstream(wavs, lens).last_hidden_state
    adapters = add_adapters(upstream, layers={"top": 1}, bottleneck=4)
    head = nn.Linear(upstream.hidden_size, 5)
    mark_trainable(upstream, layer_norms=True, extra_modules=[head])
    out = upstream(wavs, lens).last_hidden_state
    assert torch.equal(out.detach(), before)
    head(out).sum().backward()  # gradients reach the adapters through the frozen encoder
    assert adapters[-1].up_proj.weight.grad is not None
    assert sorted(get_adapters(upstream)) == ["layers.2.attention", "layers.2.feed_forward"]


def test_only_adapter_norm_and_head_parameters_change(tiny_upstreams):
    model = _load(tiny_upstreams["wav2vec2"])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    add_adapters(model, layers={"top": 2}, bottleneck=8)
    head = nn.Linear(model.config.hidden_size, 6)
    trainable = mark_trainable(model, layer_norms=True, extra_modules=[head])
    params = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
    assert sum(p.numel() for p in params) == trainable
    optimiser = torch.optim.Adam(params, lr=1e-2)
    wavs = _wavs()
    target = torch.randint(0, 6, (2,))
    model.train()
    for _ in range(3):
        logits = head(model(wavs).last_hidden_state).mean(1)
        loss = nn.functional.cross_entropy(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    changed = {
        k
        for k, v in model.state_dict().items()
        if k in original and not torch.equal(v, original[k])
    }
    assert changed, "training changed nothing"
    assert all("layer_norm" in k for k in changed), sorted(changed)
    assert any(".encoder.layers." in f".{k}" for k in changed)  # the per-layer norms moved
    moved = [a.up_proj.weight.abs().sum() > 0 for a in get_adapters(model).values()]
    assert all(moved)
    # CNN and every attention / feed-forward weight are untouched.
    for key, value in original.items():
        if "layer_norm" not in key:
            assert torch.equal(model.state_dict()[key], value), key


def test_two_adapter_sets_share_one_frozen_encoder(tiny_upstreams, tmp_path):
    model = _load(tiny_upstreams["hubert"])
    encoder_before = _encoder_state(model)
    wavs = _wavs()
    heads = {}
    outputs = {}
    for task, seed in (("english", 10), ("french", 11)):
        remove_adapters(model)
        adapters = add_adapters(model, layers={"top": 2}, bottleneck=8)
        _randomise(adapters, seed)
        torch.manual_seed(seed)
        heads[task] = nn.Linear(model.config.hidden_size, 4 + seed % 3)
        save_adapters(tmp_path / f"{task}.pt", model, heads[task], extra={"task": task})
        with torch.no_grad():
            outputs[task] = heads[task](model(wavs).last_hidden_state)
    assert not torch.allclose(outputs["english"][..., :4], outputs["french"][..., :4])
    # Swap at run time on the same encoder, in any order, each set gives its own outputs.
    for task in ("english", "french", "english"):
        head = nn.Linear(model.config.hidden_size, heads[task].out_features)
        payload = load_adapters(tmp_path / f"{task}.pt", model, head)
        assert payload["extra"]["task"] == task
        with torch.no_grad():
            assert torch.equal(head(model(wavs).last_hidden_state), outputs[task])
    # Swapping by state dict (no file) works too.
    english = torch.load(tmp_path / "english.pt", weights_only=True)["adapters"]
    load_adapter_state_dict(model, english)
    assert adapter_state_dict(model).keys() == english.keys()
    encoder_after = _encoder_state(model)
    assert encoder_after.keys() == encoder_before.keys()
    assert all(torch.equal(encoder_after[k], v) for k, v in encoder_before.items())


def test_adapter_checkpoint_is_small_and_reloads_identically(tiny_upstreams, tmp_path):
    model = _load(tiny_upstreams["wavlm"])
    adapters = add_adapters(model, layers={"top": 1}, bottleneck=4, positions=["feed_forward"])
    _randomise(adapters, seed=5)
    head = nn.Linear(model.config.hidden_size, 8)
    wavs = _wavs()
    with torch.no_grad():
        expected = head(model(wavs).last_hidden_state)
    save_adapters(tmp_path / "task.pt", model, head)
    torch.save(model.state_dict(), tmp_path / "full.pt")
    ratio = (tmp_path / "task.pt").stat().st_size / (tmp_path / "full.pt").stat().st_size
    assert ratio < 0.1, ratio
    fresh, fresh_head = _load(tiny_upstreams["wavlm"]), nn.Linear(model.config.hidden_size, 8)
    load_adapters(tmp_path / "task.pt", fresh, fresh_head)
    with torch.no_grad():
        assert torch.equal(fresh_head(fresh(wavs).last_hidden_state), expected)
    # A model with another adapter configuration gets it replaced.
    other = _load(tiny_upstreams["wavlm"])
    add_adapters(other, layers="all", bottleneck=2)
    load_adapters(tmp_path / "task.pt", other)
    assert sorted(get_adapters(other)) == ["layers.2.feed_forward"]
    with pytest.raises(ValueError, match="does not match"):
        load_adapter_state_dict(fresh, {"layers.0.attention.up_proj.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="Adapter checkpoint"):
        load_adapters(tmp_path / "missing.pt", fresh)
    (tmp_path / "bad.pt").write_bytes(b"")
    torch.save({"a": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a lasersb adapter checkpoint"):
        load_adapters(tmp_path / "bad.pt", fresh)


def test_deepcopy_keeps_hooks_on_the_copied_adapters(tiny_upstreams):
    model = _load(tiny_upstreams["hubert"])
    add_adapters(model, layers="all", bottleneck=4)
    clone = copy.deepcopy(model)
    _randomise(get_adapters(clone).values(), seed=7)
    wavs = _wavs()
    original = _load(tiny_upstreams["hubert"])
    assert torch.equal(_hidden(model, wavs)[-1], _hidden(original, wavs)[-1])
    assert not torch.allclose(_hidden(clone, wavs)[-1], _hidden(original, wavs)[-1])


def test_bottleneck_adapter_options():
    adapter = BottleneckAdapter(8, bottleneck=2, activation="swish", layer_norm=True, dropout=0.1)
    assert isinstance(adapter.norm, nn.LayerNorm)
    x = torch.randn(3, 8)
    assert torch.equal(adapter.eval()(x), x)
    assert isinstance(BottleneckAdapter(8, 2, activation=nn.Tanh).activation, nn.Tanh)
    with pytest.raises(ValueError, match="activation"):
        BottleneckAdapter(8, 2, activation="sparkle")
    with pytest.raises(ValueError, match="bottleneck"):
        BottleneckAdapter(8, 0)


def _base_sized(selection):
    """wav2vec 2.0 Base (transformers' default config) on the meta device, + a 32-letter head."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config())
        head = nn.Linear(768, 32)  # fairseq's letter dictionary: 28 letters + 4 specials
    if selection == "full":
        model.requires_grad_(True)
        model.feature_extractor.requires_grad_(False)
    else:
        add_adapters(model, layers=selection, bottleneck=256)
        mark_trainable(model, layer_norms=True, extra_modules=[head])
    report, table = parameter_report(parameter_groups(model, head))
    return report, table


@pytest.mark.parametrize(
    ("selection", "paper_percent", "tolerance"),
    [("full", 95.6, 0.15), ("all", 9.2, 0.1), ({"top": 6}, 4.85, 0.05)],
)
def test_trainable_fraction_matches_the_paper_on_a_base_sized_model(
    selection, paper_percent, tolerance
):
    report, table = _base_sized(selection)
    assert "| adapters |" in table or selection == "full"
    measured = 100.0 * report["trainable_fraction"]
    assert abs(measured - paper_percent) < tolerance, (measured, paper_percent, table)
    if selection != "full":
        # Two adapters of 2 * 768 * 256 + 256 + 768 parameters per adapted layer.
        layers = 12 if selection == "all" else 6
        assert report["adapters"]["trainable"] == layers * 2 * (2 * 768 * 256 + 256 + 768)
        assert report["feature encoder (CNN)"]["trainable"] == 0
