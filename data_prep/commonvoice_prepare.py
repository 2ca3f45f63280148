"""Prepare Mozilla Common Voice (one language) as 16 kHz manifests, with an N-hour training subset.

The adapter-transfer paper's second language is 10 h of French Common Voice. Expected layout
(one extracted language of a Common Voice release)::

    <data_folder>/{train,dev,test}.tsv     (columns include client_id, path, sentence)
    <data_folder>/clips/<path>             (MP3, 48 or 32 kHz, in the releases)

For each split this writes ``<save_folder>/cv-<lang>-<split>.csv`` (``ID,duration,wav,spk_id,
wrd``). The audio is decoded once, resampled to 16 kHz mono and written as FLAC under
``<save_folder>/clips16k/`` (``convert=True``, the default), so training never decodes MP3.
Transcripts are upper-cased; punctuation other than the apostrophe is removed (letters with
accents are kept: train a ``spm_char`` or ``bpe`` tokenizer, not the English A-Z one).
``max_train_hours`` takes a seeded random subset of ``train`` (10 h in the paper).
The per-clip work (decoding, resampling, writing the FLAC) runs in ``num_workers`` processes
(:func:`lasersb.data.parallel.map_files`), in windows of clips when a training budget is set
(so that little more than the budget is converted); the manifests do not depend on the number
of workers.

MP3 decoding: ``soundfile`` reads MP3 when its libsndfile is 1.1.0 or newer (the PyPI wheels
of soundfile >= 0.12 bundle one; check ``soundfile.__libsndfile_version__``). With an older
system libsndfile, convert the clips first (``ffmpeg -i x.mp3 -ar 16000 -ac 1 x.flac``, keeping
the names and changing the ``path`` column) or install a newer soundfile. WAV/FLAC clips (any rate)
are read the same way; the tests use MP3, WAV and FLAC clips.

Command line::

    python -m data_prep.commonvoice_prepare --data_folder /data/cv-corpus/fr \\
        --save_folder results/manifests --language fr --max_train_hours 10
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import BadFile, map_files

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd")
SAMPLE_RATE = 16000
_KEEP = re.compile(r"[^\w' ]+")


class CommonVoicePrepError(ValueError):
    """A problem with the Common Voice folder that the user has to fix."""


def normalise_sentence(sentence: str) -> str:
    """Upper-case a Common Voice sentence and drop punctuation (apostrophes and accents kept).

    Example
    -------
    >>> normalise_sentence("L’été, c'est « super » — non ? Peut-être.")
    "L'ÉTÉ C'EST SUPER NON PEUT ÊTRE"
    """
    text = unicodedata.normalize("NFC", str(sentence))
    text = text.replace("’", "'").replace("‘", "'").replace("`", "'")
    text = text.replace("-", " ").replace("_", " ")
    text = _KEEP.sub(" ", text)
    text = " ".join(word.strip("'") for word in text.split())
    return " ".join(text.upper().split())


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        raise CommonVoicePrepError(
            f"Common Voice split file {path} not found. Point data_folder at one extracted "
            "language (the folder holding train.tsv, dev.tsv, test.tsv and clips/)."
        )
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"path", "sentence"} - set(reader.fieldnames or [])
        if missing:
            raise CommonVoicePrepError(f"{path} lacks the column(s) {sorted(missing)}.")
        return list(reader)


def _decode(path: Path):
    import numpy as np
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - the backend's error is reported with the fix
        hint = ""
        if path.suffix.lower() == ".mp3":
            hint = (
                f" Decoding MP3 needs libsndfile >= 1.1 (soundfile reports "
                f"{getattr(soundfile, '__libsndfile_version__', '?')}): upgrade soundfile or "
                "convert the clips to FLAC/WAV first (see data_prep/commonvoice_prepare.py)."
            )
        raise CommonVoicePrepError(f"Cannot read {path}: {error}.{hint}") from error
    samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        divisor = np.gcd(int(rate), SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // divisor, int(rate) // divisor)
    return samples.astype("float32")


def _clip(job) -> tuple[int, Path] | BadFile:
    """Worker: ``(samples at 16 kHz, manifest path)`` of one clip, converting it when asked."""
    import soundfile

    source, target, min_samples, split = job
    if not source.is_file():
        return BadFile("missing", f"Clip {source} listed in {split}.tsv is missing.")
    if target is not None:
        if target.is_file():
            return soundfile.info(str(target)).frames, target
        try:
            samples = _decode(source)
        except CommonVoicePrepError as error:
            return BadFile("unreadable", str(error))
        if len(samples) >= min_samples:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")  # a killed run leaves no partial FLAC
            soundfile.write(str(tmp), samples, SAMPLE_RATE, format="FLAC")
            tmp.replace(target)
        return len(samples), target
    info = soundfile.info(str(source))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        return BadFile(
            "format",
            f"{source} is {info.samplerate} Hz / {info.channels} channel(s); use "
            "convert=True to resample to 16 kHz mono.",
        )
    return info.frames, source


def prepare_commonvoice(
    data_folder,
    save_folder,
    language: str = "fr",
    splits: Sequence[str] = SPLITS,
    max_train_hours: float | None = 10.0,
    convert: bool = True,
    seed: int = 0,
    min_samples: int = 400,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Write ``<save_folder>/cv-<language>-<split>.csv`` per split.

    Arguments
    ---------
    data_folder : str or os.PathLike
        One extracted Common Voice language (``train.tsv``, ``dev.tsv``, ``test.tsv``,
        ``clips/``).
    save_folder : str or os.PathLike
        Output folder (manifests, options JSON, ``clips16k/`` with ``convert``).
    language : str
        Language code used in the manifest names.
    splits : Sequence[str]
        Which ``<split>.tsv`` files to prepare.
    max_train_hours : float, optional
        Keep a seeded random subset of the training split of at most this many hours.
    convert : bool
        Decode, resample to 16 kHz mono and store FLAC copies; ``False`` keeps the original
        files in the manifest (then they must already be 16 kHz mono WAV/FLAC).
    seed : int
        Seed of the training subset.
    min_samples : int
        Clips shorter than this (after resampling) are skipped with a warning.
    num_workers : int
        Processes converting the clips (0 or 1: this process).
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{"cv-<language>-<split>": csv path}``.
    """
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    options = {
        "data_folder": str(data_folder.resolve()),
        "language": language,
        "max_train_hours": max_train_hours,
        "convert": convert,
        "seed": seed,
        "min_samples": min_samples,
    }
    outputs = {
        f"cv-{language}-{split}": save_folder / f"cv-{language}-{split}.csv" for split in splits
    }
    options_path = save_folder / f"cv-{language}.commonvoice_prepare.json"
    if options_path.is_file() and all(p.is_file() for p in outputs.values()):
        if json.loads(options_path.read_text()).get("options") == options:
            done = json.loads(options_path.read_text()).get("splits", [])
            if set(splits) <= set(done):
                return outputs
    clips = data_folder / "clips"
    if not clips.is_dir():
        raise CommonVoicePrepError(
            f"No clips/ folder in {data_folder}; extract the language fully."
        )
    out_clips = save_folder / "clips16k"
    save_folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        rows = _read_tsv(data_folder / f"{split}.tsv")
        if split == "train" and max_train_hours:
            random.Random(seed).shuffle(rows)
        budget = float(max_train_hours) * 3600 if split == "train" and max_train_hours else None
        entries, total, skipped, full = [], 0.0, 0, False
        # With a budget the clips are converted window by window, stopping once it is reached.
        window = len(rows) if budget is None else max(1024, 256 * max(1, num_workers))
        for start in range(0, len(rows), max(1, window)):
            part = [
                (row, normalise_sentence(row["sentence"])) for row in rows[start : start + window]
            ]
            jobs = [
                (clips / row["path"], out_clips / f"{Path(row['path']).stem}.flac" if convert
                 else None, min_samples, split)
                for row, text in part if text
            ]  # fmt: skip
            results = iter(map_files(_clip, jobs, num_workers, stop_at_bad=True,
                                     desc=f"Common Voice {split}", progress=progress))  # fmt: skip
            for row, text in part:
                source = clips / row["path"]
                if not text:
                    skipped += 1
                    logger.warning("Skipping %s: empty transcript after normalisation", source)
                    continue
                result = next(results)
                if isinstance(result, BadFile):
                    raise CommonVoicePrepError(result.message)
                num_samples, wav = result
                utt_id = Path(row["path"]).stem
                if num_samples < min_samples:
                    skipped += 1
                    logger.warning("Skipping %s: %d samples < %d", source, num_samples, min_samples)
                    continue
                duration = num_samples / SAMPLE_RATE
                if budget is not None and total + duration > budget:
                    full = True
                    break
                total += duration
                speaker = row.get("client_id") or utt_id
                entries.append((utt_id, f"{duration:.6g}", str(Path(wav).resolve()), speaker, text))
            if full:
                break
        if not entries:
            raise CommonVoicePrepError(f"No usable clip in {data_folder / (split + '.tsv')}.")
        entries.sort(key=lambda entry: entry[0])
        csv_path = outputs[f"cv-{language}-{split}"]
        write_manifest(csv_path, CSV_COLUMNS, entries)
        logger.info(
            "Wrote %s (%d clips, %.2f h, %d skipped)", csv_path, len(entries), total / 3600, skipped
        )
    options_path.write_text(json.dumps({"options": options, "splits": list(splits)}, indent=2))
    return outputs


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line entry point (see the module docstring)."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--language", default="fr")
    parser.add_argument("--max_train_hours", type=float, default=10.0)
    parser.add_argument("--no_convert", action="store_true")
    parser.add_argument("--num_workers", type=int, default=1, help="clip-converting processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return parser.run(
        prepare_commonvoice,
        args.data_folder,
        args.save_folder,
        language=args.language,
        max_train_hours=args.max_train_hours or None,
        convert=not args.no_convert,
        num_workers=args.num_workers,
        errors=CommonVoicePrepError,
    )


if __name__ == "__main__":
    main()
