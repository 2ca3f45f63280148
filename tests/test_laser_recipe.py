"""LASER SSFT recipe on the mini corpus with tiny HuBERT and WavLM upstreams.

One short fine-tuning run per upstream kind is shared by the checks: the SSFT loss on dev goes
down, frozen parameters stay bit-identical while the trainable ones move, the exported upstream
reloads with ``transformers.AutoModel`` to identical hidden states, and the alignment plot is
drawn. Resuming after SIGKILL is tested for every resumable recipe in tests/test_resume.py.
"""

import importlib.util
import json
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
    info = json.loads((folder / "lasersb_export.json").read_text())
    assert info["adapters"] is None and info["transformers_automodel"].startswith("works")
    assert "AutoModel.from_pretrained(folder)" in (folder / "README.md").read_text()


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


def _load_like_superb_pr(mini_corpus, upstream_source, out):
    """The upstream exactly as recipes/SUPERB/pr builds it: pr_mini.yaml's ``upstream`` entry."""
    from lasersb.config import load_hparams

    hparams = load_hparams(
        REPO / "recipes" / "SUPERB" / "pr" / "hparams" / "pr_mini.yaml",
        {
            "data_folder": str(mini_corpus / "LibriSpeech"),
            "lexicon_file": str(mini_corpus / "librispeech-lexicon.txt"),
            "upstream_source": str(upstream_source),
            "output_folder": str(out),
        },
    )
    return hparams["upstream"].eval()


def test_adapters_instead_of_top_layers(mini_corpus, tiny_upstreams, tmp_path, caplog):
    """Adapter SSFT (trainable_layers=0); its export, loaded as SUPERB PR loads upstreams,
    computes the SSFT model's hidden states, not the original upstream's."""
    from transformers import AutoModel

    from lasersb.models.adapters import adapter_summary, get_adapters, load_adapters
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
    info = json.loads((folder / "lasersb_export.json").read_text())
    assert info["adapters"]["count"] == 2 and "load_upstream" in info["load_with"]
    assert "load_upstream(folder)" in (folder / "README.md").read_text()

    with caplog.at_level("INFO", logger="lasersb.models.upstream"):
        superb = _load_like_superb_pr(mini_corpus, folder, tmp_path / "pr")
    assert "carries lasersb adapters: inserted 2" in caplog.text
    assert not superb.has_trainable  # the adapters stay frozen downstream
    original = _load_like_superb_pr(mini_corpus, tiny_upstreams["hubert"], tmp_path / "pr0")
    ssft = brain.modules.upstream.eval()
    assert adapter_summary(superb.model) == adapter_summary(ssft.model)
    wav = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # The HF models on the same input (SSFT used exact_padding, PR does not: that changes
        # float rounding of the first group norm, ~2e-6, not the weights).
        ours, theirs, before = (
            up.model(wav, output_hidden_states=True).hidden_states
            for up in (ssft, superb, original)
        )
        through_superb = superb(wav).hidden_states
    assert len(ours) == len(theirs) == ssft.num_layers + 1
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    for a, b in zip(theirs, through_superb):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    assert float((theirs[-1] - before[-1]).abs().max()) > 1e-4  # the adapters act
    with pytest.raises(ValueError, match="lasersb-adapters.*load_upstream"):
        AutoModel.from_pretrained(folder)  # plain transformers would drop the adapters

    # The adapter set saved alone goes back onto the original upstream.
    fresh = SSLUpstream(tiny_upstreams["hubert"], exact_padding=True).eval()
    load_adapters(folder / "lasersb_adapters.pt", fresh.model)
    assert set(get_adapters(fresh.model)) == set(get_adapters(ssft.model))
    with torch.no_grad():
        torch.testing.assert_close(fresh(wav).last_hidden_state, ssft(wav).last_hidden_state)


@pytest.mark.slow
def test_run_sh_adapter_study_reports_the_adapters(mini_corpus, tiny_upstreams, tmp_path):
    """The README's adapters study through run.sh (SSFT budget and tasks cut to PR): the table's
    laser row was evaluated with the SSFT adapters (count and checksum recorded per run)."""
    import os
    import subprocess

    from lasersb.models.adapters import adapter_summary
    from lasersb.models.upstream import load_upstream

    exp = tmp_path / "exp"
    env = {**os.environ, "LASERSB_MINI_ROOT": str(mini_corpus), "OMP_NUM_THREADS": "1"}
    command = [
        "bash",
        str(RECIPE / "run.sh"),
        "--mini",
        "--exp",
        str(exp),
        "--upstream",
        str(tiny_upstreams["hubert"]),
        "--tasks",
        "pr",
        "--",
        "--use_adapters=True",
        "--trainable_layers=0",
        "--total_steps=4",
        "--valid_max_utterances=2",
        "--noprogressbar",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "upstream_hf: HubertModel" in done.stdout and "4 lasersb adapters" in done.stdout
    expected = adapter_summary(load_upstream(exp / "ssft" / "upstream_hf"))
    assert expected["count"] == 4  # top2 of 3 layers, after attention and feed-forward
    # One run per seed under the sweep folder (run.sh --seeds, default the release seed 1986).
    laser = json.loads((exp / "pr" / "laser" / "seed_1986" / "results.json").read_text())
    original = json.loads((exp / "pr" / "original" / "seed_1986" / "results.json").read_text())
    assert laser["upstream_adapters"] == expected and original["upstream_adapters"] is None
    table = (exp / "results.md").read_text().splitlines()
    assert table[0].startswith("| Upstream | PR PER test-clean (%) | rel. to original |")
    assert table[2].startswith("| original |") and table[3].startswith("| LASER |")
    note = next(line for line in table if line.startswith("- LASER (pr): "))
    assert "- LASER (pr): 4 lasersb adapters in the upstream" in note
    assert expected["checksum"] in note
    assert table[-1].startswith("- Environment: commit ")  # the footnote closes the table
