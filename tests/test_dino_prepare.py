"""VoxCeleb preparation: VoxCeleb1/2 layouts, test-speaker exclusion, trial lists, idempotence."""

import csv
import random

import numpy as np
import pytest
import soundfile

from data_prep.voxceleb_prepare import prepare_voxceleb, read_vox1_meta, trial_speakers


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_mini_corpus_manifests_exclude_test_speakers(mini_corpus, tmp_path):
    vox1 = mini_corpus / "VoxCeleb1"
    out = prepare_voxceleb(vox1, tmp_path, dev_fraction=0.2)
    meta = read_vox1_meta(vox1 / "vox1_meta.csv")
    test_speakers = {s for s, split in meta.items() if split == "test"}
    trial_spk, trial_utts = trial_speakers(vox1 / "veri_test2.txt")
    train, dev, test = (_rows(out[k]) for k in ("train", "dev", "test"))
    assert list(train[0]) == ["ID", "duration", "wav", "spk_id"]
    used = {r["spk_id"] for r in train + dev}
    assert used and not used & (test_speakers | trial_spk)
    assert used == {s for s, split in meta.items() if split == "dev"}
    assert {"/".join(r["wav"].split("/")[-3:]) for r in test} == trial_utts
    assert not {r["ID"] for r in train} & {r["ID"] for r in dev}
    assert all(float(r["duration"]) > 0 for r in train)
    assert out["trials"]["veri_test2"].read_text() == (vox1 / "veri_test2.txt").read_text()
    # Idempotent: a second call with the same options rewrites nothing.
    mtime = out["train"].stat().st_mtime_ns
    again = prepare_voxceleb(vox1, tmp_path, dev_fraction=0.2)
    assert again["train"].stat().st_mtime_ns == mtime


def _write(path, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(16000 * seconds), dtype="float32"), 16000)


def test_voxceleb2_layout_and_errors(tmp_path):
    vox1, vox2 = tmp_path / "vox1", tmp_path / "vox2"
    for spk in ("id10270", "id10271"):
        for n in (1, 2):
            _write(vox1 / "wav" / spk / "abcdefghijk" / f"{n:05d}.wav")
    (vox1 / "veri_test2.txt").write_text(
        "1 id10270/abcdefghijk/00001.wav id10270/abcdefghijk/00002.wav\n"
        "0 id10270/abcdefghijk/00001.wav id10271/abcdefghijk/00001.wav\n"
    )
    # VoxCeleb2 dev/aac with converted wav files next to the m4a ones.
    for spk in ("id00012", "id00015"):
        for n in (1, 2, 3):
            wav = vox2 / "dev" / "aac" / spk / "zzzzzzzzzzz" / f"{n:05d}.wav"
            _write(wav, 2.0)
            wav.with_suffix(".m4a").write_bytes(b"not decoded")
    out = prepare_voxceleb(vox1, tmp_path / "m", vox2_folder=vox2, meta_file=None, dev_fraction=0)
    train = _rows(out["train"])
    assert {r["spk_id"] for r in train} == {"id00012", "id00015"}
    assert len(train) == 6 and train[0]["ID"].startswith("id00012--zzzzzzzzzzz--")
    # An m4a without its wav: a clear message with the conversion command.
    (vox2 / "dev" / "aac" / "id00016" / "yyyyyyyyyyy").mkdir(parents=True)
    (vox2 / "dev" / "aac" / "id00016" / "yyyyyyyyyyy" / "00001.m4a").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="ffmpeg"):
        prepare_voxceleb(vox1, tmp_path / "m2", vox2_folder=vox2, meta_file=None)
    with pytest.raises(FileNotFoundError, match="list_test_hard2.txt"):
        prepare_voxceleb(vox1, tmp_path / "m3", trial_lists=("vox1_h",), meta_file=None)
    with pytest.raises(FileNotFoundError, match="vox1_meta.csv"):
        prepare_voxceleb(vox1, tmp_path / "m4")
    with pytest.raises(FileNotFoundError, match="wav/idXXXXX"):
        prepare_voxceleb(tmp_path / "nowhere", tmp_path / "m5")
    with pytest.raises(ValueError, match="No training utterance"):
        prepare_voxceleb(vox1, tmp_path / "m6", meta_file=None)


