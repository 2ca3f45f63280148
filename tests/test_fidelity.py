"""The defaults of the full-scale hparams files equal the fidelity tables of the recipe READMEs.

Each method recipe's README holds one or more fidelity tables, each announced by a comment
``<!-- fidelity: <hparams file> -->`` and shaped as

    | setting | paper / release value (source) | our default | why different |
    |---|---|---|---|
    | `lr_decay` | `linear` (LASER_finetuning/config.yaml: ...) | `linear` | — |

The README is the single source of truth: for every row whose setting is a backticked
top-level key, the test reads that key from the *resolved* hparams file (no object is built,
:func:`lasersb.config.hparam_value`) and asserts it equals the backticked value of the
"our default" column (a YAML value). A row whose "why different" column starts with ``—``
claims fidelity: its first backticked paper/release value must then equal our value too. A later
change of a default, or a table claiming fidelity it does not have, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from lasersb.config import hparam_value

REPO = Path(__file__).resolve().parents[1]
#: Method recipes whose README must carry at least one fidelity table.
METHOD_READMES = [
    "recipes/LibriSpeech/ssft/README.md",
    "recipes/SUPERB/pr/README.md",
    "recipes/SUPERB/asr/README.md",
    "recipes/LibriSpeech-DEMAND/se/README.md",
    "recipes/VoxCeleb/dino/README.md",
    "recipes/VoxCeleb/xvector/README.md",
    "recipes/LibriSpeech/adapters/README.md",
]
MARKER = re.compile(r"<!--\s*fidelity:\s*(\S+)\s*-->")
_YAML = YAML(typ="safe")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _code(cell: str) -> str | None:
    match = re.search(r"`([^`]*)`", cell)
    return match.group(1) if match else None


def fidelity_tables(readme: Path) -> list[tuple[str, list[list[str]]]]:
    """``[(hparams file, rows)]`` of a README; rows are lists of 4 cells."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    tables = []
    for index, line in enumerate(lines):
        match = MARKER.search(line)
        if not match:
            continue
        rows, started = [], False
        for row in lines[index + 1 :]:
            if not row.strip().startswith("|"):
                if started:
                    break
                continue
            started = True
            cells = _cells(row)
            if set(cells[0]) <= {"-", ":"} or cells[0].lower() == "setting":
                continue  # header and separator
            assert len(cells) == 4, f"{readme}: fidelity rows have 4 columns: {row}"
            rows.append(cells)
        tables.append((match.group(1), rows))
    return tables


def _rows():
    for readme in METHOD_READMES:
        for hparams_file, rows in fidelity_tables(REPO / readme):
            for cells in rows:
                key = _code(cells[0])
                if key is not None:
                    yield pytest.param(hparams_file, key, cells, id=f"{hparams_file}:{key}")


@pytest.mark.parametrize("readme", METHOD_READMES)
def test_every_method_readme_has_a_fidelity_table(readme):
    tables = fidelity_tables(REPO / readme)
    assert tables, f"{readme} has no '<!-- fidelity: <hparams file> -->' table"
    for hparams_file, rows in tables:
        assert (REPO / hparams_file).is_file(), f"{readme}: {hparams_file} does not exist"
        assert sum(_code(cells[0]) is not None for cells in rows) >= 3, (readme, hparams_file)


@pytest.mark.parametrize(("hparams_file", "key", "cells"), list(_rows()))
def test_default_equals_fidelity_table(hparams_file, key, cells):
    ours = _code(cells[2])
    assert ours is not None, f"{hparams_file} {key}: 'our default' must be a backticked value"
    expected = _YAML.load(ours)
    actual = hparam_value(REPO / hparams_file, key)
    assert actual == expected, f"{hparams_file}: {key} is {actual!r}, the README says {ours}"
    if cells[3] in ("", "-") or cells[3].startswith(("—", "–")):
        paper = _code(cells[1])
        assert paper is not None and _YAML.load(paper) == expected, (
            f"{hparams_file} {key}: the table claims the paper's value ({cells[1]}) but our "
            f"default is {ours}; give the reason in 'why different'"
        )


def test_laser_wavlm_defaults_to_wavlm_base():
    assert hparam_value(REPO / "hparams/laser_wavlm.yaml", "upstream_source") == (
        "microsoft/wavlm-base"
    )


