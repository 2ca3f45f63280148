"""Spin's release perturbation through Praat (``speaker_perturbation: praat``, hparams/spin.yaml).

The perturbation itself on a synthetic vowel (pitch and formants move by the asked ratios), the
collate function the data loaders use, and a short Spin run of the recipe's Brain with it (the
mini configuration keeps the batched approximation to stay cheap; this runs the Praat path on a
few mini-corpus utterances). Measured comparison with the batched one:
bench/speaker_perturbation.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import parselmouth  # a runtime requirement: a missing one must fail, not skip
import pytest
import torch
from speech_signals import SR, median_f0, synthetic_vowel

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech" / "ssft"


def _f1(y):

    track = parselmouth.Sound(y.astype(np.float64), SR).to_formant_burg(maximum_formant=5500)
    values = [track.get_value_at_time(1, t) for t in track.xs()]
    return float(np.nanmedian(values))


def test_praat_change_gender_moves_pitch_and_formants():
    from lasersb.augment.praat import PraatSpeakerPerturbation

    x = synthetic_vowel()
    perturb = PraatSpeakerPerturbation(eq_gain_db=0.0)  # 0 dB: the equaliser is the identity
    rng = np.random.default_rng(0)
    up = perturb(x, rng, ratios=(1.2, 1.5, 1.0))
    down = perturb(x, rng, ratios=(1 / 1.2, 1 / 1.5, 1.0))
    assert up.shape == x.shape and up.dtype == np.float32
    assert median_f0(up) / median_f0(x) == pytest.approx(1.5, rel=0.03)
    assert median_f0(down) / median_f0(x) == pytest.approx(1 / 1.5, rel=0.03)
    assert _f1(up) / _f1(x) > 1.1
    assert _f1(down) / _f1(x) < 0.92


def test_praat_draws_and_equaliser_follow_the_release():
    from lasersb.augment.praat import PraatSpeakerPerturbation

    perturb = PraatSpeakerPerturbation()
    rng = np.random.default_rng(3)
    draws = np.array([perturb.draw(rng) for _ in range(400)])
    for column, upper in enumerate((1.4, 2.0, 1.5)):
        ratios = draws[:, column]
        assert np.all((ratios >= 1 / upper) & (ratios <= upper))
        assert 0.35 < np.mean(ratios > 1) < 0.65  # inverted with probability 1/2
    sections = perturb.equaliser_sections(np.random.default_rng(0))
    assert sections.shape == (10, 6) and np.allclose(sections[:, 3], 1.0)
    # A 0 dB equaliser is the identity.
    flat = PraatSpeakerPerturbation(eq_gain_db=0.0).equaliser_sections(rng)
    assert np.allclose(flat[:, :3], flat[:, 3:])


def test_collate_crops_then_perturbs_and_seeds_dev_views():
    from lasersb.augment.praat import PraatSpeakerPerturbation, SpeakerViewCollate

    x = torch.tensor(synthetic_vowel(seconds=1.5))
    examples = [{"id": "u1", "sig": x}, {"id": "u2", "sig": x[:12000]}]
    collate = SpeakerViewCollate(PraatSpeakerPerturbation(), crop_samples=16000, seed=7)
    first, again = collate(examples), collate(examples)
    assert first.sig.data.shape == first.sig_perturbed.data.shape == (2, 16000)
    assert first.sig.lengths.tolist() == pytest.approx([1.0, 0.75])
    assert torch.equal(first.sig_perturbed.data, again.sig_perturbed.data)  # dev: seeded
    assert not torch.allclose(first.sig.data, first.sig_perturbed.data)
    assert bool((first.sig_perturbed.data[1, 12000:] == 0).all())  # padding stays zero
    train = SpeakerViewCollate(PraatSpeakerPerturbation(), crop_samples=16000)
    torch.manual_seed(0)
    a = train(examples).sig_perturbed.data
    torch.manual_seed(0)
    assert torch.equal(a, train(examples).sig_perturbed.data)  # from the torch RNG


def test_spin_recipe_trains_with_praat_views(mini_corpus, tiny_upstreams, tmp_path):
    from lasersb.brains.spin import SpinBrain
    from lasersb.config import load_hparams
    from lasersb.data.pipelines import dataloader_options

    spec = importlib.util.spec_from_file_location("spin_praat_train", RECIPE / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    hparams = load_hparams(
        RECIPE / "hparams" / "spin_mini.yaml",
        {
            "data_folder": str(mini_corpus / "LibriSpeech"),
            "upstream_source": str(tiny_upstreams["hubert"]),
            "output_folder": str(tmp_path / "spin"),
            "speaker_perturbation": "praat",
            "total_steps": 2,
            "warmup_steps": 1,
            "valid_max_utterances": 4,
            "ckpt_interval_steps": 100,
        },
    )
    Path(hparams["output_folder"]).mkdir(parents=True, exist_ok=True)
    train_data, valid_data = recipe.build_datasets(hparams)
    brain = SpinBrain(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32", "noprogressbar": True},
    )  # fmt: skip
    valid_opts = dataloader_options(valid_data, batch_size=4)
    loader = brain.make_dataloader(valid_data, __import__("speechbrain").Stage.VALID,
                                   ckpt_prefix=None, **dict(valid_opts))  # fmt: skip
    batch = next(iter(loader))
    assert batch.sig_perturbed.data.shape == batch.sig.data.shape
    brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    before = dict(brain.test_stats)
    brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    assert brain.test_stats["loss"] == pytest.approx(before["loss"])  # same dev views
    brain.fit(
        hparams["epoch_counter"], train_data, valid_data,
        train_loader_kwargs=dataloader_options(train_data, batch_size=2, shuffle=True),
        valid_loader_kwargs=dict(valid_opts),
    )  # fmt: skip
    assert brain.optimizer_step == 2
    assert np.isfinite(brain.valid_stats["loss"])
