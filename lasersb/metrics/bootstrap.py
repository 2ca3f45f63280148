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

import csv
from pathlib import Path

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


UTTERANCE_ERRORS_HEADER = ("ID", "edits", "ref_tokens")


def write_utterance_errors(details, path) -> Path:
    """Write per-utterance edit counts and reference lengths (the bootstrap's input) as CSV.

    Arguments
    ---------
    details : list of dict
        From :func:`speechbrain.utils.edit_distance.wer_details_by_utterance` (``key``,
        ``num_edits``, ``num_ref_tokens``).
    path : str or Path
        The CSV file (``ID,edits,ref_tokens``; one row per utterance).

    Returns
    -------
    Path

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "u.csv"
    >>> _ = write_utterance_errors([{"key": "u1", "num_edits": 2, "num_ref_tokens": 7}], f)
    >>> read_utterance_errors(f)
    {'u1': (2, 7)}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(UTTERANCE_ERRORS_HEADER)
        for item in details:
            writer.writerow([item["key"], int(item["num_edits"]), int(item["num_ref_tokens"])])
    return path


def read_utterance_errors(path) -> dict:
    """``{utterance id: (edits, reference tokens)}`` from :func:`write_utterance_errors`'s CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the run predates per-utterance outputs; rerun its evaluation "
            "(train.py ... --test_only) to write it"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != UTTERANCE_ERRORS_HEADER:
            raise ValueError(f"{path}: expected the header {','.join(UTTERANCE_ERRORS_HEADER)}")
        return {row[0]: (int(row[1]), int(row[2])) for row in reader if row}


def aligned_edits(baseline_runs, system_runs):
    """Arrays for :func:`paired_bootstrap_change` from per-seed ``{id: (edits, ref)}`` dicts.

    Arguments
    ---------
    baseline_runs, system_runs : list of dict
        One :func:`read_utterance_errors` dict per seed of each system.

    Returns
    -------
    tuple
        ``(baseline (seeds, n), system (seeds, n), ref_lengths (n,))`` over the utterances in
        sorted id order.

    Example
    -------
    >>> b, s, r = aligned_edits([{"a": (1, 4), "b": (0, 2)}], [{"b": (1, 2), "a": (0, 4)}])
    >>> b.tolist(), s.tolist(), r.tolist()
    ([[1.0, 0.0]], [[0.0, 1.0]], [4.0, 2.0])
    """
    runs = [*baseline_runs, *system_runs]
    ids = sorted(runs[0])
    for run in runs[1:]:
        if set(run) != set(ids):
            missing = sorted(set(ids) ^ set(run))[:5]
            raise ValueError(
                "The runs were not scored on the same utterances (e.g. "
                + ", ".join(missing)
                + "): compare runs of the same test split and manifest"
            )
    refs = np.array([runs[0][i][1] for i in ids], dtype=np.float64)
    for run in runs[1:]:
        if any(run[i][1] != runs[0][i][1] for i in ids):
            raise ValueError("The runs have different reference lengths for the same utterances")
    stack = [
        np.array([[run[i][0] for i in ids] for run in group], dtype=np.float64)
        for group in (baseline_runs, system_runs)
    ]
    return stack[0], stack[1], refs


def write_qbe_trials(path, scores, truth, default_score=-10.0) -> Path:
    """Write a QbE split's per-query trials (the MTWV bootstrap's input) as ``.npz``.

    Arguments
    ---------
    path : str or Path
        The ``.npz`` file.
    scores : dict
        ``(query, document) -> score`` as scored (:func:`lasersb.metrics.qbe.qbe_metrics`).
    truth : lasersb.metrics.qbe.QbEGroundTruth
        The ground truth.
    default_score : float
        Score of unscored trials.

    Returns
    -------
    Path
        Holding ``scores``, ``targets``, ``query_index`` (one entry per trial of the queries
        with an occurrence), ``n_true`` (per query), ``n_docs`` and ``queries`` (their ids).
    """
    from lasersb.metrics.qbe import _trial_arrays

    s, y, qi, _, n_true, _ = _trial_arrays(scores, truth, default_score, None)
    queries = [q for q in truth.queries if any(t[0] == q for t in truth.targets)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, scores=s, targets=y, query_index=qi, n_true=n_true,
        n_docs=len(truth.documents), queries=np.array(queries),
    )  # fmt: skip
    return path


