"""Prepare IEMOCAP (or the embedded mini corpus, same layout) for 4-class emotion recognition.

Reads the real IEMOCAP release layout::

    <data_folder>/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav
    <data_folder>/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt

where each utterance's consensus label is the line
``[START - END]<TAB><utterance><TAB><emotion><TAB>[V, A, D]`` of its dialog's evaluation file
(the evaluators' ``C-E1:``/``A-E1:`` lines are ignored). ``data_folder`` is any folder holding
``Session1``..``Session5`` (``IEMOCAP_full_release`` or the mini corpus's ``IEMOCAP``), or its
parent.

The standard 4-class setup keeps neutral (``neu``), happiness (``hap``, with excitement
``exc`` merged into it unless ``merge_excited=False``), anger (``ang``) and sadness (``sad``);
the other labels (frustration, surprise, fear, disgust, other, ``xxx`` = no agreement) are
dropped. Written to ``save_folder``:

- ``session{1..5}.csv``: the kept utterances of each session, columns
  ``ID,duration,wav,spk_id,label,session,dialog`` (``spk_id`` = session + the speaker's gender,
  e.g. ``Ses01F``: each session has one female and one male actor);
- ``fold{k}_train.csv`` / ``fold{k}_test.csv``: leave-one-session-out cross-validation, fold
  ``k`` tests on session ``k`` and trains on the four others;
- ``iemocap_prepare.json``: the options, a fingerprint of the corpus, and label counts.

Idempotent: a second call with the same options on the same corpus returns at once. The
per-file checks (header, tail decode) run in ``num_workers`` processes
(:func:`lasersb.data.parallel.map_files`); the manifests do not depend on their number.

Command line::

    python -m data_prep.iemocap_prepare DATA_FOLDER SAVE_FOLDER [--no-merge-excited]
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.audio import AudioError, check_decodable
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import BadFile, map_files

__all__ = [
    "EMOTIONS",
    "IEMOCAPPrepError",
    "find_sessions_root",
    "main",
    "parse_emo_evaluation",
    "prepare_iemocap",
]

logger = logging.getLogger(__name__)

EMOTIONS = ("neu", "hap", "ang", "sad")
SESSIONS = (1, 2, 3, 4, 5)
OPTIONS_FILE = "iemocap_prepare.json"
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "label", "session", "dialog")
_VERSION = 1
_LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>\S+)\s+(?P<emo>\S+)\s+\["
)


class IEMOCAPPrepError(ValueError):
    """A problem with the IEMOCAP folder that the user can fix (the message says how)."""


def find_sessions_root(data_folder) -> Path:
    """Return the folder holding ``Session1``..``Session5`` (``data_folder`` or a child of it).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "IEMOCAP_full_release" / "Session1").mkdir(parents=True)
    >>> find_sessions_root(root).name
    'IEMOCAP_full_release'
    """
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise IEMOCAPPrepError(
            f"IEMOCAP folder {data_folder} does not exist: give the IEMOCAP_full_release folder "
            "(the one holding Session1..Session5)."
        )
    if any((data_folder / f"Session{s}").is_dir() for s in SESSIONS):
        return data_folder
    for name in ("IEMOCAP_full_release", "IEMOCAP"):
        if any((data_folder / name / f"Session{s}").is_dir() for s in SESSIONS):
            return data_folder / name
    raise IEMOCAPPrepError(
        f"No Session1..Session5 folder in {data_folder}: give the IEMOCAP_full_release folder "
        "(the one holding Session1..Session5)."
    )


def parse_emo_evaluation(path) -> dict[str, str]:
    """``{utterance: emotion}`` from one ``dialog/EmoEvaluation/<dialog>.txt`` file.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "Ses01F_impro01.txt"
    >>> _ = path.write_text(
    ...     "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\\n\\n"
    ...     "[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5000, 2.5000, 2.5000]\\n"
    ...     "C-E1:\\tNeutral;\\t()\\n")
    >>> parse_emo_evaluation(path)
    {'Ses01F_impro01_F000': 'neu'}
    """
    labels = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _LABEL_LINE.match(line.strip())
            if match:
                labels[match.group("utt")] = match.group("emo").lower()
    return labels


def _speaker(utterance: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M`` (the speaking actor, not the dialog's lead)."""
    session = utterance[:5]
    gender = utterance.rsplit("_", 1)[-1][:1].upper()
    if gender not in ("F", "M"):
        gender = utterance[5:6].upper()
    return session + gender


