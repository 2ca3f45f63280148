"""Prepare Libri-light's limited-resource ASR training sets (10 min / 1 h / 10 h) as manifests.

Libri-light (Kahn et al., ICASSP 2020) ships the labelled fine-tuning subsets used by
wav2vec 2.0 and by the adapter-transfer paper as ``librispeech_finetuning.tgz``::

    librispeech_finetuning/
      1h/{0..5}/{clean,other}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
                                              <spk>-<chapter>.trans.txt
      9h/{clean,other}/<spk>/<chapter>/...

``10min`` is ``1h/0``, ``1h`` is ``1h/*`` and ``10h`` is ``1h/*`` + ``9h``. The manifest
``<save_folder>/librilight-<subset>.csv`` has the standard columns ``ID,duration,wav,spk_id,wrd``.
Dev and test sets are LibriSpeech's (``data_prep.librispeech_prepare``). Preparation is
idempotent: an options JSON next to the CSV records what was prepared. The header reads run
in ``num_workers`` processes (:func:`lasersb.data.parallel.map_files`); the manifest does not
depend on their number.

Command line::

    python -m data_prep.librilight_prepare --data_folder /data/librispeech_finetuning \\
        --save_folder results/manifests --subset 10h
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from data_prep.cli import PrepareArgumentParser
from lasersb.data.manifests import write_manifest

logger = logging.getLogger(__name__)

SUBSETS = ("10min", "1h", "10h")
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd")
_OPTIONS_FILE = "librilight_prepare.json"


class LibriLightPrepError(ValueError):
    """A problem with the Libri-light corpus folder that the user has to fix."""


def _resolve_root(data_folder: Path) -> Path:
    """The ``librispeech_finetuning`` folder (``data_folder`` itself or its child)."""
    for candidate in (data_folder, data_folder / "librispeech_finetuning"):
        if (candidate / "1h").is_dir():
            return candidate
    raise LibriLightPrepError(
        f"No Libri-light fine-tuning set under {data_folder}: expected "
        f"{data_folder}/1h/0/clean/... (or {data_folder}/librispeech_finetuning/1h/...). "
        "Download and extract librispeech_finetuning.tgz from the Libri-light release."
    )


def subset_folders(root: Path, subset: str) -> list[Path]:
    """The ``clean``/``other`` folders that make up a subset.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for part in ("1h/0/clean", "1h/0/other", "1h/1/clean", "9h/clean"):
    ...     (root / part).mkdir(parents=True)
    >>> [str(p.relative_to(root)) for p in subset_folders(root, "10h")]
    ['1h/0/clean', '1h/0/other', '1h/1/clean', '9h/clean']
    >>> [str(p.relative_to(root)) for p in subset_folders(root, "10min")]
    ['1h/0/clean', '1h/0/other']
    """
    if subset not in SUBSETS:
        raise ValueError(f"Unknown Libri-light subset {subset!r}; choose one of {SUBSETS}.")
    one_hour = root / "1h"
    parts = (
        [one_hour / "0"]
        if subset == "10min"
        else sorted(p for p in one_hour.iterdir() if p.is_dir())
    )
    if subset == "10h":
        if not (root / "9h").is_dir():
            raise LibriLightPrepError(
                f"The 10h subset needs {root / '9h'}, which is missing; re-extract "
                "librispeech_finetuning.tgz or use subset='1h'."
            )
        parts.append(root / "9h")
    folders = [f for part in parts for f in sorted(part.iterdir()) if f.name in ("clean", "other")]
    if not folders:
        raise LibriLightPrepError(f"No clean/other folders under {[str(p) for p in parts]}.")
    return folders


def _read_transcripts(folder: Path) -> dict[str, tuple[str, Path]]:
    texts = {}
    for trans in sorted(folder.rglob("*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, words = line.strip().partition(" ")
            if not words.strip():
                raise LibriLightPrepError(
                    f"Empty transcript for {utt_id} at {trans}:{number}; fix or delete the line."
                )
            texts[utt_id] = (" ".join(words.upper().split()), trans)
    return texts


def prepare_librilight(
    data_folder,
    save_folder,
    subset: str = "10h",
    min_samples: int = 400,
    num_workers: int = 1,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Write ``<save_folder>/librilight-<subset>.csv`` for a Libri-light fine-tuning subset.

    Arguments
    ---------
    data_folder : str or os.PathLike
        The extracted ``librispeech_finetuning`` folder or its parent.
    save_folder : str or os.PathLike
        Output folder for the CSV and the options JSON.
    subset : str
        ``"10min"``, ``"1h"`` or ``"10h"``.
    min_samples : int
        Utterances shorter than this are an error (the upstream yields no frame for them).
    num_workers : int
        Processes checking the audio files (0 or 1: this process).
    progress : bool, optional
        Progress bars; ``None``: only on a terminal.

    Returns
    -------
    dict
        ``{"librilight-<subset>": csv path}``.
    """
    from lasersb.data.parallel import BadFile, map_files, probe_audio

    header_only = functools.partial(probe_audio, decode_check=False)

    data_folder, save_folder = Path(data_folder), Path(save_folder)
    root = _resolve_root(data_folder)
    name = f"librilight-{subset}"
    csv_path = save_folder / f"{name}.csv"
    folders = subset_folders(root, subset)
    options = {"root": str(root.resolve()), "subset": subset, "min_samples": min_samples}
    options_path = save_folder / f"{name}.{_OPTIONS_FILE}"
    if csv_path.is_file() and options_path.is_file():
        if json.loads(options_path.read_text()) == options:
            logger.info("%s already prepared: %s", name, csv_path)
            return {name: csv_path}
    rows = []
    for folder in folders:
        texts = _read_transcripts(folder)
        flacs = sorted(folder.rglob("*.flac"))
        if not flacs:
            raise LibriLightPrepError(f"No .flac files under {folder}; re-extract the subset.")
        desc = f"Libri-light {folder.relative_to(root)}"
        probes = map_files(header_only, flacs, num_workers, stop_at_bad=True, desc=desc,
                           progress=progress)  # fmt: skip
        for flac, probe in zip(flacs, probes):
            utt_id = flac.name[: -len(".flac")]
            if utt_id not in texts:
                raise LibriLightPrepError(
                    f"No transcript line for {flac} in the *.trans.txt files of {folder}; "
                    "re-extract the chapter or delete the audio file."
                )
            if isinstance(probe, BadFile):  # missing or unreadable header
                raise LibriLightPrepError(probe.message)
            sample_rate, num_frames, channels = probe
            if sample_rate != 16000 or channels != 1 or num_frames < min_samples:
                raise LibriLightPrepError(
                    f"{flac}: {sample_rate} Hz, {channels} channel(s), {num_frames} samples; "
                    f"expected 16 kHz mono with at least {min_samples} samples."
                )
            rows.append(
                (
                    utt_id,
                    f"{num_frames / sample_rate:.6g}",
                    str(flac.resolve()),
                    utt_id.split("-")[0],
                    texts[utt_id][0],
                )
            )
    ids = [row[0] for row in rows]
    if len(set(ids)) != len(ids):
        raise LibriLightPrepError(f"Duplicate utterance ids under {root}; the folder is corrupt.")
    rows.sort(key=lambda row: row[0])
    save_folder.mkdir(parents=True, exist_ok=True)
    write_manifest(csv_path, CSV_COLUMNS, rows)
    options_path.write_text(json.dumps(options, indent=2) + "\n")
    hours = sum(float(row[1]) for row in rows) / 3600
    logger.info("Wrote %s (%d utterances, %.2f h)", csv_path, len(rows), hours)
    return {name: csv_path}


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line entry point (see the module docstring)."""
    parser = PrepareArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--subset", default="10h", choices=SUBSETS)
    parser.add_argument("--num_workers", type=int, default=1, help="audio-checking processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return parser.run(
        prepare_librilight,
        args.data_folder,
        args.save_folder,
        args.subset,
        num_workers=args.num_workers,
        errors=LibriLightPrepError,
    )


if __name__ == "__main__":
    main()