# ---------------------------------------------------------------------------------------------
# The trainable set, replayed from each release's own rule.
#
# The LASER and SCORE releases freeze s3prl's HuBERT/WavLM base *by position* in
# ``model.named_parameters()`` (LASER ``runner_part_freeze.py``, SCORE
# ``runner_part_freeze_layers.py``); Spin by name (``src/nn/hubert.py`` ``trainable_parameters``
# with ``freeze_layers: ["pos", 0, 1, ..., 10]``). The replay lists the parameters of a full-size
# transformers model (random weights) under their fairseq names, in the order s3prl's model code
# registers them, applies each rule, maps the result back to transformers names and compares it
# with what ``SSLUpstream`` trains under the resolved YAML settings. The fairseq order below was
# checked against s3prl's ``hubert_model.py`` (HubertConfig of hubert_base_ls960.pt: 214
# parameters) and ``WavLM.py`` (WavLM base: relative position, gated: 248 parameters)
# instantiated from s3prl's source: it lists the same names in the same order; the release's own
# cut-offs (177 for HuBERT, 207 for WavLM) then fall on the first parameter of layer 10, which
# the test also asserts.
# ---------------------------------------------------------------------------------------------

#: transformers -> fairseq (s3prl) parameter name pieces (the transformers conversion scripts'
#: mapping, read backwards).
_LAYER, _FS_LAYER = r"^encoder\.layers\.(\d+)\.", r"encoder.layers.\1."
_CONV, _POS = r"^feature_extractor\.conv_layers\.(\d+)\.", r"^encoder\.pos_conv_embed\.conv\."
_HF_TO_FAIRSEQ = [
    (r"^masked_spec_embed$", "mask_emb"),
    (_CONV + r"conv\.", r"feature_extractor.conv_layers.\1.0."),
    (_CONV + r"layer_norm\.", r"feature_extractor.conv_layers.\1.2."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (_POS + r"bias$", "encoder.pos_conv.0.bias"),
    (_POS + r"parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (_POS + r"parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (_LAYER + r"attention\.gru_rel_pos_const$", _FS_LAYER + "self_attn.grep_a"),
    (_LAYER + r"attention\.gru_rel_pos_linear\.", _FS_LAYER + "self_attn.grep_linear."),
    (_LAYER + r"attention\.rel_attn_embed\.", _FS_LAYER + "self_attn.relative_attention_bias."),
    (_LAYER + r"attention\.", _FS_LAYER + "self_attn."),
    (_LAYER + r"layer_norm\.", _FS_LAYER + "self_attn_layer_norm."),
    (_LAYER + r"feed_forward\.intermediate_dense\.", _FS_LAYER + "fc1."),
    (_LAYER + r"feed_forward\.output_dense\.", _FS_LAYER + "fc2."),
]
#: Parameters of s3prl's HuBERT that transformers' HubertModel does not have (the pretraining
#: heads: no gradient reaches them when features are extracted without masking).
_FAIRSEQ_ONLY = {"hubert": ["label_embs_concat", "final_proj.weight", "final_proj.bias"]}
_LAYER_PART_ORDER = ["self_attn.grep_a", "self_attn.relative_attention_bias", "self_attn.k_proj",
                     "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                     "self_attn.grep_linear", "self_attn_layer_norm", "fc1", "fc2",
                     "final_layer_norm"]  # fmt: skip
_LEAF_ORDER = ["bias", "weight_g", "weight_v"]  # pos_conv: bias registered before weight_norm's


def _to_fairseq(name: str) -> str:
    for pattern, replacement in _HF_TO_FAIRSEQ:
        new, count = re.subn(pattern, replacement, name)
        if count:
            return new
    return name  # encoder.layer_norm.*, encoder.layers.N.final_layer_norm.*: the same names


def _fairseq_order_key(name: str):
    """Position of a parameter in s3prl's ``named_parameters()`` (module registration order)."""
    leaf = 0 if name.endswith(".weight") else 1
    if name in ("mask_emb", "label_embs_concat"):  # the model's own parameters come first
        return (0, ("mask_emb", "label_embs_concat").index(name))
    match = re.match(r"feature_extractor\.conv_layers\.(\d+)\.(\d+)\.", name)
    if match:
        return (1, int(match.group(1)), int(match.group(2)), leaf)
    if name.startswith("post_extract_proj."):
        return (2, leaf)
    if name.startswith("encoder.pos_conv.0."):
        return (3, 0, _LEAF_ORDER.index(name.rsplit(".", 1)[1]))
    match = re.match(r"encoder\.layers\.(\d+)\.(.+)$", name)
    if match:
        rest = match.group(2)
        part = next(p for p in _LAYER_PART_ORDER if rest == p or rest.startswith(p + "."))
        return (3, 1, int(match.group(1)), _LAYER_PART_ORDER.index(part), leaf)
    if name.startswith("encoder.layer_norm."):
        return (3, 2, leaf)
    if name.startswith("layer_norm."):
        return (4, leaf)
    if name.startswith("final_proj."):
        return (5, leaf)
    raise AssertionError(f"no fairseq position for {name}")


def _s3prl_parameter_list(model, family):
    """``[(fairseq name, transformers name or None)]`` in s3prl's order, prefixed ``model.``."""
    pairs = [(_to_fairseq(n), n) for n, _ in model.named_parameters()]
    pairs += [(n, None) for n in _FAIRSEQ_ONLY.get(family, [])]
    assert len({f for f, _ in pairs}) == len(pairs), "two transformers names map to one"
    pairs.sort(key=lambda pair: _fairseq_order_key(pair[0]))
    return [(f"model.{f}", h) for f, h in pairs]


def _replay_position_rule(params, cut, skip_first, layer_norm_trainable):
    """The LASER/SCORE rule: ``skip_first < count < cut`` frozen, then ``model.layer_norm`` and
    ``model.final_proj`` set to ``layer_norm_trainable`` (LASER ``False``, SCORE ``True``)."""
    trainable = set()
    for count, (name, hf_name) in enumerate(params, start=1):
        if skip_first < count < cut:
            continue
        if "model.layer_norm" in name or "model.final_proj" in name:
            if layer_norm_trainable:
                trainable.add((name, hf_name))
            continue
        trainable.add((name, hf_name))
    return trainable


def _replay_spin_rule(params, num_layers, freeze_layers, layer_norm_first=False):
    """Spin's ``trainable_parameters``: 0 = CNN + model.layer_norm + post_extract_proj, "pos" =
    positional conv, i >= 1 = transformer layer i - 1 (+ encoder.layer_norm for pre-norm)."""
    prefixes = []
    for index in ["pos", *range(num_layers + 1)]:
        if index in freeze_layers:
            continue
        if index == 0:
            prefixes += [
                "model.feature_extractor.",
                "model.layer_norm.",
                "model.post_extract_proj.",
            ]
        elif index == "pos":
            prefixes.append("model.encoder.pos_conv.")
        else:
            prefixes.append(f"model.encoder.layers.{index - 1}.")
            if index == num_layers and layer_norm_first:
                prefixes.append("model.encoder.layer_norm.")
    return {(n, h) for n, h in params if n.startswith(tuple(prefixes))}


@pytest.fixture(scope="module")
def full_size_models():
    """HuBERT base and WavLM base (transformers default configs), parameters on the meta device."""
    import torch
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    with torch.device("meta"):
        return {"hubert": HubertModel(HubertConfig()), "wavlm": WavLMModel(WavLMConfig())}


#: (hparams file, model family, release rule)
_REPLAYS = [
    ("hparams/laser.yaml", "hubert", ("position", 177, 2, False)),
    ("hparams/laser_wavlm.yaml", "wavlm", ("position", 207, 1, False)),
    ("hparams/score.yaml", "hubert", ("position", 177, 2, True)),
    ("hparams/score_wavlm.yaml", "wavlm", ("position", 207, 1, True)),
    ("hparams/spin.yaml", "hubert", ("spin", ["pos", 0, *range(1, 11)])),
    ("hparams/spin_wavlm.yaml", "wavlm", ("spin", ["pos", 0, *range(1, 11)])),
]


@pytest.mark.parametrize(("hparams_file", "family", "rule"), _REPLAYS, ids=lambda v: str(v)[:24])
def test_trainable_set_replays_the_release(full_size_models, hparams_file, family, rule):
    from lasersb.models.upstream import SSLUpstream

    model = full_size_models[family]
    params = _s3prl_parameter_list(model, family)
    if rule[0] == "position":
        # The release's cut-off is the first parameter of layer 10 (the top two layers train).
        assert params[rule[1] - 1][0].startswith("model.encoder.layers.10."), params[rule[1] - 1]
        replayed = _replay_position_rule(params, rule[1], rule[2], rule[3])
    else:
        replayed = _replay_spin_rule(params, model.config.num_hidden_layers, rule[1])
    # mask_emb / label_embs_concat / final_proj get no gradient when features are extracted
    # without masking (the releases and lasersb alike): they are not part of what is trained.
    unused = {"model.mask_emb", "model.label_embs_concat", "model.final_proj.weight",
              "model.final_proj.bias"}  # fmt: skip
    release = sorted(f"model.{h}" for n, h in replayed if n not in unused)

    def value(key):
        return hparam_value(REPO / hparams_file, key)

    upstream = SSLUpstream(
        model,
        trainable_layers=value("trainable_layers"),
        train_encoder_layer_norm=value("train_encoder_layer_norm"),
        trainable_modules=value("trainable_modules"),
    )
    ours = sorted(upstream.trainable_parameter_names())
    assert ours == release, (
        f"{hparams_file}: only ours {sorted(set(ours) - set(release))}, "
        f"only the release's {sorted(set(release) - set(ours))}"
    )


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_yaml_dropouts_reach_the_fine_tuned_and_target_models(tiny_upstreams, tmp_path, kind):
    """The YAML's dropout rates are those of the built modules (the fine-tuned upstream and
    SCORE's frozen target), whatever the upstream's config.json says."""
    import json
    import shutil

    from lasersb.models.upstream import SSLUpstream
    from lasersb.models.view_encoders import FrozenUpstream

    rates = hparam_value(REPO / "hparams/score.yaml", "upstream_config")
    assert rates == hparam_value(REPO / "hparams/spin.yaml", "upstream_config")
    # A config.json whose rates all differ from the YAML's, so every override must act.
    source = shutil.copytree(tiny_upstreams[kind], tmp_path / kind)
    config_file = source / "config.json"
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    saved.update({key: 0.37 for key in rates})
    config_file.write_text(json.dumps(saved), encoding="utf-8")
    for upstream in (
        SSLUpstream(source, trainable_layers=1, config_overrides=rates),
        FrozenUpstream(source, config_overrides=rates).upstream,
    ):
        model = upstream.model
        layer = model.encoder.layers[0]
        assert {key: getattr(model.config, key) for key in rates} == rates
        assert model.feature_projection.dropout.p == rates["feat_proj_dropout"]
        assert model.encoder.dropout.p == rates["hidden_dropout"]
        assert layer.dropout.p == rates["hidden_dropout"]
        assert layer.feed_forward.intermediate_dropout.p == rates["activation_dropout"]
        assert layer.feed_forward.output_dropout.p == rates["hidden_dropout"]
        assert layer.attention.dropout == rates["attention_dropout"]
    assert SSLUpstream(source).model.encoder.dropout.p == 0.37  # without overrides: config.json


def test_trainable_modules_and_overrides_are_checked(tiny_upstreams):
    from lasersb.models.upstream import SSLUpstream

    source = tiny_upstreams["hubert"]
    upstream = SSLUpstream(
        source, trainable_layers=1, trainable_modules=["feature_projection.layer_norm"]
    )
    names = upstream.trainable_parameter_names()
    assert "model.feature_projection.layer_norm.weight" in names
    assert "model.feature_projection.projection.weight" not in names
    with pytest.raises(ValueError, match="no submodule 'feature_projection.norm'"):
        SSLUpstream(source, trainable_layers=1, trainable_modules=["feature_projection.norm"])
    with pytest.raises(ValueError, match="hidden_dropuot"):
        SSLUpstream(source, config_overrides={"hidden_dropuot": 0.1})


def _accumulated_gradient(upstream, tmp_path, batches, accumulation, exact_padding):
    """Gradient of one optimiser step of LASER's Brain (``fit_batch``, SpeechBrain's gradient
    accumulation) over ``batches``; dropout off and one fixed perturbation, so that only the
    batching differs between calls."""

    import speechbrain as sb

    from lasersb.brains.laser import LaserBrain
    from lasersb.config import load_hparams

    overrides = {
        "data_folder": str(tmp_path),
        "upstream_source": str(upstream),
        "output_folder": str(tmp_path / f"out_{accumulation}_{exact_padding}"),
        "grad_accumulation_factor": accumulation,
        "exact_padding": exact_padding,
        "speed_factors": [1.1],
        "pitch_semitones": [2],
        "tensorboard_logger": None,
        **{key: 0.0 for key in ("hidden_dropout", "attention_dropout", "activation_dropout")},
        "feat_proj_dropout": 0.0,
    }
    hparams = load_hparams(REPO / "recipes/LibriSpeech/ssft/hparams/laser_mini.yaml", overrides)
    brain = LaserBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32", "noprogressbar": True},
    )
    brain.init_optimizers()
    recorded = {}

    def record(*args, **kwargs):  # the step itself is not needed: keep the gradient
        for name, param in brain.modules.named_parameters():
            if param.grad is not None:
                recorded[name] = param.grad.detach().clone()

    brain.optimizer.step = record
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    for index, batch in enumerate(batches, start=1):
        brain.step = index
        brain.fit_batch(batch)
    assert recorded, "no optimiser step was taken"
    return recorded


def test_batch_of_8_equals_accumulated_batches_of_1(tiny_upstreams, tmp_path):
    """README claim: with utterances of one length (nothing padded), the default batch of 8 gives
    the gradient of ``--batch_size=1 --grad_accumulation_factor=8`` (SpeechBrain divides each
    loss by 8, as s3prl's runner does). With unequal lengths it does not, even with
    ``exact_padding`` (the batched pitch shift changes the end of the shorter views): the test
    also shows that gap, which the README states."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    generator = torch.Generator().manual_seed(0)

    def gradients(lengths, accumulation):
        items = [
            {"id": f"utt{i}", "sig": 0.1 * torch.randn(n, generator=generator)}
            for i, n in enumerate(lengths)
        ]
        batches = (
            [PaddedBatch([item]) for item in items] if accumulation > 1 else [PaddedBatch(items)]
        )
        return _accumulated_gradient(
            tiny_upstreams["hubert"], tmp_path, batches, accumulation, True
        )

    state = generator.get_state()
    batched = gradients([12000] * 8, 1)
    generator.set_state(state)
    accumulated = gradients([12000] * 8, 8)
    assert batched.keys() == accumulated.keys()
    assert any(name.startswith("upstream.") for name in batched)
    for name in batched:
        torch.testing.assert_close(batched[name], accumulated[name], rtol=1e-4, atol=1e-7)
    unequal = [8000 + 1100 * i for i in range(8)]
    state = generator.get_state()
    batched = gradients(unequal, 1)
    generator.set_state(state)
    accumulated = gradients(unequal, 8)
    gap = max(float((batched[n] - accumulated[n]).abs().max()) for n in batched)
    assert gap > 1e-4


def test_laser_views_are_built_in_fp32_under_bf16_autocast():
    """``precision: bf16`` is a speed option only: the perturbed views are computed with
    autocast off and fp32 input (as the release's CPU views), whatever autocast the training
    step runs under (on CUDA, bf16 resampling is ~52 dB SNR against fp32)."""
    from types import SimpleNamespace

    import speechbrain as sb
    import torch

    from lasersb.augment import LaserViews
    from lasersb.brains.laser import LaserBrain

    views = LaserViews(speed_factors=[1.1], semitones=[2])
    seen = []

    def spy(wavs, lens, generator=None):
        seen.append((torch.is_autocast_enabled("cpu"), wavs.dtype))
        return views(wavs, lens, generator=generator)

    brain = object.__new__(LaserBrain)  # only what make_views reads
    brain.device_type, brain.step = "cpu", 0
    brain.hparams = SimpleNamespace(views=spy, valid_seed=0)
    wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([1.0, 0.8])
    reference = brain.make_views(wavs, lens, sb.Stage.VALID)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        under_autocast = brain.make_views(wavs.bfloat16(), lens, sb.Stage.VALID)
    assert seen == [(False, torch.float32), (False, torch.float32)]
    for ours, ref in zip(under_autocast, reference):
        assert ours.dtype == ref.dtype
    torch.testing.assert_close(under_autocast[2], reference[2], rtol=0, atol=2e-3)
