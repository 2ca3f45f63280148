"""Prepare VoxCeleb1/VoxCeleb2 manifests and trial lists for speaker-embedding recipes.

Reads the official layouts:

- VoxCeleb1: ``<vox1>/wav/idXXXXX/<video>/NNNNN.wav``, trial lists next to it
  (``veri_test2.txt`` = VoxCeleb1-O cleaned, ``list_test_hard2.txt`` = -H, ``list_test_all2.txt``
  = -E) and ``vox1_meta.csv`` (tab separated, ``Set`` column ``dev``/``test``);
- VoxCeleb2: ``<vox2>/dev/aac/idXXXXX/<video>/NNNNN.m4a`` (or ``.wav`` beside each m4a, or a
  ``dev/wav`` tree). m4a files must be converted to 16 kHz wav first (``convert_m4a=True`` runs
  ffmpeg when it is installed, writing each wav next to its m4a).

The per-file work (the m4a conversion, then the header read and tail decode of every wav) runs
in ``num_workers`` processes (:func:`lasersb.data.parallel.map_files`): VoxCeleb2 dev has 1.1M
files. The manifests are byte-identical for any number of workers.

Writes into ``save_folder`` the SpeechBrain manifests ``train.csv``, ``dev.csv`` (a few
held-out utterances of the training speakers, for validation) and ``test.csv`` (every
utterance of the trial lists), all with columns ``ID,duration,wav,spk_id``, and a copy of each
trial list. With an energy VAD (``vad``, :class:`lasersb.data.vad.EnergyVAD`, as hyperion's
``run_002_compute_evad.sh`` + ``preprocess_audios_for_nnet_train.sh --use-bin-vad true``),
each training file is decoded in full by the workers and ``train.csv``/``dev.csv`` get two
more columns: ``speech_duration`` (seconds of speech) and ``speech_segments`` (the speech
sample ranges, ``"start:end start:end"``, read by :func:`lasersb.data.speakers.speaker_dataset`
with ``speech_only=True``); ``min_duration`` then applies to the speech duration, as hyperion's
``remove_short_audios.sh --min-len 4`` runs after the VAD. The wav files are not rewritten.
Speakers of the VoxCeleb1 test set (``vox1_meta.csv``) and every speaker that appears in a
requested trial list are excluded from training. The preparation is skipped when
an ``options.json`` with the same options already exists (idempotent).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile

from data_prep.cli import PrepareArgumentParser
from lasersb.data.audio import check_decodable
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import BadFile, map_files
from lasersb.data.vad import EnergyVAD, format_segments

logger = logging.getLogger(__name__)

OPTIONS_FILE = "voxceleb_prepare_options.json"
TRIAL_LISTS = {
    "vox1_o": "veri_test2.txt",
    "vox1_h": "list_test_hard2.txt",
    "vox1_e": "list_test_all2.txt",
}
HEADER = ["ID", "duration", "wav", "spk_id"]
VAD_COLUMNS = ["speech_duration", "speech_segments"]


def utterance_id(relative: str) -> str:
    """Manifest ID of a ``idXXXXX/<video>/NNNNN.wav`` path.

    Example
    -------
    >>> utterance_id("id10001/1zcIwhmdeo4/00001.wav")
    'id10001--1zcIwhmdeo4--00001'
    """
    parts = Path(relative).with_suffix("").parts[-3:]
    return "--".join(parts)


def read_vox1_meta(path) -> dict:
    """``{speaker id: set}`` from ``vox1_meta.csv`` (tab separated, ``Set`` = dev/test).

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "vox1_meta.csv"
    >>> _ = p.write_text("VoxCeleb1 ID\\tVGGFace1 ID\\tGender\\tNationality\\tSet\\n"
    ...                  "id10001\\tA.J._Buckley\\tm\\tIreland\\tdev\\n"
    ...                  "id10270\\tEytan\\tm\\tUSA\\ttest\\n")
    >>> read_vox1_meta(p)
    {'id10001': 'dev', 'id10270': 'test'}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Download vox1_meta.csv into the VoxCeleb1 folder (it lists the "
            "test speakers to exclude from training) or pass meta_file=None to rely only on the "
            "trial lists."
        )
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    header = [h.strip() for h in lines[0].split("\t")]
    try:
        id_col = next(i for i, h in enumerate(header) if h.lower().startswith("voxceleb1 id"))
        set_col = next(i for i, h in enumerate(header) if h.lower() == "set")
    except StopIteration as err:
        raise ValueError(
            f"{path}: expected a tab-separated header with 'VoxCeleb1 ID' and 'Set' columns, "
            f"got {header}"
        ) from err
    meta = {}
    for line in lines[1:]:
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) > max(id_col, set_col):
            meta[fields[id_col]] = fields[set_col].lower()
    return meta


