"""Checked audio reading for every recipe: one place that turns a file into a mono waveform.

:func:`read_audio` reads a file with ``soundfile`` (``torchaudio.load`` needs torchcodec, which
is not a dependency) and refuses, with an :class:`AudioError` that names the file and the fix,
everything that would otherwise fail much later or silently train on garbage: a missing or
unreadable file, a truncated/corrupt file, an empty file, NaN/inf samples, a sample rate other
than the expected one (unless ``resample=True``), several channels (unless ``downmix=True``) and
a file shorter than ``min_samples`` (e.g. the 400-sample receptive field of a HuBERT/WavLM/
wav2vec 2.0 conv feature encoder, which yields no frame at all for shorter input).
:func:`audio_info` reads the header only (no decoding), for fast corpus preparation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

if TYPE_CHECKING:
    import torch

__all__ = ["AudioError", "audio_info", "read_audio"]


class AudioError(ValueError):
    """A user-fixable problem with an audio file; the message names the file and the fix.

    Example
    -------
    >>> raise AudioError("x.flac: empty file")
    Traceback (most recent call last):
    ...
    lasersb.data.audio.AudioError: x.flac: empty file
    """


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(
            f"Audio file not found: {path}. Check the corpus path (data_folder) or rerun the "
            "data preparation, which writes absolute paths into the CSV files."
        )
    if path.is_dir():
        raise AudioError(f"Expected an audio file but got a folder: {path}.")


def audio_info(path) -> tuple[int, int, int]:
    """Return ``(sample_rate, num_frames, channels)`` of an audio file from its header.

    No samples are decoded, so this is cheap enough to run over a whole corpus.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file (any format libsndfile reads: flac, wav, ogg...).

    Returns
    -------
    tuple of int
        Sample rate in Hz, number of frames (samples per channel), number of channels.

    Raises
    ------
    AudioError
        When the file is missing or its header cannot be read.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> path = Path(tempfile.mkdtemp()) / "a.flac"
    >>> soundfile.write(path, np.zeros(800, dtype="float32"), 16000)
    >>> audio_info(path)
    (16000, 800, 1)
    """
    path = Path(path)
    _check_exists(path)
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioError(
            f"Cannot read the audio header of {path} ({err}). The file is corrupt or not an "
            "audio format libsndfile reads (use flac or wav); re-extract or re-download it."
        ) from err
    return int(info.samplerate), int(info.frames), int(info.channels)


def check_decodable(path, num_frames: int | None = None, tail: int = 1024) -> None:
    """Check cheaply that a file decodes to its end and holds finite samples where it can.

    A truncated FLAC keeps a valid header (:func:`audio_info` succeeds) and only fails when the
    decoder reaches the missing part, hours into training. This seeks to the last ``tail``
    frames and decodes them (one seek per file, no full decode). Float WAV files, the only
    common format that can store NaN or inf, are read whole and checked.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    num_frames : int, optional
        Frames announced by the header (read from it when not given).
    tail : int
        How many final frames to decode.

    Raises
    ------
    AudioError
        Naming the file and the fix.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> path = Path(tempfile.mkdtemp()) / "a.flac"
    >>> noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype("float32")
    >>> soundfile.write(path, noise, 16000)
    >>> check_decodable(path)
    >>> data = path.read_bytes()
    >>> _ = path.write_bytes(data[: len(data) // 2])  # the header survives, the end is lost
    >>> check_decodable(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lasersb.data.audio.AudioError: ... is truncated or corrupt ...
    """
    path = Path(path)
    if num_frames is None:
        num_frames = audio_info(path)[1]
    fix = "Re-extract or re-download it, or delete it (or pass skip_bad_files=True)."
    try:
        with soundfile.SoundFile(str(path)) as handle:
            if handle.subtype in ("FLOAT", "DOUBLE"):
                data = handle.read(dtype="float32")
                if not np.isfinite(data).all():
                    raise AudioError(f"{path} contains NaN or inf samples. {fix}")
                decoded = len(data)
                wanted = num_frames
            else:
                handle.seek(max(0, num_frames - tail))
                decoded = len(handle.read(tail, dtype="int16"))
                wanted = min(tail, num_frames)
    except AudioError:
        raise
    except Exception as err:  # libsndfile: "Internal psf_fseek() failed", "lost sync"...
        raise AudioError(f"{path} is truncated or corrupt ({err}). {fix}") from err
    if decoded < wanted:
        raise AudioError(
            f"{path} is truncated or corrupt: its header announces {num_frames} frames but "
            f"fewer can be decoded. {fix}"
        )


def _resample(samples: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (polyphase, Kaiser window) along the first axis."""
    from math import gcd

    from scipy.signal import resample_poly

    divisor = gcd(orig_sr, new_sr)
    return resample_poly(samples, new_sr // divisor, orig_sr // divisor, axis=0).astype(np.float32)


def read_audio(
    path,
    sample_rate: int = 16000,
    min_samples: int = 0,
    resample: bool = False,
    downmix: bool = False,
) -> torch.Tensor:
    """Read an audio file as a checked mono float32 waveform in ``[-1, 1]``.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    sample_rate : int
        The sample rate the caller expects (16 kHz for all the SSL upstreams used here).
    min_samples : int
        Minimum number of samples (after resampling); 0 disables the check. Use 400, the
        receptive field of the HuBERT/WavLM/wav2vec 2.0 conv feature encoder, for upstream input.
    resample : bool
        Resample (polyphase) a file whose rate differs instead of raising.
    downmix : bool
        Average the channels of a multichannel file instead of raising.

    Returns
    -------
    torch.Tensor
        ``(T,)`` float32 waveform.

    Raises
    ------
    AudioError
        Missing, unreadable, truncated or empty file, non-finite samples, wrong sample rate,
        several channels, or fewer than ``min_samples`` samples; the message names the file and
        the fix.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> path = Path(tempfile.mkdtemp()) / "a.flac"
    >>> soundfile.write(path, 0.1 * np.ones(1600, dtype="float32"), 16000)
    >>> wav = read_audio(path, min_samples=400)
    >>> wav.shape, wav.dtype
    (torch.Size([1600]), torch.float32)
    >>> read_audio(path, sample_rate=8000, resample=True).shape
    torch.Size([800])
    """
    import torch  # imported here so that header-only users (data preparation) stay light

    path = Path(path)
    file_sr, num_frames, channels = audio_info(path)
    if num_frames == 0:
        raise AudioError(
            f"Empty audio file (0 samples): {path}. Remove it from the data (or rerun the data "
            "preparation with skip_bad_files=True)."
        )
    if file_sr != sample_rate and not resample:
        raise AudioError(
            f"{path} has a sample rate of {file_sr} Hz but {sample_rate} Hz is expected. "
            f"Resample the corpus first (e.g. `sox in.flac -r {sample_rate} out.flac`) or pass "
            "resample=True to read_audio."
        )
    if channels != 1 and not downmix:
        raise AudioError(
            f"{path} has {channels} channels but mono audio is expected. Convert it to mono "
            "(e.g. `sox in.wav -c 1 out.wav`) or pass downmix=True to average the channels."
        )
    try:
        samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(
            f"Cannot decode {path} ({err}). The file is corrupt or truncated; re-extract or "
            "re-download it, or drop it (skip_bad_files=True in the data preparation)."
        ) from err
    if samples.shape[0] < num_frames:
        raise AudioError(
            f"{path} is truncated: its header announces {num_frames} samples but only "
            f"{samples.shape[0]} could be decoded. Re-extract or re-download the file, or drop "
            "it (skip_bad_files=True in the data preparation)."
        )
    if samples.shape[0] == 0:
        raise AudioError(f"Empty audio file (0 samples decoded): {path}. Remove it from the data.")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(
            f"{path} contains {bad} NaN/inf samples. Regenerate or re-export the file (a "
            "float WAV written from a broken computation), or remove it from the data."
        )
    if channels != 1:
        samples = samples.mean(axis=1, keepdims=True)
    if file_sr != sample_rate:
        samples = _resample(samples, file_sr, sample_rate)
    wav = torch.from_numpy(np.ascontiguousarray(samples[:, 0]))
    if wav.numel() < min_samples:
        raise AudioError(
            f"{path} is too short: {wav.numel()} samples "
            f"({wav.numel() / sample_rate * 1000:.1f} ms) < min_samples={min_samples} (the "
            "upstream's receptive field yields no frame for shorter input). Remove it from the "
            "data or filter by duration (min_duration in lasersb.data.pipelines.audio_dataset)."
        )
    return wav