def test_energy_vad_filters_on_speech_and_the_dataset_serves_speech_only(mini_corpus, tmp_path):
    from lasersb.data.speakers import read_speech_segment, speaker_dataset
    from lasersb.data.vad import EnergyVAD, parse_segments

    utts = sorted((mini_corpus / "VoxCeleb1" / "wav").glob("id1000[12]/*/*.wav"))
    clips = [soundfile.read(p, dtype="float32")[0] for p in utts[:4]]
    rng = np.random.RandomState(0)

    def quiet(seconds):
        return (1e-4 * rng.randn(int(16000 * seconds))).astype("float32")

    vox1 = tmp_path / "vox1"
    # id10001: one utterance padded to > 4 s with near-silence (< 4 s of speech), one with
    # > 4 s of speech (two clips). id10270 is the trial speaker.
    files = {
        "id10001/vidAAAAAAAA/00001.wav": np.concatenate([quiet(1.5), clips[0], quiet(1.5)]),
        "id10001/vidAAAAAAAA/00002.wav": np.concatenate([quiet(0.5), clips[1], clips[2]]),
        "id10270/vidAAAAAAAA/00001.wav": clips[3],
        "id10270/vidAAAAAAAA/00002.wav": clips[3],
    }
    for rel, wav in files.items():
        (vox1 / "wav" / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(vox1 / "wav" / rel, wav, 16000)
    (vox1 / "veri_test2.txt").write_text(
        "1 id10270/vidAAAAAAAA/00001.wav id10270/vidAAAAAAAA/00002.wav\n"
    )
    padded = len(files["id10001/vidAAAAAAAA/00001.wav"]) / 16000
    assert padded > 4.0
    common = dict(meta_file=None, dev_fraction=0.0, min_duration=4.0)
    raw = _rows(prepare_voxceleb(vox1, tmp_path / "raw", **common)["train"])
    assert [r["ID"][-5:] for r in raw] == ["00001", "00002"]  # both files are > 4 s long
    out = prepare_voxceleb(vox1, tmp_path / "vad", vad=EnergyVAD(), **common)
    rows = _rows(out["train"])
    assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "speech_duration",
                             "speech_segments"]  # fmt: skip
    assert [r["ID"][-5:] for r in rows] == ["00002"]  # < 4 s of speech after the VAD: dropped
    (row,) = rows
    segments = parse_segments(row["speech_segments"])
    speech = (segments[:, 1] - segments[:, 0]).sum()
    assert float(row["speech_duration"]) == pytest.approx(speech / 16000, abs=1e-3)
    # The 0.5 s of leading near-silence is not speech; the two clips are.
    assert segments[0, 0] >= 0.45 * 16000
    assert 4.0 < speech / 16000 < float(row["duration"]) - 0.4
    # The dataset serves the speech only: whole, or a random window of it.
    whole = speaker_dataset(out["train"], speech_only=True)[0]["sig"]
    assert len(whole) == speech
    wav, _ = soundfile.read(row["wav"], dtype="float32")
    expected = np.concatenate([wav[s:e] for s, e in segments])
    np.testing.assert_array_equal(whole.numpy(), expected)
    for seed in range(20):
        got = read_speech_segment(row["wav"], segments, 8000, generator=random.Random(seed))
        offset = random.Random(seed).randint(0, speech - 8000)
        np.testing.assert_array_equal(got.numpy(), expected[offset : offset + 8000])
    assert len(speaker_dataset(out["train"], segment_seconds=0.5, speech_only=True)[0]["sig"]) == (
        8000
    )
    with pytest.raises(ValueError, match="energy_vad"):
        speaker_dataset(tmp_path / "raw" / "train.csv", speech_only=True)
    # Idempotent with the same VAD; a different VAD setting prepares again.
    mtime = out["train"].stat().st_mtime_ns
    prepare_voxceleb(vox1, tmp_path / "vad", vad=EnergyVAD(), **common)
    assert out["train"].stat().st_mtime_ns == mtime
    prepare_voxceleb(vox1, tmp_path / "vad", vad=EnergyVAD(energy_threshold=6.0), **common)
    assert out["train"].stat().st_mtime_ns != mtime
