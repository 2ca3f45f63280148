"""Tests of data_prep.librispeech_prepare on a hand-made LibriSpeech-layout folder."""

import csv
import doctest
import json
import os

import numpy as np
import pytest
import soundfile

import data_prep.librispeech_prepare as prep_module
from data_prep.librispeech_prepare import LibriSpeechPrepError, load_lexicon, prepare_librispeech

# (split, speaker, chapter, utt, samples, transcript)
UTTERANCES = [
    ("dev-clean", "19", "198", 0, 16000, "HELLO WORLD"),
    ("dev-clean", "19", "198", 1, 8000, "A SPEECH TEST"),
    ("dev-clean", "26", "495", 3, 12345, "WORLD"),
    ("test-clean", "61", "70968", 0, 4000, "HELLO"),
]
# tab-separated and space-separated lines; HELLO twice (the first wins); SPEECH is not in it
# (cmudict fallback)
LEXICON = "HELLO\tHH AH0 L OW1\nHELLO\tHH EH0 L OW1\nWORLD  W ER1 L D\nA\tAH0\nTEST\tT EH1 S T\n"
PHONES = {
    "HELLO WORLD": "HH AH0 L OW1 W ER1 L D",
    "A SPEECH TEST": "AH0 S P IY1 CH T EH1 S T",
    "WORLD": "W ER1 L D",
    "HELLO": "HH AH0 L OW1",
}


def _write_corpus(root, utterances=UTTERANCES, lexicon=LEXICON):
    rng = np.random.default_rng(0)
    transcripts = {}
    for split, spk, chapter, utt, samples, text in utterances:
        folder = root / "LibriSpeech" / split / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        utt_id = f"{spk}-{chapter}-{utt:04d}"
        soundfile.write(folder / f"{utt_id}.flac", rng.uniform(-0.3, 0.3, samples), 16000)
        transcripts.setdefault(folder / f"{spk}-{chapter}.trans.txt", []).append(f"{utt_id} {text}")
    for path, lines in transcripts.items():
        path.write_text("\n".join(lines) + "\n")
    if lexicon is not None:
        (root / "librispeech-lexicon.txt").write_text(lexicon)
    return root


def _expected_rows(root, split):
    rows = []
    for s, spk, chapter, utt, samples, text in UTTERANCES:
        if s != split:
            continue
        utt_id = f"{spk}-{chapter}-{utt:04d}"
        wav = (root / "LibriSpeech" / split / spk / chapter / f"{utt_id}.flac").resolve()
        rows.append([utt_id, f"{samples / 16000:.6g}", str(wav), spk, text, PHONES[text]])
    return sorted(rows)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def corpus(tmp_path):
    return _write_corpus(tmp_path / "corpus")


def test_exact_csv(corpus, tmp_path):
    csvs = prepare_librispeech(corpus, tmp_path / "prep", splits=("dev-clean", "test-clean"))
    assert set(csvs) == {"dev-clean", "test-clean"}
    for split, path in csvs.items():
        assert path == tmp_path / "prep" / f"{split}.csv"
        rows = _read_csv(path)
        assert rows[0] == ["ID", "duration", "wav", "spk_id", "wrd", "phn"]
        assert rows[1:] == _expected_rows(corpus, split)
    assert _read_csv(csvs["dev-clean"])[1][1] == "1"  # 16000 samples at 16 kHz
    assert _read_csv(csvs["dev-clean"])[3][1] == "0.771563"  # 12345 samples: 0.7715625
    options = json.loads((tmp_path / "prep" / "librispeech_prepare.json").read_text())
    assert options["options"]["lexicon_file"] == str(corpus / "librispeech-lexicon.txt")
    assert options["stats"]["dev-clean"] == {"utterances": 3, "skipped": {}}


def test_librispeech_folder_itself_and_explicit_lexicon(corpus, tmp_path):
    lexicon = tmp_path / "my-lexicon.txt"
    lexicon.write_text(LEXICON.replace("HH AH0 L OW1", "HH EH1 L OW0", 1) + "SPEECH\tS P IY1 CH\n")
    csvs = prepare_librispeech(
        corpus / "LibriSpeech", tmp_path / "prep", splits=["test-clean"], lexicon_file=lexicon
    )
    assert _read_csv(csvs["test-clean"])[1][5] == "HH EH1 L OW0"