def trial_speakers(trial_file) -> tuple[set, set]:
    """Speakers and utterance paths (relative) of a trial list.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("1 id1/a/00001.wav id1/b/00002.wav\\n0 id1/a/00001.wav id2/c/00003.wav\\n")
    >>> spk, utts = trial_speakers(p)
    >>> sorted(spk), len(utts)
    (['id1', 'id2'], 3)
    """
    speakers, utts = set(), set()
    for lineno, line in enumerate(Path(trial_file).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"{trial_file}:{lineno}: expected '<1|0> enroll test', got {line!r}")
        pair = parts[1:] if parts[0] in ("0", "1") else parts[:2]
        for rel in pair:
            utts.add(rel)
            speakers.add(rel.split("/")[0])
    return speakers, utts


def find_vox2_audio(
    vox2_folder: Path,
    convert_m4a: bool = False,
    num_workers: int = 1,
    skip_bad_files: bool = False,
    progress: bool | None = None,
) -> list:
    """Audio files of VoxCeleb2 dev (wav preferred over m4a), converting m4a when asked.

    The conversions run in ``num_workers`` processes; an m4a that ffmpeg cannot convert is an
    error naming it (left out, with a warning, when ``skip_bad_files``).
    """
    roots = [vox2_folder / "dev" / "aac", vox2_folder / "dev" / "wav", vox2_folder / "aac"]
    roots = [r for r in roots if r.is_dir()]
    if not roots:
        raise FileNotFoundError(
            f"No VoxCeleb2 audio under {vox2_folder}: expected dev/aac/idXXXXX/<video>/*.m4a "
            "(or dev/wav/...). Point vox2_folder at the extracted VoxCeleb2 root."
        )
    files, pending = {}, {}
    for root in roots:
        for path in sorted(root.glob("id*/*/*.wav")):
            files[utterance_id(str(path.relative_to(root)))] = path
        for path in sorted(root.glob("id*/*/*.m4a")):
            key = utterance_id(str(path.relative_to(root)))
            if key in files:
                continue
            wav = path.with_suffix(".wav")
            if not convert_m4a:
                raise FileNotFoundError(
                    f"{path} is m4a, which soundfile cannot read. Convert VoxCeleb2 to wav first "
                    f"(e.g. `ffmpeg -i {path} -ac 1 -ar 16000 {wav}` for every file, the wav "
                    "next to each m4a) or pass convert_m4a=True (needs ffmpeg)."
                )
            files[key] = None  # keeps its place in the order; converted below
            pending[key] = (path, wav)
    if pending:
        ffmpeg = _ffmpeg()
        converted = map_files(
            functools.partial(_convert_job, ffmpeg=ffmpeg), list(pending.values()), num_workers,
            stop_at_bad=not skip_bad_files, desc="VoxCeleb2: m4a -> wav", progress=progress,
        )  # fmt: skip
        for key, result in zip(pending, converted):
            if isinstance(result, BadFile):
                if not skip_bad_files:
                    raise RuntimeError(result.message)
                logger.warning("Skipping: %s", result.message)
                del files[key]
            else:
                files[key] = result
    return list(files.values())


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError(
            "convert_m4a=True needs ffmpeg on the PATH (e.g. `apt-get install ffmpeg`)."
        )
    return ffmpeg


def _convert_job(pair, ffmpeg: str):
    """Worker: convert one ``(m4a, wav)`` pair; the wav path, or a :class:`BadFile`."""
    m4a, wav = pair
    try:
        return convert_to_wav(m4a, wav, ffmpeg)
    except subprocess.CalledProcessError as err:
        detail = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        return BadFile(
            "unconvertible",
            f"ffmpeg could not convert {m4a} ({detail[-1] if detail else err}). Re-download "
            "it, or pass skip_bad_files=True to leave it out.",
        )


def convert_to_wav(m4a: Path, wav: Path, ffmpeg: str | None = None) -> Path:
    """Convert one m4a file to 16 kHz mono wav with ffmpeg.

    Written to ``<wav>.tmp`` and renamed, so an interrupted conversion never leaves a partial
    wav that a later run would take for a converted file.
    """
    ffmpeg = ffmpeg or _ffmpeg()
    wav = Path(wav)
    tmp = wav.with_name(wav.name + ".tmp")
    command = [ffmpeg, "-loglevel", "error", "-y", "-i", str(m4a), "-ac", "1", "-ar", "16000"]
    subprocess.run([*command, "-f", "wav", str(tmp)], check=True, capture_output=True)
    tmp.replace(wav)
    return wav


