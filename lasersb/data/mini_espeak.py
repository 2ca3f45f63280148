"""Deterministic espeak-ng speech synthesis for the embedded mini corpus.

libespeak-ng (bundled by the ``espeakng-loader`` wheel) is driven through ``ctypes``:
``espeak_Initialize`` in retrieval mode, a synth callback collecting int16 samples at 22050 Hz,
``espeak_SetVoiceByName`` for voice variants (``"en-us+m3"``, ``"en-gb-scotland+f2"``...) and
``espeak_SetParameter`` for rate, pitch and pitch range; the samples are resampled to 16 kHz with
``scipy.signal.resample_poly``. If the library cannot be loaded, the ``espeak-ng`` binary is used
instead (then the pitch range setting is ignored).

libespeak-ng keeps hidden state between calls (e.g. the ``static Flutter_ix`` of its wave
generator), so the same text synthesised twice in one process gives different samples. To make
every utterance a pure function of its description, synthesis runs in small worker processes
(``python -m lasersb.data.mini_espeak --worker``) that initialise espeak-ng once and fork a
fresh child for every job: each child starts from the same just-initialised state, whatever
was synthesised before and however jobs are spread over workers.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ESPEAK_SAMPLE_RATE = 22050
"""Sample rate of libespeak-ng's output (Hz)."""

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synthesis in the caller's thread: no fifo thread, fork-safe
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_ENDPAUSE = 0x1000
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
_CHILD_TIMEOUT_S = 120
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 3, 4, 7


@dataclass(frozen=True)
class Segment:
    """One stretch of synthesised speech followed by an optional pause.

    Parameters
    ----------
    text : str
        Text to speak (plain words, no markup).
    voice : str
        espeak-ng voice name, optionally with a variant: ``"en-us"``, ``"en-us+f2"``.
    rate : int
        Speaking rate in words per minute (espeak-ng accepts 80-450).
    pitch : int
        Base pitch, 0-100 (50 is the voice's normal pitch).
    pitch_range : int
        Pitch range, 0-100 (0 is monotone, 50 normal).
    word_gap : int
        Extra pause between words in units of 10 ms.
    pause_after : float
        Seconds of silence appended after the (trimmed) speech.

    Example
    -------
    >>> Segment("hello there", voice="en-us+f2", pause_after=0.2).rate
    175
    """

    text: str
    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0
    pause_after: float = 0.0


@dataclass(frozen=True)
class SynthesisJob:
    """A job for the synthesis workers: alternatives of segment sequences.

    The worker synthesises the alternatives in order and keeps the first whose duration lies
    in ``[min_seconds, max_seconds]`` (or the one closest to that interval if none does).

    Parameters
    ----------
    alternatives : tuple of tuple of Segment
        Candidate renderings, each a sequence of segments concatenated in order.
    min_seconds, max_seconds : float
        Accepted duration interval of the result.
    seed : int
        Seed of espeak-ng's (and the C library's) random generator, used by some voices.

    Example
    -------
    >>> job = SynthesisJob(((Segment("yes"),),), min_seconds=0.1, max_seconds=2.0)
    >>> len(job.alternatives)
    1
    """

    alternatives: tuple[tuple[Segment, ...], ...]
    min_seconds: float = 0.0
    max_seconds: float = float("inf")
    seed: int = 0


