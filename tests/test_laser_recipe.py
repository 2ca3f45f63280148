"""LASER SSFT recipe on the mini corpus with tiny HuBERT and WavLM upstreams.

One short fine-tuning run per upstream kind is shared by the checks: the SSFT loss on dev goes
down, frozen parameters stay bit-identical while the trainable ones move, the exported upstream
reloads with ``transformers.AutoModel`` to identical hidden states, and the alignment plot is
drawn. Resuming after SIGKILL is tested for every resumable recipe in tests/test_resume.py.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech" / "ssft"
MINI_HPARAMS = RECIPE / "hparams" / "laser_mini.yaml"


def _recipe_module():
    """The recipe's train.py under a unique name (other recipes' scripts are also "train")."""
    spec = importlib.util.spec_from_file_location("laser_ssft_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _overrides(mini_corpus, upstream, out, **extra):
    values = {
        "data_folder": str(mini_corpus / "LibriSpeech"),
        "upstream_source": str(upstream),
        "output_folder": str(out),
        "train_splits": ["train-clean-100"],
        "valid_splits": ["dev-clean"],
        "total_steps": 12,
        "warmup_steps": 2,
        "ckpt_interval_steps": 4,
        "valid_max_utterances": 4,
        "batch_size": 4,
    }
    values.update(extra)
    return values


def _run_short_training(mini_corpus, upstream, out, **extra):
    """Build the recipe's Brain, measure the dev loss, fine-tune, measure again."""
    laser_train = _recipe_module()

    from lasersb.brains.laser import LaserBrain
    from lasersb.config import load_hparams
    from lasersb.data.pipelines import dataloader_options

    hparams = load_hparams(MINI_HPARAMS, _overrides(mini_corpus, upstream, out, **extra))
    Path(hparams["output_folder"]).mkdir(parents=True, exist_ok=True)
    train_data, valid_data = laser_train.build_datasets(hparams)
    brain = LaserBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32", "noprogressbar": True},
        checkpointer=hparams["checkpointer"],
    )
    valid_opts = dataloader_options(valid_data, batch_size=4)
    before_params = {k: v.detach().clone() for k, v in brain.modules.state_dict().items()}
    trainable = {n for n, p in brain.modules.named_parameters() if p.requires_grad}
    loss_before = brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    brain.fit(
        hparams["epoch_counter"],
        train_data,
        valid_data,
        train_loader_kwargs=dataloader_options(
            train_data, batch_size=4, shuffle=True, seed=hparams["seed"]
        ),
        valid_loader_kwargs=dict(valid_opts),
    )
    loss_after = brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    return {
        "brain": brain,
        "hparams": hparams,
        "before": before_params,
        "trainable": trainable,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "valid_data": valid_data,
    }