def _fingerprint(root: Path, sessions) -> dict:
    info = {}
    for session in sessions:
        folder = root / f"Session{session}"
        wavs = [p for p in (folder / "sentences" / "wav").glob("*/*.wav")]
        evals = list((folder / "dialog" / "EmoEvaluation").glob("*.txt"))
        info[str(session)] = [
            len(wavs),
            sum(p.stat().st_size for p in wavs),
            len(evals),
            sum(p.stat().st_size for p in evals),
        ]
    return info


def _outputs(save_folder: Path, sessions) -> dict:
    return {
        "sessions": {s: save_folder / f"session{s}.csv" for s in sessions},
        "folds": {
            s: {
                "train": save_folder / f"fold{s}_train.csv",
                "test": save_folder / f"fold{s}_test.csv",
            }
            for s in sessions
        },
    }


def _check_wav(job) -> tuple[int, int] | BadFile:
    """Worker: ``(frames, sample rate)`` of a labelled utterance's wav, or a :class:`BadFile`."""
    import soundfile

    wav, eval_file, utterance, sample_rate = job
    try:
        if not wav.is_file():
            raise IEMOCAPPrepError(
                f"{eval_file} labels {utterance} but {wav} does not exist: restore the "
                "file, or pass skip_bad_files=True to drop it."
            )
        info = soundfile.info(str(wav))
        if info.samplerate != sample_rate or info.frames == 0:
            raise IEMOCAPPrepError(
                f"{wav}: {info.frames} samples at {info.samplerate} Hz, expected a "
                f"non-empty {sample_rate} Hz file (IEMOCAP is 16 kHz): re-extract it, or "
                "pass skip_bad_files=True to drop it."
            )
        check_decodable(wav, info.frames)  # truncated files, NaN in float WAVs
    except (IEMOCAPPrepError, AudioError, RuntimeError) as error:
        return BadFile("unreadable", str(error))
    return info.frames, info.samplerate


def _session_rows(root, session, keep, merge, sample_rate, skip_bad_files, stats,
                  num_workers=1, progress=None):  # fmt: skip
    folder = root / f"Session{session}"
    eval_dir = folder / "dialog" / "EmoEvaluation"
    wav_dir = folder / "sentences" / "wav"
    for needed in (eval_dir, wav_dir):
        if not needed.is_dir():
            raise IEMOCAPPrepError(
                f"{needed} does not exist: {folder} is not a complete IEMOCAP session "
                "(expected sentences/wav/<dialog>/ and dialog/EmoEvaluation/<dialog>.txt)."
            )
    labelled = []
    for eval_file in sorted(eval_dir.glob("*.txt")):
        if eval_file.name.startswith("."):
            continue  # macOS resource forks shipped in some copies
        dialog = eval_file.stem
        for utterance, emotion in sorted(parse_emo_evaluation(eval_file).items()):
            stats["raw"][emotion] += 1
            if merge and emotion == "exc":
                emotion = "hap"
            if emotion not in keep:
                continue
            wav = wav_dir / dialog / f"{utterance}.wav"
            labelled.append((utterance, emotion, dialog, (wav, eval_file, utterance, sample_rate)))
    checks = map_files(_check_wav, [item[-1] for item in labelled], num_workers,
                       stop_at_bad=not skip_bad_files, desc=f"IEMOCAP Session{session}",
                       progress=progress)  # fmt: skip
    rows = []
    for (utterance, emotion, dialog, (wav, *_)), checked in zip(labelled, checks):
        if isinstance(checked, BadFile):
            if not skip_bad_files:
                raise IEMOCAPPrepError(checked.message)
            logger.warning("Skipping %s: %s", utterance, checked.message)
            stats["skipped"] += 1
            continue
        frames, rate = checked
        rows.append(
            {
                "ID": utterance,
                "duration": f"{frames / rate:.4f}",
                "wav": str(wav.resolve()),
                "spk_id": _speaker(utterance),
                "label": emotion,
                "session": session,
                "dialog": dialog,
            }
        )
    if not rows:
        raise IEMOCAPPrepError(
            f"No utterance of the classes {sorted(keep)} found in {folder}: check the "
            "EmoEvaluation files (lines '[start - end]<TAB>utterance<TAB>emotion<TAB>[V, A, D]')."
        )
    return rows