class _LibEspeak:
    """ctypes binding of libespeak-ng (one per process)."""

    _CALLBACK = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.libc = ctypes.CDLL(None)
        self.lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _ESPEAK_INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate} (data path {data_path!r})")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events):
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, segment: Segment, seed: int) -> np.ndarray:
        """Return int16 samples at 22050 Hz."""
        self._chunks = []
        if self.lib.espeak_SetVoiceByName(segment.voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {segment.voice!r}")
        for param, value in (
            (_PARAM_RATE, segment.rate),
            (_PARAM_PITCH, segment.pitch),
            (_PARAM_RANGE, segment.pitch_range),
            (_PARAM_WORDGAP, segment.word_gap),
        ):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.lib.espeak_ng_SetRandSeed(seed)
        self.libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        text = segment.text.encode() + b"\0"
        status = self.lib.espeak_Synth(
            text, len(text), 0, 0, 0, _ESPEAK_CHARS_UTF8 | _ESPEAK_ENDPAUSE, None, None
        )
        if status != 0 or self.lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak_Synth failed (status {status}) on {segment.text!r}")
        if not self._chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(self._chunks)


class _BinaryEspeak:
    """Fallback: the ``espeak-ng`` command-line program (pitch range not supported)."""

    def __init__(self):
        self.exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if self.exe is None:
            raise RuntimeError(
                "neither libespeak-ng (pip install espeakng-loader) nor an espeak-ng binary "
                "(apt-get install espeak-ng) is available"
            )

    def synthesize(self, segment: Segment, seed: int) -> np.ndarray:
        import soundfile

        cmd = [self.exe, "--stdout", "-v", segment.voice, "-s", str(segment.rate)]
        cmd += ["-p", str(segment.pitch), "-g", str(segment.word_gap), segment.text]
        wav = subprocess.run(cmd, check=True, capture_output=True).stdout
        data, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"{self.exe} wrote {rate} Hz audio, expected {ESPEAK_SAMPLE_RATE}")
        return data


def _trim(samples: np.ndarray, threshold: int = 200, margin: int = 660) -> np.ndarray:
    """Cut leading/trailing silence (below ``threshold``), keeping ``margin`` samples."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples[:0]
    start = max(0, loud[0] - margin)
    end = min(samples.size, loud[-1] + margin + 1)
    return samples[start:end]


def _render(engine, job: SynthesisJob, sample_rate: int) -> tuple[np.ndarray, int]:
    """Synthesise a job: (float32 samples at ``sample_rate``, index of the kept alternative)."""
    from math import gcd

    from scipy.signal import resample_poly

    best, best_err = None, None
    for index, segments in enumerate(job.alternatives):
        pieces = []
        for segment in segments:
            speech = _trim(engine.synthesize(segment, job.seed)).astype(np.float64) / 32768.0
            pieces.append(speech)
            pieces.append(np.zeros(int(round(segment.pause_after * ESPEAK_SAMPLE_RATE))))
        wav = np.concatenate(pieces) if pieces else np.zeros(0)
        if sample_rate != ESPEAK_SAMPLE_RATE:
            g = gcd(sample_rate, ESPEAK_SAMPLE_RATE)
            wav = resample_poly(wav, sample_rate // g, ESPEAK_SAMPLE_RATE // g)
        wav = wav.astype(np.float32)
        seconds = wav.size / sample_rate
        err = max(job.min_seconds - seconds, seconds - job.max_seconds, 0.0)
        if err == 0.0:
            return wav, index
        if best_err is None or err < best_err:
            best, best_err = (wav, index), err
    return best


def _make_engine():
    try:
        return _LibEspeak()
    except (OSError, ImportError, AttributeError, RuntimeError) as error:
        print(
            f"lasersb: libespeak-ng unusable ({error}); using the espeak-ng binary", file=sys.stderr
        )
        return _BinaryEspeak()


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=4)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _run_isolated(engine, job: SynthesisJob, sample_rate: int):
    """Run ``_render`` in a forked child so that espeak-ng's state never carries over."""
    if not hasattr(os, "fork"):  # pragma: no cover - non-POSIX: best effort, order-dependent
        return _render(engine, job, sample_rate)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        signal.alarm(_CHILD_TIMEOUT_S)  # never hang: a stuck child dies and the job errors
        try:
            payload = pickle.dumps(("ok", _render(engine, job, sample_rate)), protocol=4)
        except BaseException as error:  # noqa: BLE001 - report anything to the parent
            payload = pickle.dumps(("error", f"{type(error).__name__}: {error}"), protocol=4)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_fd)
    payload = _read_all(read_fd)
    os.close(read_fd)
    os.waitpid(pid, 0)
    if not payload:
        return ("error", "synthesis child died without a result")
    return pickle.loads(payload)


