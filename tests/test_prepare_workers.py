"""Data preparation with worker processes: same manifests and same bad-file errors as one.

``lasersb.data.parallel.map_files`` runs the per-file work of every ``data_prep`` script; here
LibriSpeech and VoxCeleb (the two corpora whose real size needs it: 281k and 1.1M files) are
prepared with 1 and 2 workers on the mini corpus, and bad files are reported identically.
"""

import os
import shutil
import stat

import numpy as np
import pytest
import soundfile

from data_prep.librispeech_prepare import LibriSpeechPrepError, prepare_librispeech
from data_prep.voxceleb_prepare import prepare_voxceleb
from lasersb.data.parallel import BadFile, map_files

SPLITS = ["train-clean-100", "dev-clean", "test-clean"]


def _square_or_bad(value):
    return BadFile("odd", f"item {value} is bad") if value in (3, 7) else value * value


def test_map_files_keeps_order_and_stops_at_the_first_bad_item():
    items = list(range(10))
    expected = [_square_or_bad(v) for v in items]
    assert map_files(_square_or_bad, items, num_workers=2, chunk_size=1) == expected
    stopped = map_files(_square_or_bad, items, num_workers=2, chunk_size=1, stop_at_bad=True)
    assert stopped == expected[:4] and stopped[-1].message == "item 3 is bad"
    assert map_files(_square_or_bad, items, num_workers=0, stop_at_bad=True) == stopped


def test_librispeech_manifests_identical_for_1_and_2_workers(mini_corpus, tmp_path):
    one = prepare_librispeech(mini_corpus, tmp_path / "w1", SPLITS, num_workers=1)
    two = prepare_librispeech(mini_corpus, tmp_path / "w2", SPLITS, num_workers=2)
    for split in SPLITS:
        assert one[split].read_bytes() == two[split].read_bytes(), split
        assert len(one[split].read_text().splitlines()) > 1


def _small_librispeech(root, count=6):
    chapter = root / "LibriSpeech" / "dev-clean" / "7" / "8"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for utt in range(count):
        soundfile.write(chapter / f"7-8-{utt:04d}.flac", rng.uniform(-0.3, 0.3, 8000), 16000)
        lines.append(f"7-8-{utt:04d} HELLO")
    (chapter / "7-8.trans.txt").write_text("\n".join(lines) + "\n")
    return chapter


def test_bad_file_reported_the_same_with_2_workers(tmp_path):
    chapter = _small_librispeech(tmp_path)
    for utt in (3, 5):  # two truncated files: the first one (in order) is reported
        path = chapter / f"7-8-{utt:04d}.flac"
        path.write_bytes(path.read_bytes()[:300])
    errors = {}
    for workers in (1, 2):
        with pytest.raises(LibriSpeechPrepError) as error:
            prepare_librispeech(tmp_path, tmp_path / f"e{workers}", ["dev-clean"],
                                with_phonemes=False, num_workers=workers)  # fmt: skip
        errors[workers] = str(error.value)
    assert errors[1] == errors[2]
    assert "7-8-0003.flac" in errors[2] and "skip_bad_files=True" in errors[2]
    # skip_bad_files: both dropped, the same manifest whatever the number of workers.
    kept = {}
    for workers in (1, 2):
        out = prepare_librispeech(tmp_path, tmp_path / f"s{workers}", ["dev-clean"],
                                  with_phonemes=False, skip_bad_files=True,
                                  num_workers=workers)  # fmt: skip
        kept[workers] = out["dev-clean"].read_bytes()
    assert kept[1] == kept[2]
    ids = [line.split(",")[0] for line in kept[2].decode().splitlines()[1:]]
    assert ids == ["7-8-0000", "7-8-0001", "7-8-0002", "7-8-0004"]


