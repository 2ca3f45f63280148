"""Tests of data_prep/noisy_prepare.py: deterministic noisy LibriSpeech from the mini corpus."""

import csv

import pytest
import soundfile as sf
import torch

from data_prep.noisy_prepare import (
    DEFAULT_SNRS,
    SEEN_NOISE_TYPES,
    UNSEEN_NOISE_TYPES,
    NoisyPrepError,
    noisy_dataset,
    prepare_noisy_librispeech,
)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def written(mini_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy_written")
    manifests = prepare_noisy_librispeech(
        mini_corpus, mini_corpus / "DEMAND", out, splits=["test-clean"]
    )
    return out, manifests


def test_manifests_conditions_and_layout(written, mini_corpus):
    out, manifests = written
    assert sorted(manifests) == ["seen", "unseen"]
    seen, unseen = _rows(manifests["seen"]["test-clean"]), _rows(manifests["unseen"]["test-clean"])
    clean_ids = sorted(p.stem for p in (mini_corpus / "LibriSpeech/test-clean").rglob("*.flac"))
    assert sorted(r["ID"] for r in seen) == clean_ids == sorted(r["ID"] for r in unseen)
    assert {r["noise_type"] for r in seen} <= set(SEEN_NOISE_TYPES)
    assert {r["noise_type"] for r in unseen} <= set(UNSEEN_NOISE_TYPES)
    assert len({r["noise_type"] for r in seen}) > 3  # drawn, not constant
    assert {float(r["snr"]) for r in seen + unseen} <= set(map(float, DEFAULT_SNRS))
    for row in seen:
        assert (
            row["noise_wav"].endswith("ch01.wav") and f"/{row['noise_type']}/" in row["noise_wav"]
        )
    # LibriSpeech layout with the transcripts, usable by any LibriSpeech recipe.
    first = seen[0]
    spk, chapter, _ = first["ID"].split("-")
    folder = out / "seen" / "LibriSpeech" / "test-clean" / spk / chapter
    assert (folder / f"{first['ID']}.flac").is_file()
    assert first["ID"] in (folder / f"{spk}-{chapter}.trans.txt").read_text()


def test_mixture_snr_crop_and_determinism(written, tmp_path, mini_corpus):
    out, manifests = written
    rows = _rows(manifests["seen"]["test-clean"])
    dataset = noisy_dataset(manifests["seen"]["test-clean"])
    for index in range(4):
        row, item = rows[index], dataset[index]
        clean, noisy = item["clean_sig"], item["noisy_sig"]
        assert clean.shape == noisy.shape
        snr = 10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())
        assert abs(float(snr) - float(row["snr"])) < 0.1  # 16-bit FLAC rounding only
        # The noise is the recording's crop at noise_start.
        noise, _ = sf.read(row["noise_wav"], dtype="float32")
        start, n = int(row["noise_start"]), clean.shape[0]
        crop = torch.from_numpy(noise[start : start + n])
        residual = (noisy - clean) / float(row["gain"])
        cos = torch.nn.functional.cosine_similarity(residual, crop, dim=0)
        assert float(cos) > 0.99
    # Same seed, other folder, mixed on the fly: same draws, same samples (up to 16 bits).
    fly = prepare_noisy_librispeech(
        mini_corpus, mini_corpus / "DEMAND", tmp_path / "fly", splits=["test-clean"],
        unseen_types=[], write_mixtures=False,
    )  # fmt: skip
    fly_rows = _rows(fly["seen"]["test-clean"])
    assert "wav" not in fly_rows[0]
    keys = ("ID", "noise_type", "noise_start", "snr", "gain")
    assert [[r[k] for k in keys] for r in fly_rows] == [[r[k] for k in keys] for r in rows]
    fly_item = noisy_dataset(fly["seen"]["test-clean"])[0]
    assert torch.allclose(fly_item["noisy_sig"], dataset[0]["noisy_sig"], atol=1e-4)
    # Clean condition: the SE input is the clean speech itself.
    clean_item = noisy_dataset(manifests["seen"]["test-clean"], clean_input=True)[0]
    assert torch.equal(clean_item["noisy_sig"], clean_item["clean_sig"])


def test_idempotent_and_errors(written, mini_corpus, tmp_path):
    out, manifests = written
    path = manifests["seen"]["test-clean"]
    before = path.stat().st_mtime_ns
    again = prepare_noisy_librispeech(mini_corpus, mini_corpus / "DEMAND", out,
                                      splits=["test-clean"])  # fmt: skip
    assert again == manifests and path.stat().st_mtime_ns == before
    with pytest.raises(NoisyPrepError, match="NOTATYPE"):
        prepare_noisy_librispeech(mini_corpus, mini_corpus / "DEMAND", tmp_path / "bad",
                                  splits=["test-clean"], seen_types=["NOTATYPE"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="noisy_prepare"):
        noisy_dataset(tmp_path / "missing.csv")
