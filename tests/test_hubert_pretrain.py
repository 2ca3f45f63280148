"""HuBERT pretraining (recipes/MiniSpeech/hubert_pretrain): targets, masking, recipe, export.

One short run of the recipe on the mini corpus (``hubert_iter1_mini.yaml``: 3 epochs of 15
steps, tiny sizes) is shared by the checks: the dev loss (fixed dev masks) falls at every epoch
and the masked-prediction accuracy rises, the targets file the first stage writes has exactly one
label per upstream frame of every utterance, and the exported folder loads with lasersb's loader
and ``transformers.AutoModel`` to the hidden states of the trained encoder. The MiniSpeech
corpus shares no sentence with the mini corpus's dev/test sets.
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lasersb.models.hubert_pretrain import span_mask

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "MiniSpeech" / "hubert_pretrain"
MINI_HPARAMS = RECIPE / "hparams" / "hubert_iter1_mini.yaml"


def _recipe_module():
    spec = importlib.util.spec_from_file_location("hubert_pretrain_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrain_run(mini_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("hubert_pretrain")
    torch_threads = torch.get_num_threads()
    try:
        _recipe_module().main(
            [
                str(MINI_HPARAMS),
                f"--data_folder={mini_corpus / 'LibriSpeech'}",
                f"--output_folder={out}",
            ]
        )
    finally:
        torch.set_num_threads(torch_threads)
    return out


def _epoch_stats(train_log: Path) -> list[dict]:
    rows = []
    for line in train_log.read_text().splitlines():
        stats = dict(re.findall(r"(valid \w+): ([-+.\deE]+)", line))
        rows.append({key: float(value) for key, value in stats.items()})
    return rows


def test_first_steps_lower_the_loss(pretrain_run):
    rows = _epoch_stats(pretrain_run / "train_log.txt")
    assert len(rows) == 3
    losses = [row["valid loss"] for row in rows]
    accuracies = [row["valid acc_unmasked"] for row in rows]
    # Same dev utterances, crops and masks at every epoch (valid_seed): a falling loss is learning.
    assert losses[2] < losses[0], losses
    assert accuracies[2] > accuracies[0], accuracies


def test_targets_have_one_label_per_upstream_frame(pretrain_run, mini_corpus):
    from transformers import AutoModel

    from lasersb.data.audio import read_audio
    from lasersb.data.hubert_targets import read_targets

    targets, n_clusters = read_targets(next((pretrain_run / "targets").glob("*.npz")))
    assert n_clusters == 50
    model = AutoModel.from_pretrained(pretrain_run / "upstream_hf").eval()
    train_ids = [p.stem for p in (mini_corpus / "LibriSpeech" / "train-clean-100").rglob("*.flac")]
    assert set(train_ids) <= set(targets)
    for uid in sorted(train_ids)[:3]:
        spk, chapter, _ = uid.split("-")
        flac = mini_corpus / "LibriSpeech" / "train-clean-100" / spk / chapter / f"{uid}.flac"
        wav = read_audio(flac, sample_rate=16000)
        with torch.no_grad():
            frames = model(wav[None]).last_hidden_state.shape[1]
        assert len(targets[uid]) == frames
        assert targets[uid].min() >= 0 and targets[uid].max() < n_clusters


def test_export_loads_to_the_trained_encoder(pretrain_run):
    from transformers import AutoModel

    from lasersb.config import load_hparams
    from lasersb.models.upstream import load_upstream

    export = pretrain_run / "upstream_hf"
    hparams = load_hparams(
        MINI_HPARAMS, {"data_folder": "unused", "output_folder": str(pretrain_run / "reload")}
    )
    model = hparams["model"]
    checkpoint = sorted((pretrain_run / "save").glob("CKPT+*"))[-1]
    model.load_state_dict(torch.load(checkpoint / "model.ckpt", map_location="cpu"))
    model.eval()
    wav = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        expected = model.hubert(wav).last_hidden_state
        hub = AutoModel.from_pretrained(export).eval()
        assert type(hub).__name__ == "HubertModel"
        torch.testing.assert_close(hub(wav).last_hidden_state, expected, rtol=0, atol=0)
    upstream = load_upstream(export)
    assert type(upstream).__name__ == "HubertModel"


def test_span_mask_draws_fairseqs_number_of_spans():
    generator = torch.Generator().manual_seed(0)
    for frames in (37, 100, 501):
        mask = span_mask(64, frames, 0.65, 1, generator)  # spans of 1 frame cannot overlap
        counts = mask.sum(dim=1)
        expected = 0.65 * frames
        # int(mask_prob * frames / mask_length + u), u uniform in [0, 1): floor or ceil.
        assert set(counts.tolist()) <= {int(np.floor(expected)), int(np.ceil(expected))}
    again = span_mask(4, 100, 0.8, 10, torch.Generator().manual_seed(3))
    assert torch.equal(again, span_mask(4, 100, 0.8, 10, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="min_sample_size"):
        span_mask(1, 5, 0.8, 10)


def test_minispeech_shares_no_sentence_with_mini_dev_and_test(mini_corpus):
    from lasersb.data.mini import PRETRAIN_OPTIONS, PRETRAIN_SEED, planned_librispeech_texts

    planned = planned_librispeech_texts(PRETRAIN_SEED, **PRETRAIN_OPTIONS)
    assert len(planned["train-clean-100"]) > 1500  # every candidate of 1,500 utterances
    evaluation = set()
    for split in ("dev-clean", "test-clean"):
        for trans in (mini_corpus / "LibriSpeech" / split).rglob("*.trans.txt"):
            evaluation |= {line.split(" ", 1)[1] for line in trans.read_text().splitlines()}
    assert len(evaluation) == 48
    assert not planned["train-clean-100"] & evaluation
