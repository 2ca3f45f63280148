"""IEMOCAP preparation: the mini corpus and a hand-made copy of the real release's quirks."""

import csv

import numpy as np
import pytest
import soundfile

from data_prep.iemocap_prepare import IEMOCAPPrepError, parse_emo_evaluation, prepare_iemocap


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_mini_corpus_folds(mini_corpus, tmp_path):
    out = prepare_iemocap(mini_corpus / "IEMOCAP", tmp_path)
    assert out["counts"] == {"neu": 10, "hap": 10, "ang": 10, "sad": 10}
    all_ids = set()
    for session in range(1, 6):
        rows = _rows(out["sessions"][session])
        assert len(rows) == 8
        assert {r["session"] for r in rows} == {str(session)}
        assert all(r["ID"].startswith(f"Ses0{session}") for r in rows)
        assert {r["spk_id"] for r in rows} == {f"Ses0{session}F", f"Ses0{session}M"}
        assert all(float(r["duration"]) > 0.5 for r in rows)
        test = _rows(out["folds"][session]["test"])
        train = _rows(out["folds"][session]["train"])
        assert [r["ID"] for r in test] == [r["ID"] for r in rows]
        assert len(train) == 32 and not {r["ID"] for r in train} & {r["ID"] for r in test}
        all_ids |= {r["ID"] for r in rows}
    assert len(all_ids) == 40
    # Labels agree with the evaluation files.
    row = _rows(out["sessions"][3])[0]
    labels = parse_emo_evaluation(
        mini_corpus / "IEMOCAP/Session3/dialog/EmoEvaluation" / f"{row['dialog']}.txt"
    )
    assert labels[row["ID"]] == row["label"]
    # Idempotent: the second call does not rewrite the files.
    stamp = out["sessions"][1].stat().st_mtime_ns
    again = prepare_iemocap(mini_corpus, tmp_path)  # the parent of IEMOCAP/ works too
    assert again["counts"] == out["counts"]
    assert out["sessions"][1].stat().st_mtime_ns == stamp


def _write_session(root, session, entries, missing=()):
    """entries: [(dialog, utterance, emotion)]; a wav per utterance except ``missing``."""
    sess = root / "IEMOCAP_full_release" / f"Session{session}"
    evals = {}
    for dialog, utt, emo in entries:
        evals.setdefault(dialog, []).append(
            f"[1.0000 - 2.5000]\t{utt}\t{emo}\t[2.5000, 3.0000, 3.5000]\nC-E1:\tNeutral;\t()\n"
        )
        if utt not in missing:
            wav = sess / "sentences/wav" / dialog / f"{utt}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(wav, np.full(8000, 0.1, dtype="float32"), 16000)
    eval_dir = sess / "dialog/EmoEvaluation"
    eval_dir.mkdir(parents=True, exist_ok=True)
    for dialog, lines in evals.items():
        header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        (eval_dir / f"{dialog}.txt").write_text(header + "\n".join(lines))
    # Debris found in real copies: macOS resource forks.
    (eval_dir / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07")


def test_real_layout_labels_and_merge(tmp_path):
    entries = [
        ("Ses01F_impro01", "Ses01F_impro01_F000", "neu"),
        ("Ses01F_impro01", "Ses01F_impro01_M000", "exc"),
        ("Ses01F_impro01", "Ses01F_impro01_F001", "fru"),
        ("Ses01F_impro01", "Ses01F_impro01_M001", "xxx"),
        ("Ses01M_script01_1", "Ses01M_script01_1_F000", "hap"),
        ("Ses01M_script01_1", "Ses01M_script01_1_M000", "ang"),
        ("Ses01M_script01_1", "Ses01M_script01_1_M001", "sad"),
    ]
    _write_session(tmp_path, 1, entries)
    out = prepare_iemocap(tmp_path, tmp_path / "m", sessions=[1])
    rows = {r["ID"]: r for r in _rows(out["sessions"][1])}
    assert {k: r["label"] for k, r in rows.items()} == {
        "Ses01F_impro01_F000": "neu",
        "Ses01F_impro01_M000": "hap",  # excited merged into happy
        "Ses01M_script01_1_F000": "hap",
        "Ses01M_script01_1_M000": "ang",
        "Ses01M_script01_1_M001": "sad",
    }
    assert rows["Ses01F_impro01_M000"]["spk_id"] == "Ses01M"  # the speaker, not the dialog lead
    assert float(rows["Ses01F_impro01_F000"]["duration"]) == pytest.approx(0.5)
    kept = prepare_iemocap(tmp_path, tmp_path / "n", sessions=[1], merge_excited=False)
    assert kept["counts"]["hap"] == 1
    assert "Ses01F_impro01_M000" not in {r["ID"] for r in _rows(kept["sessions"][1])}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(IEMOCAPPrepError, match="Session1..Session5"):
        prepare_iemocap(tmp_path, tmp_path / "m")
    entries = [
        ("Ses01F_impro01", "Ses01F_impro01_F000", "neu"),
        ("Ses01F_impro01", "Ses01F_impro01_F001", "sad"),
    ]
    _write_session(tmp_path, 1, entries, missing={"Ses01F_impro01_F001"})
    with pytest.raises(IEMOCAPPrepError, match="Ses01F_impro01_F001.wav does not exist"):
        prepare_iemocap(tmp_path, tmp_path / "m", sessions=[1])
    out = prepare_iemocap(tmp_path, tmp_path / "m", sessions=[1], skip_bad_files=True)
    assert [r["ID"] for r in _rows(out["sessions"][1])] == ["Ses01F_impro01_F000"]
    with pytest.raises(IEMOCAPPrepError, match=r"Session\(s\) \[2\] missing"):
        prepare_iemocap(tmp_path, tmp_path / "m", sessions=[1, 2])
