"""Tests of the embedded mini corpus (lasersb.data.mini): layouts, formats, determinism, cache."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lasersb.data.mini import (
    DEMAND_SEEN,
    DEMAND_TYPES,
    DEMAND_UNSEEN,
    EMOTIONS,
    MiniCorpusOptions,
    generate_mini_corpus,
    get_mini_corpus,
    main,
)
from lasersb.data.mini_text import _vocabulary_pronunciations, vocabulary_words

LS_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
TINY = dict(
    ls_train_speakers=2,
    ls_train_chapters=1,
    ls_train_utts=2,
    ls_dev_speakers=1,
    ls_test_speakers=1,
    ls_eval_chapters=1,
    ls_eval_utts=1,
    vox_dev_speakers=1,
    vox_test_speakers=2,
    vox_videos=2,
    vox_utts=1,
    demand_seconds=1.0,
    babble_talkers=1,
    iemocap_sessions=1,
    iemocap_utts=4,
    adress_train_per_class=1,
    adress_test_per_class=1,
)


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_audio(path: Path, min_s=0.0, max_s=float("inf")) -> float:
    info = soundfile.info(str(path))
    assert info.samplerate == 16000, path
    assert info.channels == 1, path
    seconds = info.frames / info.samplerate
    assert min_s <= seconds <= max_s, (path, seconds)
    return seconds


def test_manifest(mini_corpus):
    manifest = json.loads((mini_corpus / "mini_corpus.json").read_text())
    defaults = MiniCorpusOptions()
    assert manifest["options"]["ls_train_speakers"] == defaults.ls_train_speakers
    assert manifest["sample_rate"] == 16000
    counts = manifest["counts"]
    assert counts["librispeech/train-clean-100"] == 12 * 2 * 5
    assert counts["librispeech/dev-clean"] == counts["librispeech/test-clean"] == 4 * 2 * 3
    assert counts["voxceleb1"] == 12 * 2 * 3
    assert counts["demand"] == 18
    assert counts["iemocap"] == 5 * 8
    assert counts["adress"] == 2 * 8 + 2 * 4
    assert all(seconds > 0 for seconds in manifest["durations_s"].values())


def test_librispeech_layout_and_durations(mini_corpus):
    ls = mini_corpus / "LibriSpeech"
    pattern = re.compile(r"^(\d+)-(\d+)-(\d{4})$")
    n_files = 0
    for split in LS_SPLITS:
        for trans in (ls / split).glob("*/*/*.trans.txt"):
            spk, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{spk}-{chapter}.trans.txt"
            lines = trans.read_text().splitlines()
            flacs = sorted(p.stem for p in trans.parent.glob("*.flac"))
            assert sorted(line.split(" ", 1)[0] for line in lines) == flacs
            for line in lines:
                utt, text = line.split(" ", 1)
                assert pattern.match(utt).groups()[:2] == (spk, chapter)
                assert text == text.upper() and re.fullmatch(r"[A-Z' ]+", text), line
                _check_audio(trans.parent / f"{utt}.flac", 1.0, 6.0)
                n_files += 1
    assert n_files == 168


def test_librispeech_speakers(mini_corpus):
    ls = mini_corpus / "LibriSpeech"
    by_split = {s: {p.name for p in (ls / s).iterdir()} for s in LS_SPLITS}
    assert len(set.union(*by_split.values())) >= 20
    for i, a in enumerate(LS_SPLITS):
        for b in LS_SPLITS[i + 1 :]:
            assert not by_split[a] & by_split[b], (a, b)
    rows = [ln for ln in (ls / "SPEAKERS.TXT").read_text().splitlines() if not ln.startswith(";")]
    table = {}
    for row in rows:
        spk, sex, subset, minutes, name = (f.strip() for f in row.split("|"))
        assert sex in {"F", "M"} and name and float(minutes) > 0
        table[spk] = subset
    assert table == {spk: s for s in LS_SPLITS for spk in by_split[s]}
    assert min(int(s) for s in by_split["train-clean-100"]) == 1001
    assert min(int(s) for s in by_split["dev-clean"]) == 2001
    assert min(int(s) for s in by_split["test-clean"]) == 3001


def test_lexicon_covers_transcripts(mini_corpus):
    lexicon = {}
    for line in (mini_corpus / "librispeech-lexicon.txt").read_text().splitlines():
        word, phones = line.split("\t")
        assert re.fullmatch(r"[A-Z']+", word)
        assert all(re.fullmatch(r"[A-Z]+[0-2]?", p) for p in phones.split()), line
        assert any(p[-1] in "012" for p in phones.split()), line  # stress digits kept
        lexicon[word] = phones
    words = set()
    for trans in (mini_corpus / "LibriSpeech").glob("*/*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            words.update(line.split()[1:])
    assert words and words <= set(lexicon)
    assert {"UH", "UM"} <= set(lexicon)


def test_vocabulary_all_in_cmudict():
    found = _vocabulary_pronunciations()
    assert set(found) == set(vocabulary_words())
    assert len(found) >= 300


def test_voxceleb1(mini_corpus):
    vox = mini_corpus / "VoxCeleb1"
    wavs = sorted((vox / "wav").glob("*/*/*.wav"))
    assert len(wavs) == 72
    for wav in wavs:
        rel = wav.relative_to(vox / "wav").as_posix()
        assert re.fullmatch(r"id1\d{4}/[A-Za-z0-9_-]{11}/\d{5}\.wav", rel), rel
        _check_audio(wav, 1.0, 8.0)
    meta = (vox / "vox1_meta.csv").read_text().splitlines()
    assert meta[0] == "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"
    sets = {}
    for row in meta[1:]:
        spk, name, gender, nationality, subset = row.split("\t")
        assert gender in {"m", "f"} and subset in {"dev", "test"} and name and nationality
        sets[spk] = subset
    assert {p.name for p in (vox / "wav").iterdir()} == set(sets)
    test_speakers = {s for s, subset in sets.items() if subset == "test"}
    assert min(test_speakers) == "id10270"
    trials = [t.split() for t in (vox / "veri_test2.txt").read_text().splitlines()]
    assert len(trials) >= 40
    for label, enrol, test in trials:
        assert (vox / "wav" / enrol).is_file() and (vox / "wav" / test).is_file()
        spk_a, spk_b = enrol.split("/")[0], test.split("/")[0]
        assert {spk_a, spk_b} <= test_speakers
        assert (label == "1") == (spk_a == spk_b) and enrol != test
    assert {t[0] for t in trials} == {"0", "1"}


def test_demand(mini_corpus):
    demand = mini_corpus / "DEMAND"
    assert sorted(p.name for p in demand.iterdir()) == sorted(DEMAND_TYPES)
    assert len(DEMAND_TYPES) == 18 and not set(DEMAND_SEEN) & set(DEMAND_UNSEEN)
    assert all(t[0] in "NS" for t in DEMAND_UNSEEN) and all(t[0] in "DTOP" for t in DEMAND_SEEN)
    spectra = {}
    for noise_type in DEMAND_TYPES:
        path = demand / noise_type / "ch01.wav"
        assert [p.name for p in path.parent.iterdir()] == ["ch01.wav"]
        _check_audio(path, 5.0)
        x, _ = soundfile.read(str(path))
        assert 0.02 < np.sqrt(np.mean(x**2)) < 0.3 and np.max(np.abs(x)) < 1.0
        power = np.abs(np.fft.rfft(x[:16000])) ** 2
        spectra[noise_type] = np.log10(power[:8000].reshape(-1, 250).mean(1) + 1e-12)
    # distinct characters: no two types share the same (band-averaged) spectrum shape
    types = list(spectra)
    for i, a in enumerate(types):
        for b in types[i + 1 :]:
            assert np.abs(spectra[a] - spectra[b]).mean() > 0.05, (a, b)


LABEL_LINE = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses\d{2}[FM]_\w+?_[FM]\d{3})\t(\w{3})\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)


def test_iemocap_labels(mini_corpus):
    base = mini_corpus / "IEMOCAP"
    assert sorted(p.name for p in base.iterdir()) == [f"Session{i}" for i in range(1, 6)]
    labels = {}
    for label_file in sorted(base.glob("Session*/dialog/EmoEvaluation/*.txt")):
        lines = label_file.read_text().splitlines()
        assert lines[0].startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION")
        for line in lines:
            match = LABEL_LINE.match(line)
            if match:
                start, end, utt, emo = (
                    match.group(1),
                    match.group(2),
                    match.group(3),
                    match.group(4),
                )
                assert float(start) < float(end)
                assert utt.startswith(label_file.stem)
                labels[utt] = emo
                session = label_file.parent.parent.parent
                wav = session / "sentences" / "wav" / label_file.stem / f"{utt}.wav"
                seconds = _check_audio(wav, 1.0, 7.0)
                assert abs(seconds - (float(end) - float(start))) < 1e-3
    assert len(labels) == 40
    assert set(labels.values()) == set(EMOTIONS)
    assert len(list(base.glob("Session*/sentences/wav/*/*.wav"))) == 40


def test_adress(mini_corpus):
    base = mini_corpus / "ADReSS"
    for label in ("cc", "cd"):
        rows = (base / "train" / f"{label}_meta_data.txt").read_text().splitlines()
        assert rows[0].replace(" ", "") == "ID;age;gender;mmse"
        ids = {row.split(";")[0].strip() for row in rows[1:]}
        wavs = {p.stem for p in (base / "train" / "Full_wave_enhanced_audio" / label).glob("*.wav")}
        assert ids == wavs and len(ids) == 8
        for row in rows[1:]:
            sid, age, gender, mmse = (f.strip() for f in row.split(";"))
            assert re.fullmatch(r"S\d{3}", sid) and gender in {"male", "female"}
            assert (int(mmse) >= 26) == (label == "cc") and 50 < int(age) < 90
    rows = (base / "test" / "meta_data_test.txt").read_text().splitlines()
    labels = [row.split(";")[3].strip() for row in rows[1:]]
    assert sorted(labels) == ["0"] * 4 + ["1"] * 4
    for wav in base.glob("*/Full_wave_enhanced_audio/**/*.wav"):
        _check_audio(wav, 3.0, 8.0)
    assert len(list(base.glob("test/Full_wave_enhanced_audio/*.wav"))) == 8


def test_determinism_and_seed(tmp_path):
    first = _digest(generate_mini_corpus(tmp_path / "a", seed=5, workers=2, **TINY))
    again = _digest(generate_mini_corpus(tmp_path / "b", seed=5, workers=1, **TINY))
    assert first == again
    assert any(k.endswith(".flac") for k in first) and any(
        k.endswith("veri_test2.txt") for k in first
    )
    other = _digest(
        generate_mini_corpus(tmp_path / "c", seed=6, **dict(TINY, corpora=("librispeech",)))
    )
    audio = [k for k in other if k.endswith(".flac")]
    assert audio and all(first[k] != other[k] for k in audio if k in first)
    trans = [k for k in other if k.endswith(".trans.txt")]
    assert any(first[k] != other[k] for k in trans)


def test_cache_reuse_and_regeneration(tmp_path):
    root = tmp_path / "cache" / "mini"
    options = dict(TINY, corpora=())
    got = get_mini_corpus(root, seed=1, **options)
    manifest = got / "mini_corpus.json"
    stamp = manifest.stat().st_mtime_ns
    assert get_mini_corpus(root, seed=1, **options) == root
    assert manifest.stat().st_mtime_ns == stamp  # not regenerated
    get_mini_corpus(root, seed=2, **dict(options, ls_train_utts=1))  # seed and options changed
    regenerated = json.loads(manifest.read_text())
    assert regenerated["options"]["ls_train_utts"] == 1 and regenerated["seed"] == 2
    assert not list(root.parent.glob(".mini.tmp-*")) and not list(root.parent.glob(".mini.old-*"))


def test_default_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LASERSB_CACHE", str(tmp_path))
    root = get_mini_corpus(corpora=())
    key = MiniCorpusOptions(corpora=()).cache_key(0)
    assert root == tmp_path / f"mini-{key}" and (root / "librispeech-lexicon.txt").is_file()


def test_user_errors(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a mini corpus"):
        get_mini_corpus(tmp_path, corpora=())
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(TypeError, match="unknown mini corpus options"):
        get_mini_corpus(tmp_path / "x", ls_train_speaker=3)
    with pytest.raises(ValueError, match="unknown corpora"):
        MiniCorpusOptions(corpora=("timit",))


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "m"), "--corpora", "none", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "m") in out and "lexicon:" in out
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lasersb.data.mini",
            "--out",
            str(tmp_path / "m"),
            "--corpora",
            "none",
            "--seed",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mini corpus at" in result.stdout