def _worker_main() -> None:
    """Serve jobs on stdin/stdout (length-prefixed pickles) until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the C library must not corrupt the protocol
    stdin = sys.stdin.buffer
    import scipy.signal  # noqa: F401 - import once before forking

    engine = _make_engine()
    if isinstance(engine, _LibEspeak):  # load the English dictionary once, before any fork
        engine.lib.espeak_SetVoiceByName(b"en-us")
    while True:
        request = _recv(stdin)
        if request is None:
            break
        key, job, sample_rate = request
        _send(out, (key, _run_isolated(engine, job, sample_rate)))


class EspeakSynthesizer:
    """Pool of espeak-ng worker processes turning :class:`SynthesisJob` s into waveforms.

    Results depend only on each job (never on the order, the number of workers or what was
    synthesised before), so corpora built from them are reproducible byte for byte.

    Parameters
    ----------
    workers : int
        Number of worker processes (each forks a fresh child per job).
    sample_rate : int
        Output sample rate in Hz (espeak-ng's 22050 Hz output is resampled).

    Example
    -------
    >>> with EspeakSynthesizer(workers=1) as tts:
    ...     (wav, kept), = tts.run([SynthesisJob(((Segment("yes"),),))])
    >>> wav.dtype.name, 0.1 < wav.size / 16000 < 1.5, kept
    ('float32', True, 0)
    """

    def __init__(self, workers: int = 1, sample_rate: int = 16000):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.sample_rate = sample_rate
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> EspeakSynthesizer:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        cmd = [sys.executable, "-m", "lasersb.data.mini_espeak", "--worker"]
        for _ in range(self.workers):
            self._procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            )
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes."""
        for proc in self._procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout:
                proc.stdout.close()
        self._procs = []

    def run(self, jobs: Sequence[SynthesisJob]) -> list[tuple[np.ndarray, int]]:
        """Synthesise ``jobs``; returns ``(float32 waveform, kept alternative)`` per job."""
        if not self._procs:
            raise RuntimeError("use EspeakSynthesizer as a context manager: `with ... as tts:`")
        todo: queue.Queue = queue.Queue()
        for index, job in enumerate(jobs):
            todo.put((index, job))
        results: list = [None] * len(jobs)
        errors: list[str] = []

        def serve(proc: subprocess.Popen) -> None:
            while not errors:
                try:
                    index, job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    _send(proc.stdin, (index, job, self.sample_rate))
                    reply = _recv(proc.stdout)
                except (BrokenPipeError, OSError) as error:
                    reply = None
                    errors.append(f"espeak worker failed: {error}")
                if reply is None:
                    errors.append("espeak worker exited unexpectedly (see its stderr above)")
                    return
                key, (status, value) = reply
                if status != "ok":
                    errors.append(f"job {key}: {value}")
                    return
                results[key] = value

        threads = [threading.Thread(target=serve, args=(p,), daemon=True) for p in self._procs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError("speech synthesis failed: " + "; ".join(errors))
        return results


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Synthesise one short text with espeak-ng (convenience wrapper, one worker).

    Parameters
    ----------
    text : str
        Words to speak.
    voice, rate, pitch, pitch_range
        See :class:`Segment`.
    sample_rate : int
        Output sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        float32 mono waveform in [-1, 1].

    Example
    -------
    >>> wav = synthesize("hello", voice="en-us+m3")
    >>> wav.ndim, wav.dtype.name, bool(0.2 < wav.size / 16000 < 1.5)
    (1, 'float32', True)
    """
    job = SynthesisJob(((Segment(text, voice, rate, pitch, pitch_range),),))
    with EspeakSynthesizer(workers=1, sample_rate=sample_rate) as tts:
        return tts.run([job])[0][0]


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()
    else:
        sys.exit("usage: python -m lasersb.data.mini_espeak --worker (internal)")
