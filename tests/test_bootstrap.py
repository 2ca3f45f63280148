"""The paired bootstrap interval of a relative error-rate change (lasersb.metrics.bootstrap).

Oracle: ``scipy.stats.bootstrap(paired=True, method="percentile")`` on the same per-utterance
numbers with a generator seeded alike gives the same interval; a two-utterance case is worked
out by hand; with several seeds the interval widens with the spread between seeds.
"""

import numpy as np
import pytest
from scipy import stats

from lasersb.metrics.bootstrap import paired_bootstrap_change, relative_error_change


def _corpus(seed, n=60):
    """Per-utterance reference lengths and edit counts of two systems, the second ~10 % better."""
    rng = np.random.default_rng(seed)
    refs = rng.integers(5, 40, n)
    base = rng.binomial(refs, 0.2)
    system = rng.binomial(refs, 0.18)
    return base, system, refs


def _scipy_change(base, system, refs, axis=-1):
    rate_b = base.sum(axis=axis) / refs.sum(axis=axis)
    rate_s = system.sum(axis=axis) / refs.sum(axis=axis)
    return (rate_b - rate_s) / rate_b


@pytest.mark.parametrize("seed, batch", [(0, None), (1, 250), (2, None)])
def test_interval_equals_scipy_paired_percentile(seed, batch):
    base, system, refs = _corpus(seed)
    ours = paired_bootstrap_change(
        base, system, refs, n_resamples=2000, rng=np.random.default_rng(seed), batch=batch
    )
    theirs = stats.bootstrap(
        (base, system, refs), _scipy_change, paired=True, method="percentile",
        n_resamples=2000, batch=batch, rng=np.random.default_rng(seed),
    )  # fmt: skip
    low, high = theirs.confidence_interval
    assert ours["low"] == pytest.approx(low, rel=1e-12, abs=1e-15)
    assert ours["high"] == pytest.approx(high, rel=1e-12, abs=1e-15)
    assert ours["change"] == pytest.approx(_scipy_change(base, system, refs), rel=1e-12)
    assert ours["contains_zero"] == (low <= 0 <= high)
    assert ours["low"] < ours["change"] < ours["high"]


def test_two_utterances_by_hand():
    # Baseline edits [4, 2], system [2, 2], 10 tokens each. The four equally likely resamples:
    # (0, 0): (8 - 4) / 8 = 0.5; (0, 1) and (1, 0): (6 - 4) / 6 = 1/3; (1, 1): (4 - 4) / 4 = 0.
    # Each extreme has probability 1/4 > 2.5 %, so the 95 % interval is exactly [0, 0.5].
    ci = paired_bootstrap_change([4, 2], [2, 2], [10, 10], n_resamples=4000, rng=3)
    assert (ci["low"], ci["high"]) == (0.0, 0.5)
    assert ci["change"] == pytest.approx((6 - 4) / 6)
    assert ci["contains_zero"] is True
    # Same errors on every utterance: no change in any resample.
    same = paired_bootstrap_change([3, 1, 2], [3, 1, 2], [9, 9, 9], n_resamples=100, rng=0)
    assert (same["low"], same["change"], same["high"]) == (0.0, 0.0, 0.0)
    # A baseline without errors has no relative change.
    none = paired_bootstrap_change([0, 0], [1, 0], [5, 5], rng=0)
    assert none["change"] is None and none["low"] is None


def test_seeds_are_resampled_and_widen_the_interval():
    base, system, refs = _corpus(5, n=200)
    one = paired_bootstrap_change(base, system, refs, n_resamples=2000, rng=0)
    # Three seeds of each system that differ from each other by a global offset of errors.
    rng = np.random.default_rng(1)
    noisy_base = np.stack([rng.binomial(refs, p) for p in (0.15, 0.2, 0.25)])
    noisy_system = np.stack([rng.binomial(refs, p) for p in (0.13, 0.18, 0.23)])
    many = paired_bootstrap_change(noisy_base, noisy_system, refs, n_resamples=2000, rng=0)
    assert many["baseline_seeds"] == many["system_seeds"] == 3
    assert many["change"] == pytest.approx(relative_error_change(noisy_base, noisy_system, refs))
    assert many["high"] - many["low"] > 2 * (one["high"] - one["low"])
    # Seeds that agree exactly give the single-seed interval's width (same utterance draws).
    same = paired_bootstrap_change(
        np.stack([base, base]), np.stack([system, system]), refs, n_resamples=2000, rng=0
    )
    assert same["change"] == pytest.approx(one["change"])
    assert same["high"] - same["low"] == pytest.approx(one["high"] - one["low"], rel=0.2)


def test_mismatched_utterances_are_an_error():
    with pytest.raises(ValueError, match="same utterances"):
        paired_bootstrap_change([1, 2, 3], [1, 2], [4, 4, 4])


def _qbe_system(seed, truth):
    """Scores of a QbE system: targets shifted up by ``seed``-dependent noise."""
    rng = np.random.default_rng(seed)
    return {
        (q, d): float(rng.normal(1.5 if (q, d) in truth.targets else 0.0, 1.0))
        for q in truth.queries
        for d in truth.documents
    }


def test_mtwv_interval_equals_scipy_over_queries(tmp_path):
    from lasersb.metrics.bootstrap import paired_bootstrap_mtwv_change, write_qbe_trials
    from lasersb.metrics.qbe import QbEGroundTruth, qbe_metrics

    rng = np.random.default_rng(0)
    queries, docs = [f"q{i}" for i in range(30)], [f"d{j}" for j in range(40)]
    targets = {(q, d) for q in queries for d in docs if rng.random() < 0.08}
    truth = QbEGroundTruth(queries, docs, targets)
    trials = []
    for name, seed in (("base", 1), ("system", 2)):
        scores = _qbe_system(seed, truth)
        path = write_qbe_trials(tmp_path / f"{name}.npz", scores, truth)
        trials.append((dict(np.load(path)), qbe_metrics(scores, truth)["mtwv"]))
    ours = paired_bootstrap_mtwv_change(trials[0][0], trials[1][0], n_resamples=500, rng=7)
    # On all queries: the MTWVs qbe_metrics computes.
    assert ours["change"] == pytest.approx((trials[1][1] - trials[0][1]) / trials[0][1], rel=1e-9)

    def change(index):  # scipy hands over resampled query indices
        values = []
        for data, _ in trials:
            keep = np.isin(data["query_index"], index)  # rebuild the resampled trial set
            counts = np.bincount(index, minlength=len(data["n_true"]))
            s, y, qi = data["scores"], data["targets"], data["query_index"]
            w = np.where(y, 1 / data["n_true"][qi], -12.49 / (40 - data["n_true"][qi]))
            w = w * counts[qi] / len(index)
            order = np.argsort(-s[keep], kind="stable")
            cum = np.cumsum(w[keep][order])
            tie_end = np.r_[s[keep][order][1:] != s[keep][order][:-1], True]
            values.append(max(cum[tie_end].max(), 0.0))
        return (values[1] - values[0]) / values[0]

    theirs = stats.bootstrap(
        (np.arange(len(trials[0][0]["n_true"])),), change, vectorized=False,
        method="percentile", n_resamples=500, rng=np.random.default_rng(7),
    )  # fmt: skip
    low, high = theirs.confidence_interval
    assert ours["low"] == pytest.approx(low, rel=1e-9) and ours["high"] == pytest.approx(high)
    assert ours["contains_zero"] == (low <= 0 <= high)