@pytest.fixture(scope="module", params=["hubert", "wavlm"])
def trained(request, mini_corpus, tiny_upstreams, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(f"laser_{request.param}")
    extra = {"lr": 0.002, "total_steps": 16, "reg_alpha": 0.15 if request.param == "wavlm" else 0.4}
    result = _run_short_training(mini_corpus, tiny_upstreams[request.param], out, **extra)
    result["kind"] = request.param
    return result


def test_short_run_lowers_dev_loss(trained):
    assert trained["brain"].optimizer_step == 16
    # s3prl's linear_schedule_with_warmup (2 warm-up steps here): the last of 16 steps has
    # lr * (16 - 15) / (16 - 2).
    assert trained["brain"].final_lr == pytest.approx(0.002 / 14)
    assert trained["loss_after"] < trained["loss_before"], (
        trained["loss_before"],
        trained["loss_after"],
    )


def test_only_top_layers_and_projection_change(trained):
    """The release's trainable set: top two layers, the encoder layer norm, the projection."""
    brain = trained["brain"]
    after = brain.modules.state_dict()
    num_layers = brain.modules.upstream.num_layers
    top = {f"layers.{num_layers - 2}.", f"layers.{num_layers - 1}.", "encoder.layer_norm."}
    assert {"upstream.model.encoder.layer_norm.weight"} <= trained["trainable"]
    changed_trainable = 0
    for name, param in brain.modules.named_parameters():
        if name in trained["trainable"]:
            assert name.startswith("projection.") or any(t in name for t in top), name
            changed_trainable += int(not torch.equal(param.detach(), trained["before"][name]))
        else:
            assert torch.equal(after[name], trained["before"][name]), f"frozen {name} changed"
    # Every trainable tensor that receives gradient moves; at least most of them must.
    assert changed_trainable >= 0.8 * len(trained["trainable"])
    for name, buf in brain.modules.named_buffers():
        assert torch.equal(buf, trained["before"][name]), f"buffer {name} changed"


def test_export_round_trip_identical_hidden_states(trained):
    from transformers import AutoModel

    brain = trained["brain"]
    folder = brain.export_upstream()
    assert (folder / "config.json").is_file()
    assert (folder / "preprocessor_config.json").is_file()
    from lasersb.models.upstream import SSLUpstream

    upstream = brain.modules.upstream.eval()
    reloaded = SSLUpstream(folder, exact_padding=upstream.exact_padding).eval()
    plain_hf = AutoModel.from_pretrained(folder).eval()
    wav = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = upstream(wav, torch.ones(1))
        again = reloaded(wav, torch.ones(1))
        theirs = plain_hf(wav).last_hidden_state
    for a, b in zip(ours.hidden_states, again.hidden_states):
        assert torch.equal(a, b)
    # Plain transformers (no attention mask passed) agrees up to float rounding.
    torch.testing.assert_close(ours.last_hidden_state, theirs, rtol=1e-5, atol=1e-5)


def test_alignment_plot_before_and_after(trained):
    brain = trained["brain"]
    wav = torch.randn(24000, generator=torch.Generator().manual_seed(2)) * 0.1
    brain.record_alignment_before(wav)  # no-op after training: must not overwrite
    assert not (Path(trained["hparams"]["output_folder"]) / "alignment_before.pt").exists()
    align = brain.soft_alignment_of(wav)
    assert align.dim() == 2 and torch.isfinite(align).all()
    assert align[0, 0] > 0.5 and align[-1, -1] > 0.5  # both ends are always aligned
    png = brain.plot_alignments(wav)
    assert png.is_file() and png.stat().st_size > 1000


def test_soft_dtw_alone_switch(mini_corpus, tiny_upstreams, tmp_path):
    result = _run_short_training(
        mini_corpus,
        tiny_upstreams["hubert"],
        tmp_path,
        use_regulariser=False,
        total_steps=2,
        number_of_epochs=1,
    )
    assert result["brain"].train_stats["regulariser"] == 0.0


def test_adapters_instead_of_top_layers(mini_corpus, tiny_upstreams, tmp_path):
    from lasersb.models.adapters import add_adapters, get_adapters, load_adapters
    from lasersb.models.upstream import SSLUpstream

    result = _run_short_training(
        mini_corpus,
        tiny_upstreams["hubert"],
        tmp_path,
        trainable_layers=0,
        use_adapters=True,
        adapter_layers="top1",
        adapter_bottleneck=8,
        total_steps=3,
        number_of_epochs=1,
        lr=0.01,
    )
    brain = result["brain"]
    assert all(
        "bottleneck_adapters" in n or n.startswith("projection.") for n in result["trainable"]
    )
    after = brain.modules.state_dict()
    for name, value in result["before"].items():
        if "bottleneck_adapters" not in name and not name.startswith("projection."):
            assert torch.equal(after[name], value), f"frozen {name} changed"
    folder = brain.export_upstream()
    fresh = SSLUpstream(tiny_upstreams["hubert"], exact_padding=True).eval()
    add_adapters(fresh.model, layers="top1", bottleneck=8)
    load_adapters(folder / "lasersb_adapters.pt", fresh.model)
    assert set(get_adapters(fresh.model)) == set(get_adapters(brain.modules.upstream.model))
    wav = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = brain.modules.upstream.eval()(wav).last_hidden_state
        theirs = fresh(wav).last_hidden_state
    torch.testing.assert_close(ours, theirs)
