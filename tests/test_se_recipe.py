"""End-to-end check of recipes/LibriSpeech-DEMAND/se (tiny run in-process) and its hparams."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lasersb.config import flatten_hparams_text

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech-DEMAND" / "se"


def test_mini_recipe_runs_end_to_end(mini_corpus, tiny_upstreams, tmp_path):
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("se_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    try:
        results = module.main([
            str(RECIPE / "hparams" / "mse_zeropad_mini.yaml"),
            f"--data_folder={mini_corpus / 'LibriSpeech'}",
            f"--noise_folder={mini_corpus / 'DEMAND'}",
            f"--upstream_source={tiny_upstreams['hubert']}",
            f"--output_folder={out}", f"--noisy_folder={tmp_path / 'noisy'}",
            "--train_split=test-clean", "--valid_split=test-clean", "--total_steps=2",
            "--max_duration=2.5", "--valid_max_utterances=2", "--write_mixtures=False",
            "--noprogressbar", "--device=cpu",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(numba_threads)
    assert sorted(results) == ["clean", "seen", "unseen"]
    summary = json.loads((out / "results.json").read_text())
    assert summary["optimizer_steps"] == 2 and summary["loss"] == "mse_zeropad"
    assert len((out / "loss_curve.csv").read_text().splitlines()) == 3
    assert "| unseen |" in (out / "results.md").read_text()
    # The enhanced test sets have the LibriSpeech layout: a LibriSpeech recipe can read them.
    from data_prep.librispeech_prepare import prepare_librispeech

    csvs = prepare_librispeech(out / "enhanced" / "unseen", tmp_path / "prep",
                               splits=["test-clean"], with_phonemes=False)  # fmt: skip
    assert len(csvs["test-clean"].read_text().splitlines()) == 1 + 24


@pytest.mark.parametrize("name", ["mse", "mse_zeropad", "softdtw"])
def test_loss_files_select_their_loss(name):
    _, overrides = flatten_hparams_text(RECIPE / "hparams" / f"{name}_mini.yaml")
    assert f"loss: {name}" in overrides
