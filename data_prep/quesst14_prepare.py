"""Prepare the QUESST 2014 database (or the embedded mini corpus) for query-by-example STD.

Reads the layout of ``quesst14Database.tgz`` (https://speech.fit.vutbr.cz/files/
quesst14Database.tgz, as s3prl's SUPERB QbE instructions download it)::

    <data_folder>/Audio/quesst14_<NNNNN>.wav              the search documents (8 kHz)
    <data_folder>/dev_queries/quesst14_dev_<NNNN>.wav     dev queries
    <data_folder>/eval_queries/quesst14_eval_<NNNN>.wav   eval queries
    <data_folder>/scoring/language_key_{utterances,dev,eval}.lst   "<path> <language>" lines
    <data_folder>/scoring/groundtruth_quesst14_{dev,eval}/  *.ecf.xml, *.tlist.xml, *.rttm

``language="nnenglish"`` (the default) keeps the non-native English documents and queries
only, as s3prl's ``quesst14_dtw`` does (SUPERB's QbE numbers); ``language=None`` keeps all.
The audio is listed as the corpus has it (8 kHz); the recipe resamples it to the upstream's
rate when it reads it (:func:`lasersb.data.audio.read_audio` with ``resample=True``, polyphase;
s3prl uses sox's ``rate``).

Written to ``save_folder``: ``documents.csv``, ``dev_queries.csv``, ``eval_queries.csv``
(columns ``ID,duration,wav,language,sample_rate``) and ``quesst14_prepare.json`` (options,
ground-truth folders, counts). Idempotent: a second call with the same options and corpus
returns at once. The header reads run in ``num_workers`` processes
(:func:`lasersb.data.parallel.map_files`); the manifests do not depend on their number.

Command line::

    python -m data_prep.quesst14_prepare DATA_FOLDER SAVE_FOLDER [--all-languages]
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import BadFile, map_files

__all__ = ["QUESST14PrepError", "find_quesst14_root", "main", "prepare_quesst14", "read_key"]

logger = logging.getLogger(__name__)

OPTIONS_FILE = "quesst14_prepare.json"
CSV_COLUMNS = ("ID", "duration", "wav", "language", "sample_rate")
SETS = {"documents": ("Audio", "utterances"), "dev": ("dev_queries", "dev"),
        "eval": ("eval_queries", "eval")}  # fmt: skip
_VERSION = 1


class QUESST14PrepError(ValueError):
    """A problem with the QUESST 2014 folder that the user can fix (the message says how)."""


def find_quesst14_root(data_folder) -> Path:
    """The folder holding ``Audio/`` and ``scoring/`` (``data_folder`` or a child of it).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for sub in ("Audio", "scoring"):
    ...     (root / "quesst14Database" / sub).mkdir(parents=True)
    >>> find_quesst14_root(root).name
    'quesst14Database'
    """
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise QUESST14PrepError(
            f"QUESST 2014 folder {data_folder} does not exist: give the extracted "
            "quesst14Database/ folder (holding Audio/, dev_queries/, eval_queries/, scoring/)."
        )
    for folder in [data_folder] + sorted(p for p in data_folder.iterdir() if p.is_dir()):
        if (folder / "Audio").is_dir() and (folder / "scoring").is_dir():
            return folder
    raise QUESST14PrepError(
        f"No Audio/ and scoring/ folders in {data_folder}: give the extracted quesst14Database/ "
        "folder (tar zxf quesst14Database.tgz)."
    )


def read_key(path) -> dict[str, str]:
    """``{audio id: language}`` of a ``language_key_*.lst`` file (``<path> <language>`` lines).

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "language_key_dev.lst"
    >>> _ = p.write_text("quesst14Database/dev_queries/quesst14_dev_0001.wav nnenglish\\n")
    >>> read_key(p)
    {'quesst14_dev_0001': 'nnenglish'}
    """
    path = Path(path)
    if not path.is_file():
        raise QUESST14PrepError(
            f"Language key {path} does not exist: it ships in quesst14Database/scoring/; "
            "re-extract the corpus, or pass language=None (--all-languages) to keep every file."
        )
    key = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise QUESST14PrepError(
                f"{path}, line {number}: expected '<audio path> <language>', got {line!r}."
            )
        key[re.sub(r"\.wav$", "", fields[0].replace("\\", "/").split("/")[-1])] = fields[1]
    return key


def _listed(root: Path, name: str, language: str | None):
    folder_name, key_name = SETS[name]
    folder = root / folder_name
    if not folder.is_dir():
        raise QUESST14PrepError(
            f"{folder} does not exist: the QUESST 2014 database has {folder_name}/ next to "
            "scoring/; re-extract quesst14Database.tgz."
        )
    wavs = {p.stem: p for p in sorted(folder.glob("*.wav"))}
    if not wavs:
        raise QUESST14PrepError(f"No .wav files in {folder}: re-extract quesst14Database.tgz.")
    if language is None:
        key = {}
        keep = sorted(wavs)
    else:
        key = read_key(root / "scoring" / f"language_key_{key_name}.lst")
        keep = [uid for uid in sorted(key) if key[uid] == language]
        missing = [uid for uid in keep if uid not in wavs]
        if missing:
            raise QUESST14PrepError(
                f"{len(missing)} files of language_key_{key_name}.lst are not in {folder} "
                f"(first: {missing[0]}.wav); re-extract quesst14Database.tgz."
            )
        if not keep:
            languages = sorted(set(key.values()))
            raise QUESST14PrepError(
                f"No {language!r} entry in scoring/language_key_{key_name}.lst (it has "
                f"{languages}); pick one of them or pass language=None."
            )
    return [(uid, wavs[uid], key.get(uid, "")) for uid in keep]


def _row(job) -> dict | BadFile:
    """Worker: the manifest row of ``(uid, wav, language)``, or a :class:`BadFile`."""
    import soundfile

    uid, wav, language = job
    try:
        info = soundfile.info(str(wav))
    except RuntimeError as error:
        return BadFile("unreadable", f"Cannot read {wav}: {error}. Re-extract the file.")
    if info.frames == 0:
        return BadFile("empty", f"{wav} is empty: re-extract the file.")
    return {
        "ID": uid,
        "duration": f"{info.frames / info.samplerate:.4f}",
        "wav": str(wav.resolve()),
        "language": language,
        "sample_rate": info.samplerate,
    }


def _fingerprint(root: Path) -> list:
    files = [p for sub in ("Audio", "dev_queries", "eval_queries", "scoring")
             for p in sorted((root / sub).rglob("*")) if p.is_file()]  # fmt: skip
    return [len(files), sum(p.stat().st_size for p in files)]


def prepare_quesst14(
    data_folder,
    save_folder,
    language: str | None = "nnenglish",
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict:
    """Write the manifests of the documents and of the dev and eval queries.

    Arguments
    ---------
    data_folder : str or Path
        The extracted ``quesst14Database/`` folder (or its parent).
    save_folder : str or Path
        Where the CSVs go.
    language : str or None
        Keep only this language of the language keys (``"nnenglish"``: SUPERB's subset);
        ``None`` keeps all files.
    num_workers : int
        Processes reading the audio headers (0 or 1: this process).
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{"documents": Path, "dev": Path, "eval": Path, "groundtruth": {"dev": Path,
        "eval": Path}, "counts": {...}}``.

    Example
    -------
    >>> import tempfile
    >>> from lasersb.data.mini import get_mini_corpus
    >>> save = tempfile.mkdtemp()
    >>> out = prepare_quesst14(get_mini_corpus() / "QUESST14", save)
    >>> out["counts"]
    {'documents': 20, 'dev': 6, 'eval': 6}
    """
    root = find_quesst14_root(data_folder)
    save_folder = Path(save_folder)
    groundtruth = {}
    for split in ("dev", "eval"):
        gt = root / "scoring" / f"groundtruth_quesst14_{split}"
        for pattern in ("*.ecf.xml", "*.tlist.xml", "*.rttm"):
            if len(list(gt.glob(pattern))) != 1:
                raise QUESST14PrepError(
                    f"{gt} must hold exactly one {pattern} file (the official ground truth of "
                    "QUESST 2014); re-extract quesst14Database.tgz."
                )
        groundtruth[split] = gt.resolve()
    options = {
        "version": _VERSION,
        "root": str(root.resolve()),
        "language": language,
        "fingerprint": _fingerprint(root),
    }
    outputs = {
        "documents": save_folder / "documents.csv",
        "dev": save_folder / "dev_queries.csv",
        "eval": save_folder / "eval_queries.csv",
    }
    options_path = save_folder / OPTIONS_FILE
    if options_path.is_file() and all(p.is_file() for p in outputs.values()):
        saved = json.loads(options_path.read_text(encoding="utf-8"))
        if saved.get("options") == options:
            logger.info("QUESST 2014 manifests in %s are up to date.", save_folder)
            return {**outputs, "groundtruth": groundtruth, "counts": saved["counts"]}
    save_folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, path in outputs.items():
        rows = map_files(_row, _listed(root, name, language), num_workers, stop_at_bad=True,
                         desc=f"QUESST 2014 {name}", progress=progress)  # fmt: skip
        bad = [row for row in rows if isinstance(row, BadFile)]
        if bad:
            raise QUESST14PrepError(bad[0].message)
        write_manifest(path, CSV_COLUMNS, rows)
        counts[name] = len(rows)
    record = {
        "options": options,
        "counts": counts,
        "groundtruth": {k: str(v) for k, v in groundtruth.items()},
    }
    options_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("QUESST 2014 manifests written to %s: %s", save_folder, counts)
    return {**outputs, "groundtruth": groundtruth, "counts": counts}


def main(argv=None) -> int:
    """Command line (see the module docstring)."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--language", default="nnenglish")
    parser.add_argument("--all-languages", action="store_true", help="keep every language")
    parser.add_argument("--num-workers", type=int, default=1, help="header-reading processes")
    args = parser.parse_args(argv)
    out = parser.run(
        prepare_quesst14,
        args.data_folder, args.save_folder, None if args.all_languages else args.language,
        num_workers=args.num_workers,
        errors=QUESST14PrepError,
    )  # fmt: skip
    print(json.dumps(out["counts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
