"""Prepare the ADReSS challenge data (or the embedded mini corpus) for Alzheimer's detection.

Reads the ADReSS (Interspeech 2020) layout::

    <data_folder>/train/Full_wave_enhanced_audio/{cc,cd}/<ID>.wav
    <data_folder>/train/Normalised_audio-chunks/{cc,cd}/<ID>-<n>.wav   (optional)
    <data_folder>/train/{cc,cd}_meta_data.txt      "ID   ; age; gender; mmse"
    <data_folder>/test/Full_wave_enhanced_audio/<ID>.wav
    <data_folder>/test/Normalised_audio-chunks/<ID>-<n>.wav            (optional)
    <data_folder>/test/meta_data_test.txt          "ID   ; age; gender; Label; mmse" (1 = cd)

Training labels come from the folder (``cc`` = control, ``cd`` = dementia), test labels from
the labels file (``Label`` column: 1 = ``cd``, 0 = ``cc``; another file can be given with
``test_labels_file``). The metadata columns are found by their header names, separated by
``;``; ``NA`` values are kept empty.

With ``use_chunks=True`` the normalised voice-activity chunks are listed instead of the full
recordings (one row per chunk; ``subject`` names the speaker so that predictions can be
averaged per subject). Audio that is not mono at ``sample_rate`` (the challenge's full waves
are 44.1 kHz) is converted once into ``<save_folder>/audio_<rate>/`` and the CSV points there.
The per-file work (header read, conversion) runs in ``num_workers`` processes
(:func:`lasersb.data.parallel.map_files`); the manifests do not depend on their number.

Written to ``save_folder``: ``train.csv`` and ``test.csv`` with the columns
``ID,duration,wav,spk_id,label,subject,age,gender,mmse`` and ``adress_prepare.json`` (options,
corpus fingerprint, counts). Idempotent.

Command line::

    python -m data_prep.adress_prepare DATA_FOLDER SAVE_FOLDER [--use-chunks]
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import BadFile, map_files

__all__ = ["CLASSES", "ADReSSPrepError", "find_adress_root", "main", "prepare_adress", "read_meta"]

logger = logging.getLogger(__name__)

CLASSES = ("cc", "cd")
OPTIONS_FILE = "adress_prepare.json"
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "label", "subject", "age", "gender", "mmse")
FULL_WAVE = "Full_wave_enhanced_audio"
CHUNKS = "Normalised_audio-chunks"
_VERSION = 1


class ADReSSPrepError(ValueError):
    """A problem with the ADReSS folder that the user can fix (the message says how)."""


def find_adress_root(data_folder) -> Path:
    """Return the folder holding ``train/`` and ``test/`` (``data_folder`` or a child).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "ADReSS" / "train").mkdir(parents=True)
    >>> find_adress_root(root).name
    'ADReSS'
    """
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise ADReSSPrepError(
            f"ADReSS folder {data_folder} does not exist: give the folder holding train/ and test/."
        )
    if (data_folder / "train").is_dir():
        return data_folder
    for child in sorted(data_folder.iterdir()):
        if child.is_dir() and (child / "train").is_dir():
            return child
    raise ADReSSPrepError(
        f"No train/ folder in {data_folder}: give the ADReSS folder holding train/{FULL_WAVE} "
        f"and test/{FULL_WAVE}."
    )


def read_meta(path) -> dict[str, dict]:
    """Parse a ``;``-separated ADReSS metadata file into ``{ID: {column: value}}``.

    Column names are lower-cased; ``NA`` becomes an empty string.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "meta.txt"
    >>> _ = path.write_text("ID   ; age; gender; Label; mmse\\nS160 ; 63 ; male ; 1 ; NA\\n")
    >>> read_meta(path)
    {'S160': {'age': '63', 'gender': 'male', 'label': '1', 'mmse': ''}}
    """
    path = Path(path)
    if not path.is_file():
        raise ADReSSPrepError(f"ADReSS metadata file {path} does not exist.")
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln]
    if not lines:
        raise ADReSSPrepError(f"ADReSS metadata file {path} is empty.")
    header = [h.strip().lower() for h in lines[0].split(";")]
    if header[0] != "id":
        raise ADReSSPrepError(f"{path}: the first column should be ID, got header {lines[0]!r}.")
    meta = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(";")]
        if len(cells) < len(header):
            raise ADReSSPrepError(
                f"{path}, line {number}: {len(cells)} fields for the {len(header)} columns "
                f"{header}: fix the line."
            )
        values = {h: ("" if v.upper() == "NA" else v) for h, v in zip(header[1:], cells[1:])}
        meta[cells[0]] = values
    return meta


def _audio_rows(folder: Path, use_chunks: bool):
    """``[(utterance_id, subject, path)]`` of the wavs in ``folder``."""
    rows = []
    for wav in sorted(folder.glob("*.wav")):
        if wav.name.startswith("."):
            continue
        subject = wav.stem.split("-")[0] if use_chunks else wav.stem
        rows.append((wav.stem, subject, wav))
    return rows


def _checked(wav: Path, sample_rate: int, save_folder: Path, split: str):
    """Worker: ``(path, duration)``, converted to mono ``sample_rate`` when needed; or a BadFile."""
    import soundfile

    try:
        info = soundfile.info(str(wav))
    except RuntimeError as error:
        return BadFile("unreadable", f"Cannot read {wav}: {error}. Re-extract the file.")
    if info.frames == 0:
        return BadFile("empty", f"{wav} is empty: re-extract the file.")
    if info.samplerate == sample_rate and info.channels == 1:
        return wav.resolve(), info.frames / info.samplerate
    target = save_folder / f"audio_{sample_rate}" / split / wav.name
    if not target.is_file():
        import torch
        import torchaudio

        data, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        signal = torch.from_numpy(data.mean(axis=1))
        if rate != sample_rate:
            signal = torchaudio.functional.resample(signal, rate, sample_rate)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + ".tmp.wav")
        soundfile.write(str(tmp), signal.numpy(), sample_rate, subtype="PCM_16")
        tmp.replace(target)
    frames = soundfile.info(str(target)).frames
    return target.resolve(), frames / sample_rate


def _fingerprint(root: Path) -> list:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".wav", ".txt"))
    return [len(files), sum(p.stat().st_size for p in files)]


def _row(uid, subject, label, wav, duration, meta):
    info = meta.get(subject, {})
    return {
        "ID": uid,
        "duration": f"{duration:.4f}",
        "wav": str(wav),
        "spk_id": subject,
        "label": label,
        "subject": subject,
        "age": info.get("age", ""),
        "gender": info.get("gender", ""),
        "mmse": info.get("mmse", ""),
    }


def _test_labels(meta: dict, labels_file: Path) -> dict[str, str]:
    labels = {}
    for subject, info in meta.items():
        value = info.get("label", "")
        if value == "":
            raise ADReSSPrepError(
                f"{labels_file} has no Label for {subject}: give the challenge's test labels "
                "file (ID; age; gender; Label; mmse with Label 1 = cd) as test_labels_file."
            )
        if value not in ("0", "1"):
            raise ADReSSPrepError(f"{labels_file}: Label of {subject} is {value!r}, expected 0/1.")
        labels[subject] = CLASSES[int(value)]
    return labels


def prepare_adress(
    data_folder,
    save_folder,
    use_chunks: bool = False,
    test_labels_file=None,
    sample_rate: int = 16000,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict:
    """Write ``train.csv`` and ``test.csv`` (see the module docstring).

    Arguments
    ---------
    data_folder : str or Path
        The ADReSS folder holding ``train/`` and ``test/`` (or its parent).
    save_folder : str or Path
        Where the CSVs (and converted audio, if any) go.
    use_chunks : bool
        List the ``Normalised_audio-chunks`` instead of the full recordings.
    test_labels_file : str or Path, optional
        Test labels (default ``<data_folder>/test/meta_data_test.txt``).
    sample_rate : int
        Sample rate of the listed audio (other rates are converted).
    num_workers : int
        Processes reading (and converting) the audio (0 or 1: this process).
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{"train": Path, "test": Path, "classes": ["cc", "cd"], "counts": {...}}``.

    Example
    -------
    >>> import tempfile
    >>> from lasersb.data.mini import get_mini_corpus
    >>> save = tempfile.mkdtemp()
    >>> out = prepare_adress(get_mini_corpus() / "ADReSS", save)
    >>> out["counts"]["train"]
    {'cc': 8, 'cd': 8}
    """
    root = find_adress_root(data_folder)
    save_folder = Path(save_folder)
    audio_dir = CHUNKS if use_chunks else FULL_WAVE
    labels_file = (
        Path(test_labels_file) if test_labels_file else root / "test" / "meta_data_test.txt"
    )
    options = {
        "version": _VERSION,
        "root": str(root.resolve()),
        "use_chunks": bool(use_chunks),
        "test_labels_file": str(labels_file.resolve()),
        "sample_rate": int(sample_rate),
        "fingerprint": _fingerprint(root),
    }
    outputs = {"train": save_folder / "train.csv", "test": save_folder / "test.csv"}
    options_path = save_folder / OPTIONS_FILE
    if options_path.is_file() and all(p.is_file() for p in outputs.values()):
        saved = json.loads(options_path.read_text(encoding="utf-8"))
        if saved.get("options") == options:
            logger.info("ADReSS manifests in %s are up to date.", save_folder)
            return {**outputs, "classes": list(CLASSES), "counts": saved["counts"]}
    save_folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": {c: 0 for c in CLASSES}, "test": {c: 0 for c in CLASSES}}

    def checked_all(entries, split, desc):
        check = functools.partial(_checked, sample_rate=sample_rate, save_folder=save_folder,
                                  split=split)  # fmt: skip
        wavs = [wav for _, _, wav in entries]
        return map_files(check, wavs, num_workers, stop_at_bad=True, desc=desc,
                         progress=progress)  # fmt: skip

    train_rows = []
    for label in CLASSES:
        folder = root / "train" / audio_dir / label
        if not folder.is_dir():
            raise ADReSSPrepError(
                f"{folder} does not exist: the ADReSS training audio should be in "
                f"train/{audio_dir}/{{cc,cd}}/"
                + (" (or prepare the full waves with use_chunks=False)" if use_chunks else "")
            )
        meta = read_meta(root / "train" / f"{label}_meta_data.txt")
        entries = _audio_rows(folder, use_chunks)
        if not entries:
            raise ADReSSPrepError(f"No .wav file in {folder}.")
        results = checked_all(entries, "train", f"ADReSS train/{label}")
        for (uid, subject, wav), result in zip(entries, results):
            if subject not in meta:
                logger.warning("%s: subject %s not in %s_meta_data.txt", wav, subject, label)
            if isinstance(result, BadFile):
                raise ADReSSPrepError(result.message)
            path, duration = result
            train_rows.append(_row(uid, subject, label, path, duration, meta))
            counts["train"][label] += 1

    test_folder = root / "test" / audio_dir
    if not test_folder.is_dir():
        raise ADReSSPrepError(f"{test_folder} does not exist: the test audio should be there.")
    test_meta = read_meta(labels_file)
    test_labels = _test_labels(test_meta, labels_file)
    test_rows = []
    entries = _audio_rows(test_folder, use_chunks)
    for _, subject, wav in entries:  # labels first: a missing one fails before any conversion
        if subject not in test_labels:
            raise ADReSSPrepError(
                f"{wav}: subject {subject} has no label in {labels_file}; give the complete "
                "test labels file as test_labels_file."
            )
    for (uid, subject, _), result in zip(entries, checked_all(entries, "test", "ADReSS test")):
        if isinstance(result, BadFile):
            raise ADReSSPrepError(result.message)
        path, duration = result
        test_rows.append(_row(uid, subject, test_labels[subject], path, duration, test_meta))
        counts["test"][test_labels[subject]] += 1
    if not test_rows:
        raise ADReSSPrepError(f"No .wav file in {test_folder}.")
    write_manifest(outputs["train"], CSV_COLUMNS, train_rows)
    write_manifest(outputs["test"], CSV_COLUMNS, test_rows)
    options_path.write_text(
        json.dumps({"options": options, "counts": counts}, indent=2), encoding="utf-8"
    )
    logger.info("ADReSS: %s in %s", counts, save_folder)
    return {**outputs, "classes": list(CLASSES), "counts": counts}


def main(argv=None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_folder", help="the ADReSS folder holding train/ and test/")
    parser.add_argument("save_folder", help="where the CSV manifests go")
    parser.add_argument("--use-chunks", action="store_true", help="use Normalised_audio-chunks")
    parser.add_argument("--test-labels-file", default=None)
    parser.add_argument("--num-workers", type=int, default=1, help="audio reading processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = parser.run(
        prepare_adress,
        args.data_folder, args.save_folder, args.use_chunks, args.test_labels_file,
        num_workers=args.num_workers,
        errors=ADReSSPrepError,
    )  # fmt: skip
    print(json.dumps(result["counts"]))


if __name__ == "__main__":
    main()