class _ResampledMTWV:
    """MTWV of a system's trials for per-query resample counts (one sort, then cumsums)."""

    def __init__(self, trials, beta):
        s, y, qi = trials["scores"], trials["targets"], trials["query_index"]
        n_true, n_docs = trials["n_true"], float(trials["n_docs"])
        self.n_queries = len(n_true)
        weight = np.where(y, 1.0 / n_true[qi], -beta / (n_docs - n_true[qi]))
        order = np.argsort(-s, kind="stable")
        s_sorted = s[order]
        self.weight, self.query = weight[order], qi[order]
        self.last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]

    def __call__(self, counts):
        """``counts``: ``(B, Q)`` times each query is drawn; returns ``(B,)`` MTWV."""
        w = counts[:, self.query] * self.weight / self.n_queries
        best = np.cumsum(w, axis=1)[:, self.last_of_tie].max(axis=1)
        return np.maximum(best, 0.0)  # no YES at all: TWV 0


def paired_bootstrap_mtwv_change(
    baseline_trials, system_trials, n_resamples=9999, confidence_level=0.95, rng=None, batch=None
) -> dict:
    """Percentile bootstrap interval of the relative MTWV change, queries resampled in pairs.

    MTWV is the best threshold's term-weighted value averaged over queries, so each resample
    draws the queries (the same ones for both systems, as scipy's paired bootstrap draws
    indices) and recomputes both MTWVs; the change is ``(M_system - M_baseline) / M_baseline``
    (positive: the system is better).

    Arguments
    ---------
    baseline_trials, system_trials : Mapping
        :func:`write_qbe_trials` contents (``numpy.load``) of the same split and ground truth.
    n_resamples, confidence_level, rng, batch
        As :func:`paired_bootstrap_change`.

    Returns
    -------
    dict
        ``change``, ``low``, ``high``, ``contains_zero``, ``confidence_level``, ``n_resamples``,
        ``queries``; ``None`` values when the baseline's MTWV is 0.
    """
    from lasersb.metrics.qbe import twv_beta

    queries = [list(t["queries"]) for t in (baseline_trials, system_trials)]
    if queries[0] != queries[1]:
        raise ValueError("The QbE runs were not scored on the same queries: compare one split")
    beta = twv_beta()
    systems = [_ResampledMTWV(t, beta) for t in (baseline_trials, system_trials)]
    q = systems[0].n_queries
    full = [float(m(np.ones((1, q)))[0]) for m in systems]
    result = {
        "change": None if full[0] == 0 else (full[1] - full[0]) / full[0],
        "low": None,
        "high": None,
        "contains_zero": None,
        "confidence_level": float(confidence_level),
        "n_resamples": int(n_resamples),
        "queries": q,
    }
    if result["change"] is None:
        return result
    rng = np.random.default_rng(rng)
    step = int(batch or n_resamples)
    changes = []
    for start in range(0, n_resamples, step):
        size = min(step, n_resamples - start)
        index = rng.integers(0, q, (size, q))  # as scipy's _bootstrap_resample draws them
        counts = np.zeros((size, q))
        np.add.at(counts, (np.arange(size)[:, None], index), 1.0)
        base, system = (m(counts) for m in systems)
        with np.errstate(divide="ignore", invalid="ignore"):
            changes.append((system - base) / base)
    changes = np.concatenate(changes)
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(changes, [alpha, 1.0 - alpha])
    if np.isfinite(low) and np.isfinite(high):
        result.update(low=float(low), high=float(high), contains_zero=bool(low <= 0.0 <= high))
    return result