def test_load_lexicon_formats(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_text(";;; comment\n\nhello\tHH AH0 L OW1\nHELLO HH EH0 L OW1\nX    EH1 K S\n")
    assert load_lexicon(path) == {"HELLO": ["HH", "AH0", "L", "OW1"], "X": ["EH1", "K", "S"]}
    path.write_text("BROKEN\n")
    with pytest.raises(LibriSpeechPrepError, match="line 1.*has no phones"):
        load_lexicon(path)
    with pytest.raises(LibriSpeechPrepError, match="Lexicon file not found"):
        load_lexicon(tmp_path / "nope.txt")


def test_idempotent_and_redone_on_change(corpus, tmp_path):
    save = tmp_path / "prep"
    csv_path = prepare_librispeech(corpus, save, splits=["dev-clean"])["dev-clean"]
    first = csv_path.stat().st_mtime_ns
    os.utime(csv_path, ns=(first - 10**9, first - 10**9))  # any rewrite would move the mtime
    stamped = csv_path.stat().st_mtime_ns
    prepare_librispeech(corpus, save, splits=["dev-clean"])
    assert csv_path.stat().st_mtime_ns == stamped
    # an option change redoes the work
    prepare_librispeech(corpus, save, splits=["dev-clean"], min_samples=500)
    assert csv_path.stat().st_mtime_ns != stamped
    assert _read_csv(csv_path)[1:] == _expected_rows(corpus, "dev-clean")


def test_option_change_and_corpus_change_redo(corpus, tmp_path):
    save = tmp_path / "prep"
    csv_path = prepare_librispeech(corpus, save, splits=["dev-clean"])["dev-clean"]
    assert len(_read_csv(csv_path)) == 4
    with pytest.raises(LibriSpeechPrepError, match=r"19-198-0001.flac has 8000 samples"):
        prepare_librispeech(corpus, save, splits=["dev-clean"], min_samples=9000)
    assert not (save / "librispeech_prepare.json").exists()  # failed run is not "done"
    prepare_librispeech(corpus, save, splits=["dev-clean"], min_samples=9000, skip_bad_files=True)
    assert [row[0] for row in _read_csv(csv_path)[1:]] == ["19-198-0000", "26-495-0003"]
    stats = json.loads((save / "librispeech_prepare.json").read_text())["stats"]
    assert stats["dev-clean"]["skipped"] == {"too_short": 1}
    # the corpus changes (a new utterance): redone although the options are the same
    extra = [("dev-clean", "26", "495", 4, 6000, "HELLO")]
    _write_corpus(tmp_path / "extra", extra, lexicon=None)
    src = tmp_path / "extra" / "LibriSpeech" / "dev-clean" / "26" / "495"
    dst = corpus / "LibriSpeech" / "dev-clean" / "26" / "495"
    (dst / "26-495-0004.flac").write_bytes((src / "26-495-0004.flac").read_bytes())
    with open(dst / "26-495.trans.txt", "a") as handle:
        handle.write("26-495-0004 HELLO\n")
    prepare_librispeech(corpus, save, splits=["dev-clean"], min_samples=400)
    assert [row[0] for row in _read_csv(csv_path)[1:]][-1] == "26-495-0004"


def test_missing_folders(tmp_path, corpus):
    with pytest.raises(LibriSpeechPrepError, match=r"data_folder not found: .*nowhere"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "prep")
    with pytest.raises(LibriSpeechPrepError, match=r"train-clean-100 not found in .*LibriSpeech"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["train-clean-100", "dev-clean"])


def test_missing_transcript_line(corpus, tmp_path):
    trans = corpus / "LibriSpeech" / "dev-clean" / "19" / "198" / "19-198.trans.txt"
    trans.write_text("19-198-0000 HELLO WORLD\n")
    with pytest.raises(LibriSpeechPrepError, match=r"No transcript line for .*19-198-0001.flac"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["dev-clean"])
    csvs = prepare_librispeech(corpus, tmp_path / "prep", splits=["dev-clean"], skip_bad_files=True)
    assert [row[0] for row in _read_csv(csvs["dev-clean"])[1:]] == ["19-198-0000", "26-495-0003"]


def test_transcript_without_audio(corpus, tmp_path):
    trans = corpus / "LibriSpeech" / "test-clean" / "61" / "70968" / "61-70968.trans.txt"
    with open(trans, "a") as handle:
        handle.write("61-70968-0001 WORLD\n")
    with pytest.raises(LibriSpeechPrepError, match=r"61-70968-0001.*no 61-70968-0001.flac"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["test-clean"])


def test_unreadable_audio(corpus, tmp_path):
    bad = corpus / "LibriSpeech" / "dev-clean" / "26" / "495" / "26-495-0003.flac"
    bad.write_bytes(b"not a flac file" * 20)
    with pytest.raises(LibriSpeechPrepError, match=r"26-495-0003.flac.*skip_bad_files=True"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["dev-clean"])
    csvs = prepare_librispeech(corpus, tmp_path / "prep", splits=["dev-clean"], skip_bad_files=True)
    assert len(_read_csv(csvs["dev-clean"])) == 3


def test_word_without_pronunciation(corpus, tmp_path):
    trans = corpus / "LibriSpeech" / "test-clean" / "61" / "70968" / "61-70968.trans.txt"
    trans.write_text("61-70968-0000 HELLO QXZWVBNM\n")
    with pytest.raises(LibriSpeechPrepError, match="No pronunciation for QXZWVBNM.*lexicon file"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["test-clean"])
    with pytest.raises(LibriSpeechPrepError, match="No usable utterance"):
        prepare_librispeech(corpus, tmp_path / "prep", splits=["test-clean"], skip_bad_files=True)


def test_cli(corpus, tmp_path, capsys):
    prep_module.main([str(corpus), str(tmp_path / "cli"), "--splits", "test-clean"])
    assert "test-clean:" in capsys.readouterr().out
    assert _read_csv(tmp_path / "cli" / "test-clean.csv")[1:] == _expected_rows(
        corpus, "test-clean"
    )
    with pytest.raises(SystemExit, match="error: LibriSpeech data_folder not found"):
        prep_module.main([str(tmp_path / "nowhere"), str(tmp_path / "cli")])


def test_cli_spellings_and_error_wording(corpus, tmp_path, capsys):
    """Both spellings of every option work (data_prep.cli); an error names the CLI's option."""
    lexicon = corpus / "librispeech-lexicon.txt"
    for spelling in ("--lexicon-file", "--lexicon_file"):
        out = tmp_path / spelling
        prep_module.main(
            [str(corpus), str(out), "--splits", "test-clean", spelling, str(lexicon),
             "--num_workers", "1", "--min-samples", "400"]
        )  # fmt: skip
        assert _read_csv(out / "test-clean.csv")[1:] == _expected_rows(corpus, "test-clean")
    trans = corpus / "LibriSpeech" / "test-clean" / "61" / "70968" / "61-70968.trans.txt"
    trans.write_text("61-70968-0000 HELLO QXZWVBNM\n")
    with pytest.raises(LibriSpeechPrepError, match=r"pass skip_bad_files=True\.$"):
        prepare_librispeech(corpus, tmp_path / "py", splits=["test-clean"])  # Python's wording
    with pytest.raises(
        SystemExit, match=r"No pronunciation for QXZWVBNM.*pass --skip-bad-files\.$"
    ):
        prep_module.main([str(corpus), str(tmp_path / "cli"), "--splits", "test-clean"])


def test_module_doctests():
    result = doctest.testmod(prep_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_mini_corpus(request, tmp_path):
    pytest.importorskip("lasersb.data.mini")
    mini_corpus = request.getfixturevalue("mini_corpus")
    csvs = prepare_librispeech(mini_corpus, tmp_path / "mini")
    for split, path in csvs.items():
        rows = _read_csv(path)
        assert rows[0] == ["ID", "duration", "wav", "spk_id", "wrd", "phn"], split
        assert len(rows) > 1, split
        for utt_id, duration, wav, spk, words, phones in rows[1:]:
            assert utt_id.startswith(spk + "-") and os.path.isfile(wav)
            assert float(duration) * 16000 >= 400 and words == words.upper()
            assert phones and all(p.isupper() or p[-1].isdigit() for p in phones.split())


def test_mini_corpus_end_to_end(request, tmp_path):
    """Mini corpus -> CSV -> dataset -> dynamic batches -> tiny upstream: frame counts agree."""
    pytest.importorskip("lasersb.data.mini")
    import torch
    from speechbrain.dataio.dataloader import make_dataloader

    from lasersb.data.pipelines import audio_dataset, dataloader_options
    from lasersb.models.upstream import SSLUpstream

    mini_corpus = request.getfixturevalue("mini_corpus")
    tiny = request.getfixturevalue("tiny_upstreams")
    csv_path = prepare_librispeech(mini_corpus, tmp_path / "mini", splits=["dev-clean"])[
        "dev-clean"
    ]
    dataset = audio_dataset(csv_path, sort="ascending", min_samples=400)
    options = dataloader_options(dataset, 4, dynamic_batching=True, max_batch_length=12.0)
    upstream = SSLUpstream(tiny["hubert"]).eval()
    batch = next(iter(make_dataloader(dataset, **options)))
    wavs, lens = batch.sig
    out = upstream(wavs, lens)
    durations = {row[0]: float(row[1]) for row in _read_csv(csv_path)[1:]}
    samples = torch.tensor([round(durations[utt_id] * 16000) for utt_id in batch.id])
    assert out.frame_lens.tolist() == upstream.frames_from_samples(samples).tolist()
    assert torch.isfinite(out.last_hidden_state).all()