def prepare_iemocap(
    data_folder,
    save_folder,
    emotions=EMOTIONS,
    merge_excited: bool = True,
    sessions=SESSIONS,
    sample_rate: int = 16000,
    skip_bad_files: bool = False,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict:
    """Write the per-session and leave-one-session-out manifests (see the module docstring).

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``Session1``..``Session5`` (or its parent).
    save_folder : str or Path
        Where the CSVs go.
    emotions : sequence of str
        Classes kept (IEMOCAP codes); default the 4-class setup.
    merge_excited : bool
        Relabel excitement (``exc``) as happiness (``hap``), the usual 4-class setup.
    sessions : sequence of int
        Sessions to use (all five by default).
    sample_rate : int
        Expected sample rate.
    skip_bad_files : bool
        Drop labelled utterances whose audio is missing or unreadable instead of failing.
    num_workers : int
        Processes checking the audio files (0 or 1: this process).
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{"sessions": {k: Path}, "folds": {k: {"train": Path, "test": Path}}, "classes": [...],
        "counts": {label: n}}``.

    Example
    -------
    >>> import tempfile
    >>> from lasersb.data.mini import get_mini_corpus
    >>> save = tempfile.mkdtemp()
    >>> out = prepare_iemocap(get_mini_corpus() / "IEMOCAP", save)
    >>> sorted(out["folds"])
    [1, 2, 3, 4, 5]
    """
    root = find_sessions_root(data_folder)
    save_folder = Path(save_folder)
    sessions = tuple(int(s) for s in sessions)
    keep = tuple(str(e) for e in emotions)
    missing = [s for s in sessions if not (root / f"Session{s}").is_dir()]
    if missing:
        raise IEMOCAPPrepError(
            f"Session(s) {missing} missing in {root}: give the complete IEMOCAP release or pass "
            "the sessions you have (sessions=[...])."
        )
    options = {
        "version": _VERSION,
        "root": str(root.resolve()),
        "emotions": list(keep),
        "merge_excited": bool(merge_excited),
        "sessions": list(sessions),
        "sample_rate": int(sample_rate),
        "skip_bad_files": bool(skip_bad_files),
        "fingerprint": _fingerprint(root, sessions),
    }
    outputs = _outputs(save_folder, sessions)
    options_path = save_folder / OPTIONS_FILE
    if options_path.is_file():
        saved = json.loads(options_path.read_text(encoding="utf-8"))
        paths = list(outputs["sessions"].values())
        paths += [p for fold in outputs["folds"].values() for p in fold.values()]
        if saved.get("options") == options and all(p.is_file() for p in paths):
            logger.info("IEMOCAP manifests in %s are up to date.", save_folder)
            return {**outputs, "classes": list(keep), "counts": saved["counts"]}
    save_folder.mkdir(parents=True, exist_ok=True)
    stats = {"raw": Counter(), "skipped": 0}
    per_session = {
        s: _session_rows(
            root, s, keep, merge_excited, sample_rate, skip_bad_files, stats, num_workers, progress
        )
        for s in sessions
    }
    for session, rows in per_session.items():
        write_manifest(outputs["sessions"][session], CSV_COLUMNS, rows)
    for test_session in sessions:
        train_rows = [r for s in sessions if s != test_session for r in per_session[s]]
        write_manifest(outputs["folds"][test_session]["train"], CSV_COLUMNS, train_rows)
        write_manifest(
            outputs["folds"][test_session]["test"], CSV_COLUMNS, per_session[test_session]
        )
    counts = Counter(r["label"] for rows in per_session.values() for r in rows)
    record = {
        "options": options,
        "counts": {e: counts.get(e, 0) for e in keep},
        "raw_label_counts": dict(sorted(stats["raw"].items())),
        "skipped_files": stats["skipped"],
    }
    options_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    logger.info("IEMOCAP: %d utterances %s in %s", sum(counts.values()), dict(counts), save_folder)
    return {**outputs, "classes": list(keep), "counts": record["counts"]}


def main(argv=None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_folder", help="folder holding Session1..Session5")
    parser.add_argument("save_folder", help="where the CSV manifests go")
    parser.add_argument("--no-merge-excited", action="store_true", help="drop exc, keep hap only")
    parser.add_argument("--skip-bad-files", action="store_true")
    parser.add_argument("--num-workers", type=int, default=1, help="audio-checking processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = parser.run(
        prepare_iemocap,
        args.data_folder,
        args.save_folder,
        merge_excited=not args.no_merge_excited,
        skip_bad_files=args.skip_bad_files,
        num_workers=args.num_workers,
        errors=IEMOCAPPrepError,
    )
    print(json.dumps(result["counts"]))


if __name__ == "__main__":
    main()