def _probe(path) -> float | BadFile:
    """Worker: the duration (s) of a 16 kHz mono wav that decodes to its end, or a BadFile."""
    path = Path(path)
    try:
        info = soundfile.info(str(path))
        if info.frames == 0:
            raise ValueError("empty file")
        if info.samplerate != 16000 or info.channels != 1:
            raise ValueError(
                f"{info.samplerate} Hz, {info.channels} channel(s); VoxCeleb is 16 kHz mono: "
                "convert it (e.g. `sox in.wav -r 16000 -c 1 out.wav`)"
            )
        check_decodable(path, info.frames)
    except Exception as err:  # noqa: BLE001 - reported with the path
        return BadFile(
            "unreadable",
            f"Cannot read {path} ({err}). Re-extract it, or pass skip_bad_files=True to "
            "leave unreadable files out of the manifests.",
        )
    return info.frames / info.samplerate


def _probe_speech(path, vad: EnergyVAD) -> tuple | BadFile:
    """Worker: ``(duration, speech duration, speech segments)`` of a wav, or a BadFile.

    The whole file is decoded (which also checks that it decodes to its end) and passed to the
    energy VAD.
    """
    path = Path(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
        if len(samples) == 0:
            raise ValueError("empty file")
        if rate != vad.sample_rate or samples.shape[1] != 1:
            raise ValueError(
                f"{rate} Hz, {samples.shape[1]} channel(s); VoxCeleb is {vad.sample_rate} Hz "
                "mono: convert it (e.g. `sox in.wav -r 16000 -c 1 out.wav`)"
            )
        if not np.isfinite(samples).all():
            raise ValueError("non-finite samples")
    except Exception as err:  # noqa: BLE001 - reported with the path
        return BadFile(
            "unreadable",
            f"Cannot read {path} ({err}). Re-extract it, or pass skip_bad_files=True to "
            "leave unreadable files out of the manifests.",
        )
    segments = vad.segments(samples[:, 0])
    speech = int((segments[:, 1] - segments[:, 0]).sum())
    return len(samples) / rate, speech / rate, format_segments(segments)


def _rows(files, skip_bad_files: bool, min_duration: float, num_workers: int = 1,
          progress: bool | None = None, desc: str | None = None,
          vad: EnergyVAD | None = None):  # fmt: skip
    rows, skipped = [], []
    files = [Path(path) for path in files]
    job = _probe if vad is None else functools.partial(_probe_speech, vad=vad)
    results = map_files(job, files, num_workers, stop_at_bad=not skip_bad_files,
                        desc=desc, progress=progress)  # fmt: skip
    for path, result in zip(files, results):
        if isinstance(result, BadFile):
            if not skip_bad_files:
                raise RuntimeError(result.message)
            skipped.append(str(path))
            continue
        duration, speech, segments = (result, None, None) if vad is None else result
        if (duration if speech is None else speech) < min_duration:
            skipped.append(str(path))
            continue
        rel = "/".join(path.parts[-3:])
        row = {
            "ID": utterance_id(rel),
            "duration": f"{duration:.3f}",
            "wav": str(path),
            "spk_id": path.parts[-3],
        }
        if speech is not None:
            row["speech_duration"] = f"{speech:.3f}"
            row["speech_segments"] = segments
        rows.append(row)
    if skipped:
        logger.warning(
            "Skipped %d unreadable or too short%s files, e.g. %s",
            len(skipped),
            "" if vad is None else " (speech duration)",
            skipped[0],
        )
    return rows


def prepare_voxceleb(
    data_folder,
    save_folder,
    vox2_folder=None,
    trial_lists=("vox1_o",),
    meta_file="vox1_meta.csv",
    use_vox1_dev: bool = True,
    dev_fraction: float = 0.02,
    min_duration: float = 0.5,
    convert_m4a: bool = False,
    skip_bad_files: bool = False,
    seed: int = 1234,
    num_workers: int = 1,
    progress: bool | None = None,
    vad: EnergyVAD | None = None,
) -> dict:
    """Write ``train.csv``, ``dev.csv``, ``test.csv`` and the trial lists into ``save_folder``.

    Arguments
    ---------
    data_folder : str or Path
        VoxCeleb1 root (holding ``wav/`` and the trial lists).
    save_folder : str or Path
        Output folder.
    vox2_folder : str or Path, optional
        VoxCeleb2 root (holding ``dev/aac``); its dev speakers are added to training.
    trial_lists : sequence of str
        Keys of :data:`TRIAL_LISTS` (``vox1_o``, ``vox1_h``, ``vox1_e``) or file names in
        ``data_folder``.
    meta_file : str, optional
        ``vox1_meta.csv`` in ``data_folder``; its ``test`` speakers are excluded from training.
    use_vox1_dev : bool
        Train on the VoxCeleb1 speakers not in any trial list / the test set too.
    dev_fraction : float
        Fraction of each training speaker's utterances held out in ``dev.csv`` (at least one
        utterance for speakers with three or more).
    min_duration : float
        Training utterances shorter than this (seconds; of speech when ``vad`` is given) are
        dropped.
    convert_m4a : bool
        Convert VoxCeleb2 m4a files to wav with ffmpeg.
    skip_bad_files : bool
        Leave unreadable files out instead of raising.
    seed : int
        Seed of the dev split.
    num_workers : int
        Processes converting m4a files and reading the audio (0 or 1: this process); the
        manifests do not depend on it.
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.
    vad : lasersb.data.vad.EnergyVAD, optional
        Energy VAD of the training (and dev) utterances: adds the ``speech_duration`` and
        ``speech_segments`` columns and filters on the speech duration. ``None``: no VAD.

    Returns
    -------
    dict
        ``{"train": Path, "dev": Path, "test": Path, "trials": {name: Path}}``.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for spk in ("id10001", "id10002", "id10270", "id10271"):
    ...     for n in range(3):
    ...         p = root / "wav" / spk / "vidAAAAAAAA" / f"{n + 1:05d}.wav"
    ...         p.parent.mkdir(parents=True, exist_ok=True)
    ...         soundfile.write(p, np.zeros(16000, dtype="float32"), 16000)
    >>> _ = (root / "veri_test2.txt").write_text(
    ...     "1 id10270/vidAAAAAAAA/00001.wav id10270/vidAAAAAAAA/00002.wav\\n"
    ...     "0 id10270/vidAAAAAAAA/00001.wav id10271/vidAAAAAAAA/00001.wav\\n")
    >>> out = prepare_voxceleb(root, root / "manifests", meta_file=None, dev_fraction=0.3)
    >>> sorted(out)
    ['dev', 'test', 'train', 'trials']
    >>> count = lambda p: len(p.read_text().splitlines()) - 1
    >>> count(out["train"]), count(out["dev"]), count(out["test"])
    (4, 2, 3)
    """
    data_folder = Path(data_folder)
    save_folder = Path(save_folder)
    wav_root = data_folder / "wav"
    if not wav_root.is_dir():
        raise FileNotFoundError(
            f"{wav_root} not found: data_folder must be the VoxCeleb1 root holding "
            "wav/idXXXXX/<video>/NNNNN.wav (and veri_test2.txt)."
        )
    trial_paths = {}
    for name in trial_lists:
        filename = TRIAL_LISTS.get(name, name)
        path = data_folder / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"Trial list {path} not found. Download {filename} from the VoxCeleb site into "
                f"{data_folder}, or drop '{name}' from trial_lists."
            )
        trial_paths[Path(filename).stem] = path
    options = {
        "data_folder": str(data_folder.resolve()),
        "vox2_folder": str(Path(vox2_folder).resolve()) if vox2_folder else None,
        "trial_lists": [str(p) for p in trial_paths.values()],
        "meta_file": meta_file,
        "use_vox1_dev": bool(use_vox1_dev),
        "dev_fraction": float(dev_fraction),
        "min_duration": float(min_duration),
        "seed": int(seed),
    }
    if vad is not None:  # absent without VAD: manifests prepared before it stay valid
        options["vad"] = vad.options()
    outputs = {
        "train": save_folder / "train.csv",
        "dev": save_folder / "dev.csv",
        "test": save_folder / "test.csv",
        "trials": {name: save_folder / f"{name}.txt" for name in trial_paths},
    }
    options_path = save_folder / OPTIONS_FILE
    done = all(p.is_file() for k, p in outputs.items() if k != "trials") and all(
        p.is_file() for p in outputs["trials"].values()
    )
    if done and options_path.is_file():
        if json.loads(options_path.read_text(encoding="utf-8")) == options:
            logger.info("VoxCeleb manifests already prepared in %s, skipping.", save_folder)
            return outputs
    save_folder.mkdir(parents=True, exist_ok=True)

    excluded, test_utts = set(), set()
    for path in trial_paths.values():
        speakers, utts = trial_speakers(path)
        excluded |= speakers
        test_utts |= utts
    if meta_file:
        meta = read_vox1_meta(data_folder / meta_file)
        excluded |= {spk for spk, split in meta.items() if split == "test"}

    missing = [u for u in sorted(test_utts) if not (wav_root / u).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} utterance(s) of the trial lists are missing under {wav_root}, e.g. "
            f"{missing[0]}. Extract the VoxCeleb1 test set there."
        )
    test_rows = _rows([wav_root / u for u in sorted(test_utts)], skip_bad_files, 0.0,
                      num_workers, progress, "VoxCeleb test")  # fmt: skip

    train_files = []
    if use_vox1_dev:
        train_files += [
            p for p in sorted(wav_root.glob("id*/*/*.wav")) if p.parts[-3] not in excluded
        ]
    if vox2_folder:
        train_files += [
            p
            for p in find_vox2_audio(
                Path(vox2_folder), convert_m4a, num_workers, skip_bad_files, progress
            )
            if p.parts[-3] not in excluded
        ]
    if not train_files:
        raise ValueError(
            f"No training utterance left in {data_folder}"
            + (f" and {vox2_folder}" if vox2_folder else "")
            + " after excluding the test speakers: add vox2_folder or use_vox1_dev=True."
        )
    rows = _rows(train_files, skip_bad_files, min_duration, num_workers, progress,
                 "VoxCeleb train" + (" (energy VAD)" if vad is not None else ""), vad)  # fmt: skip
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row["spk_id"], []).append(row)
    rng = random.Random(seed)
    train_rows, dev_rows = [], []
    for spk in sorted(by_speaker):
        utts = by_speaker[spk]
        n_dev = 0
        if dev_fraction > 0 and len(utts) >= 3:
            n_dev = max(1, int(round(dev_fraction * len(utts))))
        chosen = set(rng.sample(range(len(utts)), n_dev))
        for index, row in enumerate(utts):
            (dev_rows if index in chosen else train_rows).append(row)
    header = HEADER if vad is None else HEADER + VAD_COLUMNS
    write_manifest(outputs["train"], header, train_rows)
    write_manifest(outputs["dev"], header, dev_rows)
    write_manifest(outputs["test"], HEADER, test_rows)
    for name, path in trial_paths.items():
        shutil.copyfile(path, outputs["trials"][name])
    options_path.write_text(json.dumps(options, indent=2), encoding="utf-8")
    logger.info(
        "VoxCeleb: %d training utterances of %d speakers, %d dev, %d test utterances; "
        "%d speakers excluded.",
        len(train_rows),
        len(by_speaker),
        len(dev_rows),
        len(test_rows),
        len(excluded),
    )
    return outputs