def test_voxceleb_manifests_identical_for_1_and_2_workers(mini_corpus, tmp_path):
    vox1 = mini_corpus / "VoxCeleb1"
    one = prepare_voxceleb(vox1, tmp_path / "w1", dev_fraction=0.2, num_workers=1)
    two = prepare_voxceleb(vox1, tmp_path / "w2", dev_fraction=0.2, num_workers=2)
    for key in ("train", "dev", "test"):
        assert one[key].read_bytes() == two[key].read_bytes(), key
        assert len(one[key].read_text().splitlines()) > 1


FAKE_FFMPEG = """#!/bin/sh
# Stand-in for ffmpeg in the tests: decodes the input with soundfile, writes a 16-bit wav.
while [ $# -gt 1 ]; do [ "$1" = "-i" ] && src="$2"; shift; done
exec "{python}" -c 'import sys, soundfile
data, rate = soundfile.read(sys.argv[1])
soundfile.write(sys.argv[2], data, rate, format="WAV", subtype="PCM_16")' "$src" "$1"
"""


def _vox_trees(tmp_path):
    """A VoxCeleb1 test set and a VoxCeleb2 dev/aac tree of 'm4a' files (wav bytes inside)."""
    vox1, vox2 = tmp_path / "vox1", tmp_path / "vox2"
    for spk in ("id10270", "id10271"):
        path = vox1 / "wav" / spk / "abcdefghijk" / "00001.wav"
        path.parent.mkdir(parents=True)
        soundfile.write(path, np.zeros(16000, dtype="float32"), 16000)
    (vox1 / "veri_test2.txt").write_text(
        "0 id10270/abcdefghijk/00001.wav id10271/abcdefghijk/00001.wav\n"
    )
    rng = np.random.default_rng(0)
    for spk in ("id00012", "id00015"):
        for n in (1, 2):
            m4a = vox2 / "dev" / "aac" / spk / "zzzzzzzzzzz" / f"{n:05d}.m4a"
            m4a.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(m4a, rng.uniform(-0.3, 0.3, 16000), 16000, format="WAV")
    return vox1, vox2


def test_voxceleb2_m4a_conversion_in_the_pool(tmp_path, monkeypatch):
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ffmpeg = bin_dir / "ffmpeg"
    ffmpeg.write_text(FAKE_FFMPEG.format(python=sys.executable))
    ffmpeg.chmod(ffmpeg.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    trains = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        vox1, vox2 = _vox_trees(root)
        out = prepare_voxceleb(vox1, root / "m", vox2_folder=vox2, meta_file=None,
                               dev_fraction=0, convert_m4a=True, num_workers=workers)  # fmt: skip
        assert len(list(vox2.rglob("*.wav"))) == 4 and not list(vox2.rglob("*.tmp"))
        trains[workers] = out["train"].read_text().replace(str(root), "ROOT")
    assert trains[1] == trains[2] and len(trains[2].splitlines()) == 5
    # An m4a ffmpeg cannot convert: named with the fix; left out with skip_bad_files.
    root = tmp_path / "bad"
    vox1, vox2 = _vox_trees(root)
    bad = vox2 / "dev" / "aac" / "id00015" / "zzzzzzzzzzz" / "00001.m4a"
    bad.write_bytes(b"not audio")
    with pytest.raises(RuntimeError, match="ffmpeg could not convert .*00001.m4a") as error:
        prepare_voxceleb(vox1, root / "m", vox2_folder=vox2, meta_file=None, dev_fraction=0,
                         convert_m4a=True, num_workers=2)  # fmt: skip
    assert str(bad) in str(error.value) and "skip_bad_files=True" in str(error.value)
    shutil.rmtree(root / "m", ignore_errors=True)
    out = prepare_voxceleb(vox1, root / "m", vox2_folder=vox2, meta_file=None, dev_fraction=0,
                           convert_m4a=True, skip_bad_files=True, num_workers=2)  # fmt: skip
    assert len(out["train"].read_text().splitlines()) == 4
