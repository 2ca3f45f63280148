"""Paired bootstrap confidence intervals of the relative change of an error rate (PER/WER).

Two upstreams evaluated on the same test utterances differ by a few percent; whether that is
more than the sampling noise of the test set (and of the downstream's seed) is answered by a
paired bootstrap (Koehn 2004; Bisani & Ney 2004): resample the utterances with replacement,
the same utterances for both systems, recompute the corpus-level error rates
``sum(edits) / sum(reference tokens)`` and the relative change
``(E_baseline - E_system) / E_baseline`` (positive: the system is better), and read the 2.5th
and 97.5th percentiles of that change over the resamples.

With several seeds (one downstream trained per seed, every one scored on the same utterances),
each resample also draws the seeds of each system with replacement, independently for the two
systems (a seed is not a shared trial the way an utterance is), and the error rate of a system
is the mean over its drawn seeds, as the table's is the mean over its seeds.

With one seed per system, :func:`paired_bootstrap_change` draws its resamples exactly as
``scipy.stats.bootstrap(..., paired=True, method="percentile")`` does with the same generator,
so the two give the same interval (``tests/test_bootstrap.py`` holds it to that).
"""

from __future__ import annotations

import numpy as np


def _as_runs(edits) -> np.ndarray:
    array = np.asarray(edits, dtype=np.float64)
    return array[None, :] if array.ndim == 1 else array


def relative_error_change(baseline_edits, system_edits, ref_lengths) -> float | None:
    """Relative change of the seed-mean corpus error rate, positive when the system is better.

    Arguments
    ---------
    baseline_edits, system_edits : array-like
        ``(utterances,)`` edit counts, or ``(seeds, utterances)``.
    ref_lengths : array-like
        ``(utterances,)`` reference token counts.

    Returns
    -------
    float or None
        ``(E_b - E_s) / E_b``; ``None`` when the baseline makes no error.

    Example
    -------
    >>> round(relative_error_change([4, 2], [2, 2], [10, 10]), 4)
    0.3333
    >>> round(relative_error_change([[4, 2], [2, 2]], [[2, 2], [2, 2]], [10, 10]), 4)  # 2 seeds
    0.2
    """
    refs = float(np.sum(ref_lengths))
    base = _as_runs(baseline_edits).sum(axis=1).mean() / refs
    system = _as_runs(system_edits).sum(axis=1).mean() / refs
    if base == 0:
        return None
    return float((base - system) / base)


def paired_bootstrap_change(
    baseline_edits,
    system_edits,
    ref_lengths,
    n_resamples: int = 9999,
    confidence_level: float = 0.95,
    rng=None,
    batch: int | None = None,
) -> dict:
    """Percentile bootstrap interval of :func:`relative_error_change`, utterances paired.

    Arguments
    ---------
    baseline_edits, system_edits : array-like
        Per-utterance edit counts, ``(utterances,)`` or ``(seeds, utterances)``; the columns
        are the same utterances in the same order for both systems.
    ref_lengths : array-like
        ``(utterances,)`` reference token counts.
    n_resamples : int
        Bootstrap resamples.
    confidence_level : float
        Two-sided level of the interval.
    rng : numpy.random.Generator or int, optional
        Random generator (or its seed).
    batch : int, optional
        Resamples drawn per step (memory ``seeds x batch x utterances``); ``None``: all at once
        (as scipy with ``batch=None``).

    Returns
    -------
    dict
        ``change`` (on all utterances and seeds), ``low``, ``high``, ``contains_zero``,
        ``confidence_level``, ``n_resamples``, ``utterances``, ``baseline_seeds``,
        ``system_seeds``; ``change``/``low``/``high`` are ``None`` when the baseline makes no
        error.

    Example
    -------
    >>> ci = paired_bootstrap_change([4, 2], [2, 2], [10, 10], rng=0)
    >>> ci["low"], round(ci["change"], 4), ci["high"], ci["contains_zero"]
    (0.0, 0.3333, 0.5, True)
    """
    base = _as_runs(baseline_edits)
    system = _as_runs(system_edits)
    refs = np.asarray(ref_lengths, dtype=np.float64)
    n = refs.shape[0]
    if base.shape[1] != n or system.shape[1] != n:
        raise ValueError(
            f"edit counts cover {base.shape[1]} and {system.shape[1]} utterances but there are "
            f"{n} reference lengths: score both systems on the same utterances"
        )
    if n == 0:
        raise ValueError("paired_bootstrap_change needs at least one utterance")
    rng = np.random.default_rng(rng)
    result = {
        "change": relative_error_change(base, system, refs),
        "low": None,
        "high": None,
        "contains_zero": None,
        "confidence_level": float(confidence_level),
        "n_resamples": int(n_resamples),
        "utterances": int(n),
        "baseline_seeds": int(base.shape[0]),
        "system_seeds": int(system.shape[0]),
    }
    if result["change"] is None:
        return result
    step = int(batch or n_resamples)
    changes = []
    for start in range(0, n_resamples, step):
        size = min(step, n_resamples - start)
        index = rng.integers(0, n, (size, n))  # as scipy's _bootstrap_resample draws them
        ref_sum = refs[index].sum(axis=1)
        rates = []
        for runs in (base, system):
            per_seed = runs[:, index].sum(axis=2) / ref_sum  # (seeds, size)
            if runs.shape[0] > 1:
                seeds = rng.integers(0, runs.shape[0], (size, runs.shape[0]))
                per_seed = per_seed[seeds.T, np.arange(size)]
            rates.append(per_seed.mean(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            changes.append((rates[0] - rates[1]) / rates[0])
    changes = np.concatenate(changes)
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(changes, [alpha, 1.0 - alpha])
    if not (np.isfinite(low) and np.isfinite(high)):
        return result  # resamples where the baseline makes no error: no interval
    result.update(low=float(low), high=float(high), contains_zero=bool(low <= 0.0 <= high))
    return result
