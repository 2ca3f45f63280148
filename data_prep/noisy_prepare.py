"""Deterministic noisy LibriSpeech from LibriSpeech + DEMAND (or any folder of noise types).

Defaults follow the authors' noise-robust SSFT release (nr-ssft): each utterance gets one
noise type, drawn uniformly, a random crop of that type's recording (``ch01.wav``), and an SNR
drawn from {20, 10, 5} dB. These per-utterance draws are that release's settings; the SE paper
(Meghanani & Hain, ICASSP 2026, recipes/LibriSpeech-DEMAND/se) uses the DEMAND 'seen' types and
those SNRs, but its numbers do not come with this preparation code.

- ``seen`` condition: the 12 DEMAND types DKITCHEN DWASHING DLIVING TMETRO TBUS TCAR OOFFICE
  OHALLWAY OMEETING PSTATION PCAFETER PRESTO, for every split (train / dev / test);
- ``unseen`` condition: NFIELD NRIVER NPARK STRAFFIC SPSQUARE SCAFE, for the test split(s) only.

Every draw comes from a generator seeded with ``(seed, condition, utterance id)``, so a
manifest does not depend on the order, number or subset of utterances prepared.

Output (``save_folder``)::

    clean/<split>.csv                          clean LibriSpeech manifests (librispeech_prepare)
    <condition>/<split>.csv                    ID,duration,wav,clean_wav,noise_wav,noise_type,
                                               noise_start,snr,gain,spk_id,wrd
    <condition>/LibriSpeech/<split>/<spk>/<chapter>/<id>.flac   the mixtures (write_mixtures)
    <condition>/LibriSpeech/<split>/<spk>/<chapter>/*.trans.txt copied transcripts
    noisy_prepare.json                         options + fingerprint (idempotence)

The mixture folders have the LibriSpeech layout, so any LibriSpeech recipe (e.g. the SUPERB
PR/ASR recipes) runs on noisy speech with ``--data_folder=<save_folder>/<condition>``.
``wav`` is the mixture (16-bit FLAC); ``gain`` (<= 1) is the scale applied to clean and noise
alike so that the mixture does not clip: the SE target is ``gain * clean``. With
``write_mixtures=False`` no audio is written (no ``wav`` column) and :func:`noisy_dataset` mixes
on the fly, sample-for-sample the same mixture (up to the 16-bit quantisation of the files).

Command line::

    python -m data_prep.noisy_prepare LIBRISPEECH DEMAND SAVE_FOLDER [--on_the_fly]
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest
from lasersb.data.parallel import map_files

__all__ = [
    "DEFAULT_SNRS",
    "SEEN_NOISE_TYPES",
    "UNSEEN_NOISE_TYPES",
    "NoisyPrepError",
    "main",
    "mix_noise_segment",
    "noisy_dataset",
    "prepare_noisy_librispeech",
]

logger = logging.getLogger(__name__)

SEEN_NOISE_TYPES = (
    "DKITCHEN", "DWASHING", "DLIVING", "TMETRO", "TBUS", "TCAR",
    "OOFFICE", "OHALLWAY", "OMEETING", "PSTATION", "PCAFETER", "PRESTO",
)  # fmt: skip
UNSEEN_NOISE_TYPES = ("NFIELD", "NRIVER", "NPARK", "STRAFFIC", "SPSQUARE", "SCAFE")
DEFAULT_SNRS = (20, 10, 5)
DEFAULT_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
OPTIONS_FILE = "noisy_prepare.json"
COLUMNS = ("ID", "duration", "wav", "clean_wav", "noise_wav", "noise_type", "noise_start", "snr",
           "gain", "spk_id", "wrd")  # fmt: skip
_VERSION = 1
_PEAK = 0.99


class NoisyPrepError(ValueError):
    """A user-fixable problem (missing noise type or file, bad sample rate); names the fix."""


# --------------------------------------------------------------------------- mixing
def mix_noise_segment(clean: torch.Tensor, noise: torch.Tensor, snr_db: float):
    """Mix a noise segment into a clean utterance at ``snr_db`` and avoid clipping.

    The noise is tiled when shorter than the utterance; powers are those of the whole
    utterance and the whole segment (:func:`lasersb.augment.mix_at_snr`). When the mixture's
    peak exceeds 0.99 both parts are scaled by ``gain = 0.99 / peak``.

    Parameters
    ----------
    clean : torch.Tensor
        ``(T,)`` clean waveform.
    noise : torch.Tensor
        ``(N,)`` noise segment (its first ``T`` samples are used).
    snr_db : float
        Target SNR in dB.

    Returns
    -------
    noisy : torch.Tensor
        ``(T,)`` mixture, ``gain * (clean + g * noise)``.
    gain : float
        The anti-clipping scale (1.0 when none was needed).

    Example
    -------
    >>> clean, noise = 0.1 * torch.randn(8000), torch.randn(4000)
    >>> noisy, gain = mix_noise_segment(clean, noise, 10.0)
    >>> snr = 10 * torch.log10(clean.pow(2).sum() / (noisy / gain - clean).pow(2).sum())
    >>> round(float(snr), 3), gain
    (10.0, 1.0)
    """
    from lasersb.augment import mix_at_snr

    mixed = mix_at_snr(clean[None], noise[None], float(snr_db))[0]
    peak = float(mixed.abs().max()) if mixed.numel() else 0.0
    gain = _PEAK / peak if peak > _PEAK else 1.0
    return mixed * gain, gain


def _read_segment(path, start: int, frames: int) -> torch.Tensor:
    data, _ = sf.read(str(path), start=int(start), frames=int(frames), dtype="float32",
                      always_2d=True)  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(data[:, 0]))


def _read_pair(row: dict, sample_rate: int):
    """The clean utterance of a manifest row and its noise segment (same length)."""
    from lasersb.data.audio import read_audio

    clean = read_audio(row["clean_wav"], sample_rate=sample_rate)
    noise = _read_segment(row["noise_wav"], int(row["noise_start"]), clean.shape[0])
    return clean, noise


def _mixture(row: dict, sample_rate: int):
    """``(gain * clean, noisy)`` of a manifest row, mixed on the fly."""
    clean, noise = _read_pair(row, sample_rate)
    noisy, gain = mix_noise_segment(clean, noise, float(row["snr"]))
    return clean * gain, noisy


# --------------------------------------------------------------------------- noise files
def _noise_files(noise_folder: Path, types: Sequence[str], noise_file: str) -> dict:
    files = {}
    for noise_type in types:
        folder = noise_folder / noise_type
        matches = sorted(folder.glob(noise_file)) if folder.is_dir() else []
        if not matches:
            raise NoisyPrepError(
                f"No noise file {noise_file!r} in {folder}. Point noise_folder to the DEMAND "
                f"root (holding <TYPE>/{noise_file}), set noise_file to the file name/pattern of "
                "your recordings, or change the noise type lists (seen_types/unseen_types)."
            )
        files[noise_type] = matches
    return files


def _check_rate(path: Path, sample_rate: int) -> int:
    info = sf.info(str(path))
    if info.samplerate != sample_rate:
        raise NoisyPrepError(
            f"{path} is sampled at {info.samplerate} Hz, expected {sample_rate} Hz. Use the "
            "16 kHz DEMAND release (*_16k.zip) or resample the noise files."
        )
    return int(info.frames)


# --------------------------------------------------------------------------- preparation
def _draw(rng: random.Random, types, files, lengths, n_samples, snrs):
    noise_type = rng.choice(list(types))
    path = rng.choice(files[noise_type])
    length = lengths[path]
    start = rng.randrange(0, length - n_samples + 1) if length > n_samples else 0
    return noise_type, path, start, float(rng.choice(list(snrs)))


def _fingerprint(paths) -> list:
    return [[str(p), Path(p).stat().st_size] for p in sorted(paths)]


def _copy_transcripts(corpus: Path, split: str, out_root: Path) -> None:
    for trans in sorted((corpus / split).rglob("*.trans.txt")):
        target = out_root / "LibriSpeech" / trans.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trans, target)
    for extra in (corpus / "SPEAKERS.TXT", corpus.parent / "librispeech-lexicon.txt"):
        target = (out_root / "LibriSpeech" / extra.name) if extra.parent == corpus else (
            out_root / extra.name)  # fmt: skip
        if extra.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(extra, target)


def _num_frames(path) -> int:
    """Worker: frames of a (clean, already checked) file, from its header."""
    return int(sf.info(str(path)).frames)


def _process_one(job) -> float:
    """Mix one row, write the mixture when a target is given; return the anti-clipping gain."""
    row, target, sample_rate = job
    clean, noise = _read_pair(row, sample_rate)
    noisy, gain = mix_noise_segment(clean, noise, float(row["snr"]))
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + ".tmp.flac")
        sf.write(str(tmp), noisy.numpy(), sample_rate, subtype="PCM_16")
        tmp.replace(target)
    return gain


def prepare_noisy_librispeech(
    data_folder,
    noise_folder,
    save_folder,
    splits: Sequence[str] = DEFAULT_SPLITS,
    unseen_splits: Sequence[str] = ("test-clean",),
    seen_types: Sequence[str] = SEEN_NOISE_TYPES,
    unseen_types: Sequence[str] = UNSEEN_NOISE_TYPES,
    snrs: Sequence[float] = DEFAULT_SNRS,
    noise_file: str = "ch01.wav",
    write_mixtures: bool = True,
    seed: int = 0,
    sample_rate: int = 16000,
    skip_bad_files: bool = False,
    num_workers: int = 0,
) -> dict[str, dict[str, Path]]:
    """Prepare noisy LibriSpeech manifests (and mixtures) for SE training and evaluation.

    Arguments
    ---------
    data_folder : str or os.PathLike
        LibriSpeech root (or its parent, e.g. the mini corpus root).
    noise_folder : str or os.PathLike
        Folder of noise types, ``<noise_folder>/<TYPE>/<noise_file>`` (DEMAND layout).
    save_folder : str or os.PathLike
        Output folder (see the module docstring).
    splits : Sequence[str]
        LibriSpeech splits mixed with the seen noise types.
    unseen_splits : Sequence[str]
        Splits (a subset of ``splits`` or others) also mixed with the unseen types.
    seen_types, unseen_types : Sequence[str]
        Noise type folder names of the two conditions (``unseen_types`` may be empty).
    snrs : Sequence[float]
        SNRs (dB) drawn uniformly per utterance.
    noise_file : str
        File name or glob pattern of the recordings inside each type folder (one is drawn).
    write_mixtures : bool
        Write the mixtures as FLAC (else: manifests only, mixed on the fly by
        :func:`noisy_dataset`).
    seed : int
        Seed of the draws.
    sample_rate : int
        Expected sample rate of speech and noise.
    skip_bad_files : bool
        Passed to :func:`data_prep.librispeech_prepare.prepare_librispeech`.
    num_workers : int
        Processes preparing the clean manifests, reading the headers and writing the mixtures
        (0 or 1: this process; :func:`lasersb.data.parallel.map_files`). The manifests and
        mixtures do not depend on it.

    Returns
    -------
    dict
        ``{"seen": {split: csv}, "unseen": {split: csv}}`` (``unseen`` empty when no unseen
        types are given).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> root = Path(tempfile.mkdtemp())
    >>> chapter = root / "LibriSpeech" / "test-clean" / "1" / "2"
    >>> chapter.mkdir(parents=True)
    >>> sf.write(chapter / "1-2-0000.flac", 0.1 * np.random.randn(8000), 16000)
    >>> _ = (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO\\n")
    >>> for kind in ("AAA", "BBB"):
    ...     (root / "noise" / kind).mkdir(parents=True)
    ...     sf.write(root / "noise" / kind / "ch01.wav", 0.1 * np.random.randn(16000), 16000)
    >>> out = prepare_noisy_librispeech(root, root / "noise", root / "prep", ["test-clean"],
    ...                                 seen_types=["AAA"], unseen_types=["BBB"])
    >>> sorted(out), sorted(out["unseen"])
    (['seen', 'unseen'], ['test-clean'])
    >>> mixture = root / "prep/seen/LibriSpeech/test-clean/1/2/1-2-0000.flac"
    >>> mixture.is_file()
    True
    """
    from data_prep.librispeech_prepare import prepare_librispeech

    save_folder = Path(save_folder).expanduser()
    noise_folder = Path(noise_folder).expanduser().resolve()
    splits = [splits] if isinstance(splits, str) else list(splits)
    unseen_splits = [] if not unseen_types else list(unseen_splits)
    if not list(snrs):
        raise ValueError("snrs is empty: give at least one SNR in dB, e.g. [20, 10, 5].")
    if not list(seen_types):
        raise ValueError("seen_types is empty: name at least one noise type folder.")
    conditions = {"seen": (list(seen_types), splits), "unseen": (list(unseen_types), unseen_splits)}
    all_splits = list(dict.fromkeys(splits + unseen_splits))
    clean = prepare_librispeech(data_folder, save_folder / "clean", splits=all_splits,
                                with_phonemes=False, skip_bad_files=skip_bad_files,
                                num_workers=num_workers)  # fmt: skip
    files = _noise_files(noise_folder, list(seen_types) + list(unseen_types), noise_file)
    lengths = {p: _check_rate(p, sample_rate) for paths in files.values() for p in paths}
    options = {
        "version": _VERSION,
        "conditions": {k: [t, s] for k, (t, s) in conditions.items()},
        "snrs": [float(v) for v in snrs],
        "noise_file": noise_file,
        "write_mixtures": bool(write_mixtures),
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "clean": _fingerprint(clean.values()),
        "noise": _fingerprint(lengths),
    }
    out = {cond: {s: save_folder / cond / f"{s}.csv" for s in spl} for cond, (_, spl) in
           conditions.items()}  # fmt: skip
    options_path = save_folder / OPTIONS_FILE
    csvs = [p for d in out.values() for p in d.values()]
    if options_path.is_file() and all(p.is_file() for p in csvs):
        try:
            previous = json.loads(options_path.read_text()).get("options")
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == options:
            logger.info("Noisy LibriSpeech already prepared in %s; skipping.", save_folder)
            return out
    if options_path.exists():
        options_path.unlink()  # an interrupted run must not look finished
    corpus = Path(
        json.loads((save_folder / "clean" / "librispeech_prepare.json").read_text())["options"][
            "data_folder"
        ]
    )
    stats = {}
    for condition, (types, cond_splits) in conditions.items():
        for split in cond_splits:
            rows, jobs = [], []
            with open(clean[split], newline="", encoding="utf-8") as handle:
                clean_rows = list(csv.DictReader(handle))
            frames = map_files(_num_frames, [item["wav"] for item in clean_rows], num_workers,
                               desc=f"{condition}/{split}: headers")  # fmt: skip
            for item, n_samples in zip(clean_rows, frames):
                rng = random.Random(f"{seed}:{condition}:{item['ID']}")
                noise_type, path, start, snr = _draw(rng, types, files, lengths, n_samples, snrs)
                row = {
                    "ID": item["ID"],
                    "duration": item["duration"],
                    "clean_wav": item["wav"],
                    "noise_wav": str(path),
                    "noise_type": noise_type,
                    "noise_start": str(start),
                    "snr": f"{snr:g}",
                    "spk_id": item.get("spk_id", ""),
                    "wrd": item.get("wrd", ""),
                }
                target = None
                if write_mixtures:
                    rel = Path(item["wav"]).resolve().relative_to(corpus)
                    target = save_folder / condition / "LibriSpeech" / rel.with_suffix(".flac")
                    row["wav"] = str(target.resolve())
                jobs.append((row, target, sample_rate))
                rows.append(row)
            if write_mixtures:
                _copy_transcripts(corpus, split, save_folder / condition)
            gains = map_files(_process_one, jobs, num_workers, desc=f"{condition}/{split}: mix")
            for row, gain in zip(rows, gains):
                row["gain"] = f"{gain:.6f}"
            columns = [c for c in COLUMNS if write_mixtures or c != "wav"]
            target_csv = out[condition][split]
            target_csv.parent.mkdir(parents=True, exist_ok=True)
            write_manifest(target_csv, columns, rows, extrasaction="ignore")
            stats[f"{condition}/{split}"] = {
                "utterances": len(rows),
                "noise_types": sorted({r["noise_type"] for r in rows}),
            }
            logger.info("Noisy %s/%s: %d utterances -> %s", condition, split, len(rows), target_csv)
    options_path.write_text(json.dumps({"options": options, "stats": stats}, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- dataset
def noisy_dataset(
    csv_path,
    sample_rate: int = 16000,
    mix_on_the_fly: bool | None = None,
    max_duration: float | None = None,
    min_duration: float | None = None,
    sort: str | None = None,
    clean_input: bool = False,
):
    """A dataset of (noisy, clean) pairs from a manifest written by this module.

    Arguments
    ---------
    csv_path : str or os.PathLike
        ``<save_folder>/<condition>/<split>.csv``.
    sample_rate : int
        Expected sample rate.
    mix_on_the_fly : bool, optional
        Mix from ``clean_wav``/``noise_wav``/``noise_start``/``snr`` instead of reading ``wav``;
        ``None``: only when the manifest has no ``wav`` column.
    max_duration, min_duration : float, optional
        Duration filter (seconds).
    sort : {None, "ascending", "descending"}
        Sort by duration.
    clean_input : bool
        ``noisy_sig`` is the clean speech itself (the 'clean' test condition: how an SE
        front-end treats speech without noise).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Output keys ``id``, ``noisy_sig``, ``clean_sig`` (``gain * clean``, the SE target),
        ``duration``, ``noise_type``, ``snr``, ``spk_id``, ``wrd``.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> root = Path(tempfile.mkdtemp())
    >>> sf.write(root / "c.flac", 0.1 * np.random.randn(8000), 16000)
    >>> sf.write(root / "n.wav", 0.1 * np.random.randn(16000), 16000)
    >>> _ = (root / "m.csv").write_text("ID,duration,clean_wav,noise_wav,noise_type,noise_start,"
    ...     f"snr,gain,spk_id,wrd\\nu1,0.5,{root}/c.flac,{root}/n.wav,AAA,100,5,1.0,1,HI\\n")
    >>> item = noisy_dataset(root / "m.csv")[0]
    >>> item["noisy_sig"].shape, item["clean_sig"].shape, item["snr"]
    (torch.Size([8000]), torch.Size([8000]), 5.0)
    """
    import speechbrain as sb

    from lasersb.data.audio import read_audio

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"Noisy manifest not found: {csv_path}. Run data_prep/noisy_prepare.py (the SE "
            "recipe's stage 0) first, or fix the path in the hparams file."
        )
    with open(csv_path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    required = ("ID", "duration", "clean_wav", "noise_wav", "noise_start", "snr")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"{csv_path} lacks the column(s) {', '.join(missing)}: it is not a noisy manifest "
            "written by data_prep/noisy_prepare.py; rerun the preparation."
        )
    if mix_on_the_fly is None:
        mix_on_the_fly = "wav" not in header
    if not mix_on_the_fly and "wav" not in header:
        raise ValueError(f"{csv_path} has no 'wav' column (mixtures not written): mix on the fly.")
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(str(csv_path))

    if clean_input:

        @sb.utils.data_pipeline.takes("clean_wav")
        @sb.utils.data_pipeline.provides("clean_sig", "noisy_sig")
        def pipeline(clean_wav):
            clean = read_audio(clean_wav, sample_rate=sample_rate)
            yield clean
            yield clean

    elif mix_on_the_fly:

        @sb.utils.data_pipeline.takes("clean_wav", "noise_wav", "noise_start", "snr")
        @sb.utils.data_pipeline.provides("clean_sig", "noisy_sig")
        def pipeline(clean_wav, noise_wav, noise_start, snr):
            row = {"clean_wav": clean_wav, "noise_wav": noise_wav, "noise_start": noise_start,
                   "snr": snr}  # fmt: skip
            clean, noisy = _mixture(row, sample_rate)
            yield clean
            yield noisy

    else:

        @sb.utils.data_pipeline.takes("clean_wav", "wav", "gain")
        @sb.utils.data_pipeline.provides("clean_sig", "noisy_sig")
        def pipeline(clean_wav, wav, gain):
            clean = read_audio(clean_wav, sample_rate=sample_rate)
            noisy = read_audio(wav, sample_rate=sample_rate)
            if noisy.shape != clean.shape:
                raise ValueError(
                    f"{wav} has {noisy.shape[0]} samples but its clean reference {clean_wav} "
                    f"has {clean.shape[0]}: rerun data_prep/noisy_prepare.py."
                )
            yield clean * float(gain)
            yield noisy

    @sb.utils.data_pipeline.takes("snr")
    @sb.utils.data_pipeline.provides("snr_db")
    def snr_pipeline(snr):
        return float(snr)

    dataset.add_dynamic_item(pipeline)
    dataset.add_dynamic_item(snr_pipeline)
    keys = ["id", "noisy_sig", "clean_sig", "duration"]
    keys += [k for k in ("noise_type", "spk_id", "wrd") if k in header]
    dataset.set_output_keys({**{k: k for k in keys}, "snr": "snr_db"})
    if max_duration is not None or min_duration is not None or sort is not None:
        dataset = dataset.filtered_sorted(
            key_max_value={"duration": max_duration} if max_duration is not None else {},
            key_min_value={"duration": min_duration} if min_duration is not None else {},
            sort_key="duration" if sort else None,
            reverse=sort == "descending",
        )
    return dataset


# --------------------------------------------------------------------------- CLI
def main(argv=None):
    """Command line: ``python -m data_prep.noisy_prepare LIBRISPEECH NOISE SAVE_FOLDER``."""
    parser = PrepareArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder", help="LibriSpeech root (or its parent)")
    parser.add_argument("noise_folder", help="DEMAND root: <TYPE>/ch01.wav")
    parser.add_argument("save_folder")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS))
    parser.add_argument("--unseen_splits", nargs="*", default=["test-clean"])
    parser.add_argument("--seen_types", nargs="+", default=list(SEEN_NOISE_TYPES))
    parser.add_argument("--unseen_types", nargs="*", default=list(UNSEEN_NOISE_TYPES))
    parser.add_argument("--snrs", nargs="+", type=float, default=list(DEFAULT_SNRS))
    parser.add_argument("--noise_file", default="ch01.wav")
    parser.add_argument("--on_the_fly", action="store_true", help="write manifests only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return parser.run(
        prepare_noisy_librispeech,
        args.data_folder, args.noise_folder, args.save_folder, splits=args.splits,
        unseen_splits=args.unseen_splits, seen_types=args.seen_types,
        unseen_types=args.unseen_types, snrs=args.snrs, noise_file=args.noise_file,
        write_mixtures=not args.on_the_fly, seed=args.seed, num_workers=args.num_workers,
        errors=NoisyPrepError,
    )  # fmt: skip


if __name__ == "__main__":
    main()
