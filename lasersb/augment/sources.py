"""Noise / RIR file lists for :class:`~lasersb.augment.NoiseMixer` and :class:`Reverb`.

A *source* is a folder (searched recursively for ``.wav``/``.flac``), a SpeechBrain-style CSV
(column ``wav``; also ``file``, ``path``, ``noise`` or ``rir``; relative paths are resolved
against the CSV's folder, ``$name`` placeholders through ``replacements``), a single audio file,
or a list of any of these. Audio is read with soundfile (torchaudio.load is not used), imported
where a file is read, so that ``lasersb.augment`` imports on a machine without soundfile (the bare
GPU image of ``bench/gpu_check.sh``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

AUDIO_SUFFIXES = (".wav", ".flac")
_CSV_COLUMNS = ("wav", "file", "path", "noise", "rir")


def list_audio_files(source, replacements=None) -> list[Path]:
    """Expand a folder / CSV / file / list of them into a sorted list of audio files.

    Example
    -------
    >>> import tempfile, soundfile as sf
    >>> folder = Path(tempfile.mkdtemp())
    >>> sf.write(folder / "a.wav", np.zeros(160, dtype="float32"), 16000)
    >>> [p.name for p in list_audio_files(folder)]
    ['a.wav']
    """
    if source is None:
        return []
    if isinstance(source, list | tuple):
        files: list[Path] = []
        for item in source:
            files.extend(list_audio_files(item, replacements))
        return files
    path = Path(str(source)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"No .wav/.flac files under {path}: point to the folder holding the noise/RIR "
                "recordings (e.g. the mini corpus's DEMAND folder)."
            )
        return files
    if not path.exists():
        raise FileNotFoundError(
            f"Augmentation source {path} does not exist: give an existing folder, CSV or file."
        )
    if path.suffix.lower() == ".csv":
        return _files_from_csv(path, replacements or {})
    if path.suffix.lower() in AUDIO_SUFFIXES:
        return [path]
    raise ValueError(
        f"Unsupported augmentation source {path}: expected a folder, a .csv or a .wav/.flac file."
    )


def _files_from_csv(path: Path, replacements: dict) -> list[Path]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = next((c for c in _CSV_COLUMNS if c in columns), None)
        if column is None:
            raise ValueError(
                f"{path}: no audio column; expected one of {_CSV_COLUMNS}, found {columns}."
            )
        files = []
        for row in reader:
            value = row[column]
            for key, replacement in replacements.items():
                value = value.replace(f"${key}", str(replacement))
            file = Path(value)
            files.append(file if file.is_absolute() else path.parent / file)
    if not files:
        raise ValueError(f"{path}: the CSV lists no audio files.")
    return files


class AudioBank:
    """Random-access reader of (crops of) audio files, optionally cached in memory.

    Example
    -------
    >>> import tempfile, soundfile as sf
    >>> file = Path(tempfile.mkdtemp()) / "n.wav"
    >>> sf.write(file, np.arange(100, dtype="float32") / 128, 16000)
    >>> bank = AudioBank([file], sample_rate=16000)
    >>> bank.num_frames(0), (bank.read(0, 10, 3) * 128).tolist(), bank.crop(0, 250).shape
    (100, [10.0, 11.0, 12.0], torch.Size([250]))
    """

    def __init__(self, files, sample_rate: int = 16000, cache: bool = False):
        self.files = [Path(f) for f in files]
        self.sample_rate = int(sample_rate)
        self.cache = bool(cache)
        self._frames: dict[int, int] = {}
        self._audio: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def num_frames(self, index: int) -> int:
        """Number of samples of file ``index`` (checks its sampling rate on first access)."""
        if index not in self._frames:
            import soundfile as sf

            file = self.files[index]
            try:
                info = sf.info(str(file))
            except Exception as error:  # noqa: BLE001 - re-raised with the file name
                raise OSError(f"Cannot read augmentation audio {file}: {error}") from error
            if info.samplerate != self.sample_rate:
                raise ValueError(
                    f"{file} is sampled at {info.samplerate} Hz, expected {self.sample_rate} Hz: "
                    "resample the noise/RIR set (e.g. sox in.wav -r 16000 out.wav)."
                )
            if info.frames == 0:
                raise ValueError(f"{file} is empty: remove it from the noise/RIR list.")
            self._frames[index] = int(info.frames)
        return self._frames[index]

    def read(self, index: int, start: int = 0, frames: int = -1) -> torch.Tensor:
        """Samples ``[start, start + frames)`` of file ``index`` (first channel), float32."""
        total = self.num_frames(index)
        if self.cache:
            if index not in self._audio:
                self._audio[index] = self._read_file(index, 0, total)
            audio = self._audio[index]
            stop = total if frames < 0 else min(total, start + frames)
            return audio[start:stop]
        return self._read_file(index, start, frames)

    def _read_file(self, index: int, start: int, frames: int) -> torch.Tensor:
        import soundfile as sf

        data, _ = sf.read(
            str(self.files[index]), start=start, frames=frames, dtype="float32", always_2d=True
        )
        if not np.isfinite(data).all():
            raise ValueError(f"{self.files[index]} contains NaN/Inf samples: fix or remove it.")
        return torch.from_numpy(np.ascontiguousarray(data[:, 0]))

    def crop(self, index: int, length: int, generator=None) -> torch.Tensor:
        """A random ``length``-sample crop of file ``index`` (tiled if the file is shorter)."""
        total = self.num_frames(index)
        if total >= length:
            device = generator.device if generator is not None else "cpu"
            start = int(torch.randint(total - length + 1, (1,), generator=generator, device=device))
            return self.read(index, start, length)
        audio = self.read(index)
        repeats = -(-length // total)
        return audio.repeat(repeats)[:length]


__all__ = ["list_audio_files", "AudioBank", "AUDIO_SUFFIXES"]
