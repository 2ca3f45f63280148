"""Per-file work of the corpus preparations, mapped over a pool of worker processes.

Every ``data_prep/<corpus>_prepare.py`` does the same thing for each of its audio files (read
the header, check that the file decodes to its end, sometimes convert it) and nothing that
depends on the other files. At the real corpus sizes (LibriSpeech 960 h: 281k files,
VoxCeleb2 dev: 1.1M m4a files to convert) that loop is the slow part, so the scripts give it
to :func:`map_files`, which runs it in ``num_workers`` processes (a ``ProcessPoolExecutor``
fed a bounded queue of chunks, awaited oldest first):

- ``num_workers <= 1`` runs in this process (no pool, no pickling), so 0 and 1 both mean
  "sequential", as ``noisy_prepare``'s ``num_workers=0`` always did;
- results come back in input order, so manifests are identical for 1 and N workers;
- a per-file function reports a user-fixable problem by *returning* a :class:`BadFile`
  (reason + a message naming the file and the fix) instead of raising: the script then
  applies its own ``skip_bad_files`` rule in input order, so the first bad file reported is
  the same whatever the number of workers. With ``stop_at_bad=True`` the pool is stopped at
  the first :class:`BadFile` (in input order) and the results end with it: a script that
  raises there does not wait for the rest of the corpus;
- a tqdm progress bar, shown only on a terminal unless asked (``progress``).

``speechbrain.utils.parallel.parallel_map`` does the chunked, ordered part too, but importing
it imports SpeechBrain and torch (4.8 s measured on the 2-core bench box, paid by every
``python -m data_prep...`` call), and it re-raises a worker's exception as soon as any chunk
fails rather than in input order.

The per-file function must be picklable: a module-level function or a ``functools.partial``
of one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Any, NamedTuple

__all__ = ["AudioProbe", "BadFile", "map_files", "probe_audio", "work_chunk_size"]


class BadFile(NamedTuple):
    """A file a preparation cannot use: ``reason`` (a short key for counts) and ``message``.

    ``message`` names the file and the fix, as the preparation scripts' errors do.

    Example
    -------
    >>> BadFile("unreadable", "x.flac is truncated").reason
    'unreadable'
    """

    reason: str
    message: str


class AudioProbe(NamedTuple):
    """Header facts of an audio file: sample rate (Hz), frames per channel, channels.

    Example
    -------
    >>> probe = AudioProbe(16000, 8000, 1)
    >>> probe.frames / probe.sample_rate
    0.5
    """

    sample_rate: int
    frames: int
    channels: int


def probe_audio(path, decode_check: bool = True) -> AudioProbe | BadFile:
    """Read an audio file's header and (optionally) check that it decodes to its end.

    The per-file function most preparations map over their files: header only
    (:func:`lasersb.data.audio.audio_info`) plus one seek and a short decode of the last frames
    (:func:`lasersb.data.audio.check_decodable`), so a truncated FLAC is caught here rather
    than hours into training.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    decode_check : bool
        Also run :func:`lasersb.data.audio.check_decodable`.

    Returns
    -------
    AudioProbe or BadFile
        ``BadFile("unreadable", message)`` for a missing, unreadable or truncated file (the
        :class:`lasersb.data.audio.AudioError` message, which names the file and the fix).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "a.flac"
    >>> soundfile.write(path, np.zeros(800, dtype="float32"), 16000)
    >>> probe_audio(path)
    AudioProbe(sample_rate=16000, frames=800, channels=1)
    >>> probe_audio(path.with_name("missing.flac")).reason
    'unreadable'
    """
    from lasersb.data.audio import AudioError, audio_info, check_decodable

    try:
        sample_rate, frames, channels = audio_info(path)
        if decode_check:
            check_decodable(path, frames)
    except AudioError as err:
        return BadFile("unreadable", str(err))
    return AudioProbe(sample_rate, frames, channels)


def work_chunk_size(num_items: int, num_workers: int) -> int:
    """Items sent to a worker at once: about 16 chunks per worker, between 1 and 256.

    Per-file work is about a millisecond (a header read and one seek), so a chunk of a few
    hundred files keeps the inter-process traffic (one pickled list per chunk) negligible at
    100k+ files, while a small corpus is still spread over every worker.

    Example
    -------
    >>> work_chunk_size(100_000, 2), work_chunk_size(1_100_000, 8), work_chunk_size(20, 2)
    (256, 256, 1)
    """
    return max(1, min(256, num_items // (16 * max(1, num_workers))))


def _map_chunk(function, chunk):
    return [function(item) for item in chunk]


def _stop_here(result: Any, stop_at_bad: bool) -> bool:
    return stop_at_bad and isinstance(result, BadFile)


def map_files(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    num_workers: int = 1,
    stop_at_bad: bool = False,
    desc: str | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
) -> list:
    """``[function(item) for item in items]``, computed by ``num_workers`` processes.

    Arguments
    ---------
    function : Callable
        The per-file function (picklable: module level, or a ``functools.partial`` of one).
        It returns a :class:`BadFile` for a user-fixable problem rather than raising.
    items : Sequence
        Its inputs (paths, or tuples of what the function needs).
    num_workers : int
        Worker processes; 0 or 1 run in this process.
    stop_at_bad : bool
        Stop at the first :class:`BadFile` in input order: the returned list then ends with
        it (what a script that raises on a bad file needs, without waiting for the rest).
    desc : str, optional
        Label of the progress bar.
    progress : bool, optional
        Show a tqdm progress bar; ``None`` (default): only when stderr is a terminal.
    chunk_size : int, optional
        Items per task sent to a worker (default :func:`work_chunk_size`).

    Returns
    -------
    list
        The results in input order (truncated after the first :class:`BadFile` when
        ``stop_at_bad``).

    Example
    -------
    >>> import math
    >>> map_files(math.sqrt, [1, 4, 9], num_workers=2)
    [1.0, 2.0, 3.0]
    >>> from functools import partial
    >>> check = partial(probe_audio, decode_check=False)
    >>> [r.reason for r in map_files(check, ["a.wav", "b.wav"], stop_at_bad=True)]
    ['unreadable']
    """
    from tqdm.auto import tqdm

    items = list(items)
    num_workers = int(num_workers or 0)
    bar = {"total": len(items), "desc": desc, "unit": "file", "smoothing": 0.02,
           "disable": None if progress is None else not progress}  # fmt: skip
    results = []
    if num_workers <= 1 or len(items) <= 1:
        with tqdm(**bar) as pbar:
            for item in items:
                results.append(function(item))
                pbar.update()
                if _stop_here(results[-1], stop_at_bad):
                    break
        return results

    size = chunk_size or work_chunk_size(len(items), num_workers)
    chunks = iter([items[i : i + size] for i in range(0, len(items), size)])
    with tqdm(**bar) as pbar, ProcessPoolExecutor(max_workers=num_workers) as pool:
        # A bounded queue of chunks; the oldest is awaited while the others run, so results
        # (and a worker's exception) come back in input order.
        pending = deque(
            pool.submit(_map_chunk, function, c) for c in islice(chunks, 4 * num_workers)
        )
        try:
            while pending:
                part = pending.popleft().result()
                following = next(chunks, None)
                if following is not None:
                    pending.append(pool.submit(_map_chunk, function, following))
                for result in part:
                    results.append(result)
                    if _stop_here(result, stop_at_bad):
                        return results
                pbar.update(len(part))
        finally:
            for future in pending:  # stopped early or failed: drop the queued chunks
                future.cancel()
    return results
