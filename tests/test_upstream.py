"""Tests of lasersb.models.upstream and lasersb.models.tiny_upstream on the tiny upstreams."""

import shutil

import pytest
import torch

from lasersb.models.tiny_upstream import FEATURE_EXTRACTOR_SETTINGS, build_tiny_upstream, main
from lasersb.models.upstream import (
    SSLUpstream,
    UpstreamNotFoundError,
    UpstreamOutput,
    load_upstream,
)

KINDS = ("hubert", "wavlm", "wav2vec2")


@pytest.fixture(scope="module")
def large_style_upstream(tmp_path_factory):
    """A tiny pre-norm ("large"-style) wav2vec 2.0: layer-norm conv, attention mask, normalise."""
    return build_tiny_upstream(
        "wav2vec2",
        tmp_path_factory.mktemp("large_style") / "w2v",
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        do_normalize=True,
        return_attention_mask=True,
    )


def _waves(*lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(length, generator=generator) for length in lengths]


def _pad(waves):
    total = max(w.numel() for w in waves)
    batch = torch.zeros(len(waves), total)
    for i, wav in enumerate(waves):
        batch[i, : wav.numel()] = wav
    lens = torch.tensor([w.numel() / total for w in waves])
    return batch, lens


def _trainable_names(upstream):
    return {name for name, p in upstream.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------- tiny builders
def test_tiny_upstream_is_deterministic_and_seeded(tmp_path):
    state_before = torch.random.get_rng_state()
    first = load_upstream(build_tiny_upstream("wavlm", tmp_path / "a", seed=3))
    assert torch.equal(torch.random.get_rng_state(), state_before)  # build+load keep the RNG
    second = load_upstream(build_tiny_upstream("wavlm", tmp_path / "b", seed=3))
    other = load_upstream(build_tiny_upstream("wavlm", tmp_path / "c", seed=4))
    for (name, p1), p2 in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(p1, p2), name
    assert any(not torch.equal(p1, p3) for p1, p3 in zip(first.parameters(), other.parameters()))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_upstream_structure(tiny_upstreams, kind):
    model = load_upstream(tiny_upstreams[kind])
    expected_class = {"hubert": "HubertModel", "wavlm": "WavLMModel", "wav2vec2": "Wav2Vec2Model"}
    assert type(model).__name__ == expected_class[kind]
    config = model.config
    assert config.hidden_size == 64 and config.num_hidden_layers == 3
    assert list(config.conv_stride) == [5, 2, 2, 2, 2, 2, 2]
    assert list(config.conv_kernel) == [10, 3, 3, 3, 3, 2, 2]
    assert config.num_conv_pos_embeddings == 16
    # switched off at load time although the saved config has them on
    assert config.apply_spec_augment is False and config.layerdrop == 0.0
    saved = (tiny_upstreams[kind] / "config.json").read_text()
    assert '"apply_spec_augment": true' in saved and '"layerdrop": 0.1' in saved
    assert (tiny_upstreams[kind] / "model.safetensors").is_file()
    upstream = SSLUpstream(tiny_upstreams[kind])
    settings = FEATURE_EXTRACTOR_SETTINGS[kind]
    assert upstream.normalize_waveform == settings["do_normalize"]
    assert upstream.use_attention_mask == settings["return_attention_mask"]


def test_tiny_upstream_cli(tmp_path, capsys):
    assert main(["--kind", "hubert", "--out", str(tmp_path / "cli"), "--num-layers", "2"]) is None
    assert "Wrote tiny hubert upstream" in capsys.readouterr().out
    assert SSLUpstream(tmp_path / "cli").num_layers == 2


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_and_lengths(tiny_upstreams, kind):
    upstream = SSLUpstream(tiny_upstreams[kind]).eval()
    lengths = [16000, 9000, 720]
    batch, lens = _pad(_waves(*lengths))
    out = upstream(batch, lens)
    assert isinstance(out, UpstreamOutput)
    assert len(out.hidden_states) == upstream.num_layers + 1 == 4
    for hidden in out.hidden_states:
        assert hidden.shape == (3, 49, upstream.hidden_size)
    assert out.last_hidden_state.shape == (3, 49, 64)
    # conv stride 320, receptive field 400: floor((n - 400) / 320) + 1
    expected = [(n - 400) // 320 + 1 for n in lengths]
    assert out.frame_lens.tolist() == expected == [49, 27, 2]
    assert out.frame_lens.dtype == torch.long
    assert out.padding_mask.dtype == torch.bool
    assert out.padding_mask.sum(dim=1).tolist() == [49 - n for n in expected]
    assert upstream.frames_from_samples(lengths).tolist() == expected
    # frames_from_samples agrees with what the model really outputs for one utterance
    for n in (400, 719, 720, 1039, 1040):
        single = upstream(torch.zeros(n) + 0.01)
        assert single.last_hidden_state.shape[1] == upstream.frames_from_samples(n).item()
    assert upstream.frames_from_samples(399).item() == 0


def test_wraps_a_loaded_model(tiny_upstreams):
    model = load_upstream(tiny_upstreams["wavlm"])
    upstream = SSLUpstream(model, trainable_layers=1)
    assert upstream.model is model and upstream.use_attention_mask  # its folder's settings
    reference = SSLUpstream(tiny_upstreams["wavlm"]).eval()
    batch = torch.randn(1, 3000)
    with torch.no_grad():
        torch.testing.assert_close(
            upstream.eval()(batch).last_hidden_state, reference(batch).last_hidden_state
        )


def test_no_hidden_states_option(tiny_upstreams):
    upstream = SSLUpstream(tiny_upstreams["hubert"], output_hidden_states=False)
    out = upstream(torch.randn(1, 4000))
    assert out.hidden_states is None and out.last_hidden_state.shape == (1, 12, 64)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_batch_vs_single(tiny_upstreams, kind):
    """The full-length item of a padded batch equals its single forward exactly; a padded one
    only approximately, because these base-style models group-normalise the first conv layer
    over the whole (padded) length."""
    upstream = SSLUpstream(tiny_upstreams[kind]).eval()
    short, full = _waves(8000, 16000)
    batch, lens = _pad([short, full])
    out = upstream(batch, lens)
    alone_full = upstream(full.unsqueeze(0))
    torch.testing.assert_close(
        out.last_hidden_state[1], alone_full.last_hidden_state[0], atol=1e-4, rtol=1e-4
    )
    alone_short = upstream(short.unsqueeze(0))
    frames = out.frame_lens[0].item()
    assert frames == alone_short.last_hidden_state.shape[1] == 24
    diff = (out.last_hidden_state[0, :frames] - alone_short.last_hidden_state[0]).abs().max()
    assert torch.isfinite(out.last_hidden_state).all()
    assert diff > 1e-3  # measured 1-2.3 on these random tiny models: documented, not exact


def test_padded_batch_exact_for_layer_norm_models(large_style_upstream):
    upstream = SSLUpstream(large_style_upstream).eval()
    assert upstream.use_attention_mask and upstream.normalize_waveform
    waves = _waves(8000, 16000, 5000, seed=1)
    batch, lens = _pad(waves)
    out = upstream(batch, lens)
    for i, wav in enumerate(waves):
        alone = upstream(wav.unsqueeze(0))
        frames = out.frame_lens[i].item()
        assert frames == alone.last_hidden_state.shape[1]
        for layer, (batched, single) in enumerate(zip(out.hidden_states, alone.hidden_states)):
            torch.testing.assert_close(
                batched[i, :frames], single[0], atol=1e-4, rtol=1e-4, msg=f"layer {layer}"
            )


def test_attention_mask_follows_feature_extractor(tiny_upstreams):
    seen = {}

    def spy(module, args, kwargs):
        seen["mask"] = kwargs.get("attention_mask")

    batch, lens = _pad(_waves(8000, 16000))
    for kind, expected in (("wavlm", True), ("hubert", False)):
        upstream = SSLUpstream(tiny_upstreams[kind])
        handle = upstream.model.register_forward_pre_hook(spy, with_kwargs=True)
        upstream(batch, lens)
        handle.remove()
        if expected:
            expected_mask = torch.arange(16000) < torch.tensor([[8000], [16000]])
            assert torch.equal(seen["mask"].bool(), expected_mask)
        else:
            assert seen["mask"] is None


def test_normalisation_over_valid_samples_only(tiny_upstreams):
    seen = {}

    def spy(module, args, kwargs):
        seen["input"] = args[0] if args else kwargs["input_values"]

    short, full = _waves(8000, 16000)
    batch, lens = _pad([3.0 * short + 0.5, full])
    batch[0, 8000:] = 7.0  # garbage in the padding must not matter
    upstream = SSLUpstream(tiny_upstreams["wav2vec2"]).eval()
    assert upstream.normalize_waveform
    handle = upstream.model.register_forward_pre_hook(spy, with_kwargs=True)
    out = upstream(batch, lens)
    handle.remove()
    valid = seen["input"][0, :8000]
    assert abs(valid.mean().item()) < 1e-5 and abs(valid.std(unbiased=False).item() - 1) < 1e-4
    assert torch.equal(seen["input"][0, 8000:], torch.zeros(8000))
    # scale/offset invariance: same features as the raw short utterance alone
    alone = upstream(short.unsqueeze(0))
    torch.testing.assert_close(
        upstream(3.0 * short.unsqueeze(0) + 0.5).last_hidden_state,
        alone.last_hidden_state,
        atol=1e-4,
        rtol=1e-4,
    )
    assert out.frame_lens.tolist() == [24, 49]
    # models without do_normalize only zero the padding
    hubert = SSLUpstream(tiny_upstreams["hubert"])
    handle = hubert.model.register_forward_pre_hook(spy, with_kwargs=True)
    hubert(batch, lens)
    handle.remove()
    torch.testing.assert_close(seen["input"][0, :8000], batch[0, :8000])
    assert torch.equal(seen["input"][0, 8000:], torch.zeros(8000))


# ----------------------------------------------------------------------------- trainability
@pytest.mark.parametrize("kind", KINDS)
def test_trainable_top_layers(tiny_upstreams, kind):
    upstream = SSLUpstream(
        tiny_upstreams[kind],
        trainable_layers=2,
        train_encoder_layer_norm=False,
        dropout_in_frozen=False,
    )
    names = _trainable_names(upstream)
    layer_params = {
        f"model.encoder.layers.{i}.{name}"
        for i in (1, 2)
        for name, _ in upstream.encoder_layers[i].named_parameters()
    }
    assert names == layer_params
    assert upstream.trainable_layer_indices == (1, 2)
    # frozen parts in eval mode even when the wrapper trains; trainable layers follow it
    upstream.train()
    assert upstream.training and not upstream.model.training
    assert not upstream.encoder_layers[0].training
    assert upstream.encoder_layers[1].training and upstream.encoder_layers[2].training
    upstream.eval()
    assert not upstream.encoder_layers[2].training


def test_trainable_layer_list_and_feature_encoder(tiny_upstreams):
    upstream = SSLUpstream(
        tiny_upstreams["hubert"],
        trainable_layers=[0, -1],
        freeze_feature_encoder=False,
        train_encoder_layer_norm=False,
    )
    assert upstream.trainable_layer_indices == (0, 2)
    expected = {
        f"model.{prefix}.{name}"
        for prefix, module in (
            ("encoder.layers.0", upstream.encoder_layers[0]),
            ("encoder.layers.2", upstream.encoder_layers[2]),
            ("feature_extractor", upstream.model.feature_extractor),
        )
        for name, _ in module.named_parameters()
    }
    assert _trainable_names(upstream) == expected
    assert any(name.startswith("model.feature_extractor.conv_layers.0.") for name in expected)
    assert SSLUpstream(tiny_upstreams["hubert"], trainable_layers=0).has_trainable is False
    with pytest.raises(ValueError, match="trainable_layers=4 but the upstream has 3 layers"):
        SSLUpstream(tiny_upstreams["hubert"], trainable_layers=4)
    with pytest.raises(ValueError, match="out of range"):
        SSLUpstream(tiny_upstreams["hubert"], trainable_layers=[3])


def test_final_layer_norm_of_pre_norm_models_trains_with_top_layer(large_style_upstream):
    upstream = SSLUpstream(large_style_upstream, trainable_layers=1)
    names = _trainable_names(upstream)
    assert {"model.encoder.layer_norm.weight", "model.encoder.layer_norm.bias"} <= names
    lower = SSLUpstream(large_style_upstream, trainable_layers=[0], train_encoder_layer_norm=False)
    assert not any("encoder.layer_norm" in name for name in _trainable_names(lower))


@pytest.mark.parametrize("kind", KINDS)
def test_release_trainable_set_and_train_mode(tiny_upstreams, kind):
    """Default: the LASER release's set (top layers + encoder layer norm), whole model in train."""
    upstream = SSLUpstream(tiny_upstreams[kind], trainable_layers=2)
    layer_params = {
        f"model.encoder.layers.{i}.{name}"
        for i in (1, 2)
        for name, _ in upstream.encoder_layers[i].named_parameters()
    }
    norm = {"model.encoder.layer_norm.weight", "model.encoder.layer_norm.bias"}
    assert _trainable_names(upstream) == layer_params | norm
    assert set(upstream.trainable_parameter_names()) == layer_params | norm
    upstream.train()
    assert upstream.model.training and upstream.encoder_layers[0].training  # dropout everywhere
    upstream.eval()
    assert not upstream.model.training and not upstream.encoder_layers[2].training
    # A frozen upstream stays in eval mode whatever the wrapper's mode.
    frozen = SSLUpstream(tiny_upstreams[kind], trainable_layers=0).train()
    assert not frozen.model.training and frozen.trainable_parameter_names() == []
    # The norm of post-norm base models is applied before layer 0: it gets a gradient through
    # the frozen layers, which get none themselves.
    batch, lens = _pad(_waves(6000, 8000))
    out = upstream.train()(batch, lens)
    out.last_hidden_state[~out.padding_mask].pow(2).mean().backward()
    grads = {name for name, p in upstream.named_parameters() if p.grad is not None}
    assert grads == layer_params | norm
    assert upstream.model.encoder.layer_norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_params_get_no_grad(tiny_upstreams, kind):
    upstream = SSLUpstream(
        tiny_upstreams[kind],
        trainable_layers=1,
        train_encoder_layer_norm=False,
        dropout_in_frozen=False,
    ).train()
    batch, lens = _pad(_waves(6000, 8000))
    out = upstream(batch, lens)
    first = upstream(batch, lens)
    # frozen lower layers run without dropout: their hidden states are reproducible in train mode
    for layer in range(3):
        torch.testing.assert_close(out.hidden_states[layer], first.hidden_states[layer])
    # no autograd graph (memory) for the frozen part below the trainable layer
    assert all(out.hidden_states[layer].grad_fn is None for layer in range(3))
    assert out.last_hidden_state.grad_fn is not None
    valid = ~out.padding_mask
    out.last_hidden_state[valid].pow(2).mean().backward()
    for name, param in upstream.named_parameters():
        if name.startswith("model.encoder.layers.2."):
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    assert any(
        param.grad.abs().sum() > 0
        for name, param in upstream.named_parameters()
        if param.grad is not None
    )


def test_fully_frozen_runs_without_graph(tiny_upstreams):
    upstream = SSLUpstream(tiny_upstreams["wavlm"]).train()
    out = upstream(torch.randn(2, 4000), torch.tensor([1.0, 0.6]))
    assert out.last_hidden_state.grad_fn is None
    assert all(h.grad_fn is None for h in out.hidden_states)
    again = upstream(torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)))
    same = upstream(torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(again.last_hidden_state, same.last_hidden_state)  # no dropout


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", KINDS)
def test_save_hf_round_trip(tiny_upstreams, kind, tmp_path):
    from transformers import AutoModel

    upstream = SSLUpstream(tiny_upstreams[kind], trainable_layers=1)
    with torch.no_grad():  # simulate fine-tuning so the round trip is not the original file
        for param in upstream.encoder_layers[2].parameters():
            param.add_(0.01 * torch.randn_like(param))
    upstream.eval()
    batch, lens = _pad(_waves(8000, 12000))
    # no_grad on both sides: torch's attention fast path (no autograd) differs at ~1e-7
    with torch.no_grad():
        reference = upstream(batch, lens)
    folder = upstream.save_hf(tmp_path / "saved")
    assert (folder / "model.safetensors").is_file()
    assert (folder / "preprocessor_config.json").is_file()
    # Same trainability as the saved one: WavLM's torch attention picks its kernel from the
    # parameters' requires_grad, which changes float rounding (~5e-7) but nothing else.
    reloaded = SSLUpstream(folder, trainable_layers=1).eval()
    assert reloaded.normalize_waveform == upstream.normalize_waveform
    assert reloaded.use_attention_mask == upstream.use_attention_mask
    with torch.no_grad():
        again = reloaded(batch, lens)
    for before, after in zip(reference.hidden_states, again.hidden_states):
        torch.testing.assert_close(before, after, atol=0, rtol=0)
    with torch.no_grad():
        frozen = SSLUpstream(folder).eval()(batch, lens)
    torch.testing.assert_close(frozen.last_hidden_state, reference.last_hidden_state)
    plain = AutoModel.from_pretrained(folder).eval()
    assert type(plain) is type(upstream.model)
    for (name, p1), p2 in zip(upstream.model.named_parameters(), plain.parameters()):
        assert torch.equal(p1, p2), name
    original = SSLUpstream(tiny_upstreams[kind]).eval()(batch, lens)
    assert not torch.equal(original.last_hidden_state, reference.last_hidden_state)


def test_checkpointer_round_trip(tiny_upstreams, tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    upstream = SSLUpstream(tiny_upstreams["hubert"], trainable_layers=1)
    checkpointer = Checkpointer(tmp_path / "ckpt", recoverables={"upstream": upstream})
    checkpointer.save_checkpoint()
    saved = {k: v.clone() for k, v in upstream.state_dict().items()}
    with torch.no_grad():
        for param in upstream.encoder_layers[2].parameters():
            param.mul_(0.5)
    checkpointer.recover_if_possible()
    for key, value in upstream.state_dict().items():
        assert torch.equal(value, saved[key]), key


# ----------------------------------------------------------------------------- load_upstream
def test_load_upstream_errors(tmp_path):
    with pytest.raises(UpstreamNotFoundError, match=r"Upstream folder not found: .*nope"):
        load_upstream(tmp_path / "nope")
    with pytest.raises(UpstreamNotFoundError, match="not found"):
        load_upstream("./relative/missing/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UpstreamNotFoundError, match="has no config.json"):
        load_upstream(tmp_path / "empty")
    # conftest sets HF_HUB_OFFLINE=1: an uncached hub id fails with a clear message, no network
    with pytest.raises(UpstreamNotFoundError, match="HF_HUB_OFFLINE is set.*not in the Hugging"):
        load_upstream("facebook/hubert-base-ls960", cache_dir=tmp_path / "hf_cache")


def test_load_upstream_hub_id_from_offline_cache(tiny_upstreams, tmp_path):
    """A hub id resolves from the Hugging Face cache layout offline (same code path as folders)."""
    commit = "0" * 40
    repo = tmp_path / "hf_cache" / "models--lasersb-test--tiny-hubert"
    shutil.copytree(tiny_upstreams["hubert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = load_upstream("lasersb-test/tiny-hubert", cache_dir=tmp_path / "hf_cache")
    reference = load_upstream(tiny_upstreams["hubert"])
    for p1, p2 in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p1, p2)
    assert model.config.apply_spec_augment is False


def test_load_upstream_config_overrides(tiny_upstreams):
    model = load_upstream(tiny_upstreams["wav2vec2"], hidden_dropout=0.0, layerdrop=0.05)
    assert model.config.hidden_dropout == 0.0 and model.config.layerdrop == 0.05
    assert not model.training


# ----------------------------------------------------------------------------- strict weights
def _rewrite_weights(folder, edit):
    """Rewrite ``folder/model.safetensors`` with ``edit(state) -> state``."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    save_file(edit(load_file(path)), path, metadata={"format": "pt"})


def test_unused_or_missing_weights_are_errors_naming_the_keys(tiny_upstreams, tmp_path, caplog):
    from lasersb.models.upstream import UpstreamWeightsError

    extra = shutil.copytree(tiny_upstreams["hubert"], tmp_path / "extra")
    _rewrite_weights(extra, lambda s: {**s, "encoder.extra_head.weight": torch.zeros(2, 2)})
    with pytest.raises(UpstreamWeightsError, match=r"does not use: encoder\.extra_head\.weight"):
        load_upstream(extra)
    with pytest.raises(UpstreamWeightsError, match="strict_weights=False"):
        SSLUpstream(extra)
    with caplog.at_level("WARNING", logger="lasersb.models.upstream"):
        model = load_upstream(extra, strict_weights=False)  # the explicit opt-out
    assert "encoder.extra_head.weight" in caplog.text
    assert type(model).__name__ == "HubertModel"

    key = "encoder.layers.1.attention.k_proj.weight"
    missing = shutil.copytree(tiny_upstreams["hubert"], tmp_path / "missing")
    _rewrite_weights(missing, lambda s: {k: v for k, v in s.items() if k != key})
    with pytest.raises(UpstreamWeightsError, match=r"absent from the checkpoint.*k_proj\.weight"):
        load_upstream(missing)


def test_known_unused_checkpoint_keys_and_legacy_names_load(tiny_upstreams, tmp_path):
    """wav2vec 2.0 pretraining heads are dropped as expected; old weight_g/weight_v names map."""
    folder = shutil.copytree(tiny_upstreams["wav2vec2"], tmp_path / "pretraining_style")

    def edit(state):
        legacy = {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v
            for k, v in state.items()
        }
        assert "encoder.pos_conv_embed.conv.weight_g" in legacy
        return {
            **legacy,
            "quantizer.codevectors": torch.zeros(1, 8, 4),
            "project_q.weight": torch.zeros(4, 4),
            "project_hid.weight": torch.zeros(4, 64),
        }

    _rewrite_weights(folder, edit)
    model = load_upstream(folder)
    reference = load_upstream(tiny_upstreams["wav2vec2"]).state_dict()
    assert model.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    # With mask_time_prob=0 the model has no masked_spec_embed: the checkpoint's is unused.
    unmasked = load_upstream(tiny_upstreams["wav2vec2"], mask_time_prob=0.0)
    assert not hasattr(unmasked, "masked_spec_embed") and "masked_spec_embed" in reference


# ----------------------------------------------------------------------------- adapter exports
def _adapted_upstream(source, seed=0, **options):
    """An SSLUpstream with random (non-identity) adapters, as after adapter SSFT."""
    from lasersb.models.adapters import add_adapters

    upstream = SSLUpstream(source)
    adapters = add_adapters(upstream.model, **options)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapters:
            for param in adapter.parameters():
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return upstream.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_export_loads_with_its_adapters(tiny_upstreams, kind, tmp_path, caplog):
    from transformers import AutoConfig, AutoModel

    from lasersb.models.adapters import adapter_config, get_adapters

    upstream = _adapted_upstream(tiny_upstreams[kind], layers="top2", bottleneck=8)
    batch, lens = _pad(_waves(8000, 12000))
    with torch.no_grad():
        reference = upstream(batch, lens)
        original = SSLUpstream(tiny_upstreams[kind]).eval()(batch, lens)
    folder = upstream.save_hf(tmp_path / "export")
    with caplog.at_level("INFO", logger="lasersb.models.upstream"):
        reloaded = SSLUpstream(folder).eval()
    assert "carries lasersb adapters: inserted 4" in caplog.text
    assert adapter_config(reloaded.model) == adapter_config(upstream.model)
    with torch.no_grad():
        again = reloaded(batch, lens)
    for before, after in zip(reference.hidden_states, again.hidden_states):
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert not torch.allclose(again.last_hidden_state, original.last_hidden_state, atol=1e-3)
    # Frozen by default, also inside trainable layers; trained only when asked.
    assert not reloaded.has_trainable
    top = SSLUpstream(folder, trainable_layers=1)
    names = _trainable_names(top)
    assert names and not any("bottleneck_adapters" in n for n in names)
    # Train mode: with the release's dropout_in_frozen (default) the whole model, frozen
    # adapters included, is in train mode; without it frozen adapters stay in eval mode.
    top.train()
    assert all(a.training for a in get_adapters(top.model).values())
    strict = SSLUpstream(folder, trainable_layers=1, dropout_in_frozen=False).train()
    assert not any(a.training for a in get_adapters(strict.model).values())
    tuned = SSLUpstream(folder, trainable_adapters=True).train()
    assert all("bottleneck_adapters" in n for n in _trainable_names(tuned))
    assert all(a.training for a in get_adapters(tuned.model).values())
    # Plain transformers refuses the folder loudly instead of returning the base model.
    for loader in (AutoModel, AutoConfig):
        with pytest.raises(ValueError, match="lasersb-adapters.*load_upstream"):
            loader.from_pretrained(folder)


def test_legacy_adapter_export_and_undescribed_adapter_weights(tiny_upstreams, tmp_path):
    """Folders from before config.json carried the adapters: plain config, adapters in weights."""
    import json

    from lasersb.models.adapters import save_adapters
    from lasersb.models.upstream import UpstreamWeightsError

    upstream = _adapted_upstream(tiny_upstreams["hubert"], layers=[1], bottleneck=4)
    folder = tmp_path / "legacy"
    upstream.model.save_pretrained(folder)  # as the SSFT export wrote it before
    upstream.feature_extractor.save_pretrained(folder)
    with pytest.raises(UpstreamWeightsError, match="hold lasersb adapters.*cannot be rebuilt"):
        load_upstream(folder)
    base = load_upstream(folder, strict_weights=False)  # the opt-out drops them, loudly
    assert not any("bottleneck_adapters" in k for k in base.state_dict())
    save_adapters(folder / "lasersb_adapters.pt", upstream.model)
    (folder / "lasersb_export.json").write_text(json.dumps({"adapters": "lasersb_adapters.pt"}))
    wav = torch.randn(1, 6000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(
            SSLUpstream(folder).eval()(wav).last_hidden_state,
            upstream(wav).last_hidden_state,
            atol=1e-6,
            rtol=0,
        )


def test_adapter_set_saved_alone_applies_onto_the_upstream(tiny_upstreams, tmp_path):
    from lasersb.models.adapters import save_adapters

    upstream = _adapted_upstream(tiny_upstreams["wavlm"], layers="top1", bottleneck=4, seed=2)
    save_adapters(tmp_path / "task.pt", upstream.model, extra={"upstream": "elsewhere"})
    applied = SSLUpstream(tiny_upstreams["wavlm"], adapters=tmp_path / "task.pt").eval()
    wav = torch.randn(1, 6000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(
            applied(wav).last_hidden_state, upstream(wav).last_hidden_state, atol=1e-6, rtol=0
        )
    assert not applied.has_trainable
    export = upstream.save_hf(tmp_path / "export")
    with pytest.raises(ValueError, match="already carries adapters"):
        SSLUpstream(export, adapters=tmp_path / "task.pt")