def main(argv=None) -> int:
    """Command line: ``python data_prep/voxceleb_prepare.py VOX1 SAVE [--vox2 VOX2]``."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_folder", help="VoxCeleb1 root (wav/, veri_test2.txt)")
    parser.add_argument("save_folder")
    parser.add_argument("--vox2", dest="vox2_folder", default=None, help="VoxCeleb2 root")
    parser.add_argument("--trials", nargs="+", default=["vox1_o"], help="vox1_o vox1_h vox1_e")
    parser.add_argument("--no-vox1-dev", action="store_true", help="train on VoxCeleb2 only")
    parser.add_argument("--meta-file", default="vox1_meta.csv", help="'none' to skip it")
    parser.add_argument("--dev-fraction", type=float, default=0.02)
    parser.add_argument("--min-duration", type=float, default=0.5)
    parser.add_argument("--convert-m4a", action="store_true")
    parser.add_argument("--skip-bad-files", action="store_true")
    parser.add_argument("--num-workers", type=int, default=1, help="conversion/reading processes")
    parser.add_argument(
        "--energy-vad", action="store_true", help="hyperion's energy VAD (conf/vad_16k.yaml)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    outputs = parser.run(
        prepare_voxceleb,
        args.data_folder,
        args.save_folder,
        vox2_folder=args.vox2_folder,
        trial_lists=args.trials,
        meta_file=None if args.meta_file.lower() == "none" else args.meta_file,
        use_vox1_dev=not args.no_vox1_dev,
        dev_fraction=args.dev_fraction,
        min_duration=args.min_duration,
        convert_m4a=args.convert_m4a,
        skip_bad_files=args.skip_bad_files,
        num_workers=args.num_workers,
        vad=EnergyVAD() if args.energy_vad else None,
        errors=(FileNotFoundError, ValueError, RuntimeError),  # the messages of bad input
    )
    print(json.dumps({k: str(v) for k, v in outputs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
