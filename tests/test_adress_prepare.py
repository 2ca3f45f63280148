"""ADReSS preparation: the mini corpus, and the real challenge's formats (44.1 kHz, chunks)."""

import csv

import numpy as np
import pytest
import soundfile

from data_prep.adress_prepare import ADReSSPrepError, prepare_adress, read_meta


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_mini_corpus(mini_corpus, tmp_path):
    out = prepare_adress(mini_corpus / "ADReSS", tmp_path)
    assert out["counts"] == {"train": {"cc": 8, "cd": 8}, "test": {"cc": 4, "cd": 4}}
    train, test = _rows(out["train"]), _rows(out["test"])
    meta = read_meta(mini_corpus / "ADReSS/test/meta_data_test.txt")
    for row in test:
        assert row["label"] == ("cd" if meta[row["ID"]]["label"] == "1" else "cc")
        assert row["mmse"] == meta[row["ID"]]["mmse"]
    assert {r["label"] for r in train if "/cc/" in r["wav"]} == {"cc"}
    assert all(float(r["duration"]) > 1.0 for r in train + test)
    assert not {r["subject"] for r in train} & {r["subject"] for r in test}
    stamp = out["train"].stat().st_mtime_ns
    assert prepare_adress(mini_corpus, tmp_path)["counts"] == out["counts"]  # parent works
    assert out["train"].stat().st_mtime_ns == stamp


def _fake_adress(root, rate=44100, channels=2):
    tone = 0.1 * np.sin(np.arange(rate) * 0.05).astype("float32")
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    for label, sid in (("cc", "S001"), ("cd", "S079")):
        for folder, name in (("Full_wave_enhanced_audio", sid), ("Normalised_audio-chunks", None)):
            target = root / "train" / folder / label
            target.mkdir(parents=True)
            names = [name] if name else [f"{sid}-0", f"{sid}-1"]
            for n in names:
                soundfile.write(target / f"{n}.wav", data, rate)
        (root / "train" / f"{label}_meta_data.txt").write_text(
            f"ID   ; age; gender; mmse\n{sid} ; 70 ; male ; NA\n"
        )
    for folder, names in (
        ("Full_wave_enhanced_audio", ["S160"]),
        ("Normalised_audio-chunks", ["S160-0", "S160-1"]),
    ):
        (root / "test" / folder).mkdir(parents=True)
        for n in names:
            soundfile.write(root / "test" / folder / f"{n}.wav", data, rate)
    (root / "test" / "meta_data_test.txt").write_text(
        "ID   ; age; gender; Label; mmse\nS160 ; 64 ; female ; 1 ; 20\n"
    )


def test_real_formats_are_converted_and_chunks_grouped(tmp_path):
    root = tmp_path / "ADReSS-IS2020-data"
    _fake_adress(root)
    out = prepare_adress(tmp_path, tmp_path / "m")
    rows = _rows(out["train"])
    assert [r["label"] for r in rows] == ["cc", "cd"]
    assert rows[0]["mmse"] == ""  # NA
    info = soundfile.info(rows[0]["wav"])
    assert (info.samplerate, info.channels) == (16000, 1)  # converted copy
    assert float(rows[0]["duration"]) == pytest.approx(1.0, abs=1e-3)
    assert "audio_16000" in rows[0]["wav"]
    chunks = prepare_adress(root, tmp_path / "c", use_chunks=True)
    assert chunks["counts"] == {"train": {"cc": 2, "cd": 2}, "test": {"cc": 0, "cd": 2}}
    test = _rows(chunks["test"])
    assert [(r["ID"], r["subject"], r["label"]) for r in test] == [
        ("S160-0", "S160", "cd"),
        ("S160-1", "S160", "cd"),
    ]


def test_errors_name_the_problem(tmp_path):
    root = tmp_path / "ADReSS"
    _fake_adress(root, rate=16000, channels=1)
    (root / "test" / "meta_data_test.txt").write_text("ID   ; age; gender\nS160 ; 64 ; female\n")
    with pytest.raises(ADReSSPrepError, match="has no Label for S160"):
        prepare_adress(root, tmp_path / "m")
    labels = tmp_path / "labels.txt"
    labels.write_text("ID; Label\nS160; 0\n")
    out = prepare_adress(root, tmp_path / "m", test_labels_file=labels)
    assert out["counts"]["test"] == {"cc": 1, "cd": 0}
    with pytest.raises(ADReSSPrepError, match="does not exist"):
        prepare_adress(tmp_path / "nowhere", tmp_path / "m")
