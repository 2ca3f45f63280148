"""Speaker-verification metrics and scoring: EER, normalised minDCF, DET plot, cosine + s-norm.

Conventions (NIST SRE / Kaldi): a trial is accepted when ``score >= threshold``;
``P_miss(t)`` is the fraction of target trials with a score below ``t`` and ``P_fa(t)`` the
fraction of non-target trials at or above ``t``. The rates are evaluated at every distinct score
and at ``+inf`` (reject everything), which traces the full detection error trade-off (DET).

- EER: the point where the piecewise-linear curve between consecutive operating points
  ``(P_fa, P_miss)`` crosses ``P_miss = P_fa``.
- minDCF: ``min_t C_miss P_miss(t) p + C_fa P_fa(t) (1 - p)`` divided by
  ``min(C_miss p, C_fa (1 - p))`` (the cost of the best trivial system), as in the
  VoxSRC/NIST normalised minDCF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _as_numpy(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contain non-finite values")
    return array


def _split(scores, labels):
    scores = _as_numpy(scores, "scores")
    labels = _as_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    targets, nontargets = scores[labels == 1], scores[labels == 0]
    if targets.size == 0 or nontargets.size == 0:
        raise ValueError(
            f"Need both target and non-target trials, got {targets.size} targets and "
            f"{nontargets.size} non-targets: check the trial list."
        )
    return targets, nontargets


def error_rates(scores, labels):
    """Miss and false-alarm rates at every distinct score and at ``+inf``.

    Arguments
    ---------
    scores : array-like
        Trial scores (higher = more likely the same speaker).
    labels : array-like
        1 for target trials, 0 for non-target trials.

    Returns
    -------
    p_miss, p_fa, thresholds : np.ndarray
        Rates for ``score >= threshold`` decisions, thresholds increasing (the last is inf):
        ``p_miss`` increases and ``p_fa`` decreases along the arrays.

    Example
    -------
    >>> p_miss, p_fa, thr = error_rates([0.9, 0.1, 0.5], [1, 0, 0])
    >>> p_miss.tolist(), p_fa.tolist(), thr.tolist()
    ([0.0, 0.0, 0.0, 1.0], [1.0, 0.5, 0.0, 0.0], [0.1, 0.5, 0.9, inf])
    """
    targets, nontargets = _split(scores, labels)
    thresholds = np.unique(np.concatenate([targets, nontargets]))
    thresholds = np.append(thresholds, np.inf)
    targets.sort()
    nontargets.sort()
    # targets strictly below t are misses; non-targets at or above t are false alarms.
    p_miss = np.searchsorted(targets, thresholds, side="left") / targets.size
    p_fa = 1.0 - np.searchsorted(nontargets, thresholds, side="left") / nontargets.size
    return p_miss, p_fa, thresholds


def compute_eer(scores, labels):
    """Equal error rate and the threshold where it is reached.

    Kept instead of ``speechbrain.utils.metric_stats.EER``, which compares every score with
    every threshold: 1.97 s against 5 ms on 22,000 trials, with memory quadratic in the trials
    (VoxCeleb1-H has 550,000); it averages the two error rates at the closest threshold where
    we interpolate the crossing, so the two agree within one trial's step
    (``tests/test_dependency_equivalence.py``).

    Arguments
    ---------
    scores : array-like
        Trial scores.
    labels : array-like
        1 for target trials, 0 for non-target trials.

    Returns
    -------
    eer : float
        Equal error rate in [0, 1] (linear interpolation between operating points).
    threshold : float
        Score threshold of the operating point closest to the crossing.

    Example
    -------
    >>> eer, thr = compute_eer([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1], [1, 1, 1, 1, 0, 0, 0, 0])
    >>> eer, thr
    (0.25, 0.6)
    """
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    diff = p_miss - p_fa  # increases from -1 to +1
    index = int(np.argmax(diff >= 0))  # first operating point with p_miss >= p_fa
    if diff[index] == 0 or index == 0:
        return float(p_miss[index]), float(thresholds[index])
    # Cross between point index-1 (p_miss < p_fa) and point index (p_miss >= p_fa).
    d0, d1 = diff[index - 1], diff[index]
    alpha = d0 / (d0 - d1)
    eer = p_miss[index - 1] + alpha * (p_miss[index] - p_miss[index - 1])
    closest = index if abs(d1) <= abs(d0) else index - 1
    return float(eer), float(thresholds[closest])


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost and its threshold.

    Kept instead of ``speechbrain.utils.metric_stats.minDCF``: quadratic like its ``EER``, in
    float32 and not normalised; divided by ``min(c_miss p, c_fa (1 - p))`` the values agree
    (``tests/test_dependency_equivalence.py``).

    Arguments
    ---------
    scores : array-like
        Trial scores.
    labels : array-like
        1 for target trials, 0 for non-target trials.
    p_target : float
        Prior of a target trial (0.01 and 0.05 in VoxSRC).
    c_miss, c_fa : float
        Costs of a miss and a false alarm.

    Returns
    -------
    min_dcf : float
        ``min_t DCF(t) / min(c_miss * p_target, c_fa * (1 - p_target))``; 1.0 is the cost of
        always accepting or always rejecting, whichever is cheaper.
    threshold : float
        The minimising threshold (``inf`` means reject every trial).

    Example
    -------
    >>> s, l = [0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1], [1, 1, 1, 1, 0, 0, 0, 0]
    >>> compute_min_dcf(s, l, p_target=0.01)
    (0.25, 0.7)
    >>> compute_min_dcf(s, l, p_target=0.99)
    (0.5, 0.3)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    # An implicit -inf threshold (accept everything) is the first point's p_miss=0, p_fa=1 when
    # the lowest score is a non-target; add it so the trivial systems are always candidates.
    dcf = np.append(dcf, c_fa * (1.0 - p_target))
    thresholds = np.append(thresholds, -np.inf)
    index = int(np.argmin(dcf))
    c_default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[index] / c_default), float(thresholds[index])


def verification_metrics(scores, labels, p_targets=(0.01, 0.05)) -> dict:
    """EER (%) and normalised minDCF at each ``p_target``, with counts.

    Example
    -------
    >>> m = verification_metrics([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1],
    ...                          [1, 1, 1, 1, 0, 0, 0, 0])
    >>> m["EER"], m["minDCF@0.01"], m["trials"], m["targets"]
    (25.0, 0.25, 8, 4)
    """
    eer, threshold = compute_eer(scores, labels)
    labels_np = _as_numpy(labels, "labels")
    metrics = {"EER": 100.0 * eer, "eer_threshold": threshold}
    for p in p_targets:
        metrics[f"minDCF@{p:g}"] = compute_min_dcf(scores, labels, p_target=p)[0]
    metrics["trials"] = int(labels_np.size)
    metrics["targets"] = int(labels_np.sum())
    return metrics


def plot_det(curves, path, title="DET curve"):
    """Save a DET plot (probit-scaled miss vs false-alarm rates) as a PNG.

    Arguments
    ---------
    curves : dict
        ``{name: (scores, labels)}``, one line per system.
    path : str or Path
        Output PNG path.
    title : str
        Plot title.

    Returns
    -------
    Path
        The written file.

    Example
    -------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "det.png"
    >>> plot_det({"sys": ([0.9, 0.2, 0.7, 0.4], [1, 0, 1, 0])}, out).is_file()
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    from statistics import NormalDist

    import matplotlib.pyplot as plt

    probit = np.vectorize(NormalDist().inv_cdf)
    eps = 1e-4

    def warp(p):
        return probit(np.clip(p, eps, 1 - eps))

    fig, ax = plt.subplots(figsize=(5, 5))
    worst = 0.0
    for name, (scores, labels) in curves.items():
        p_miss, p_fa, _ = error_rates(scores, labels)
        eer, _ = compute_eer(scores, labels)
        worst = max(worst, eer)
        ax.plot(warp(p_fa), warp(p_miss), label=f"{name} (EER {100 * eer:.2f}%)")
    # The usual 0.05-50 % window, widened for weak systems (e.g. on the mini corpus).
    high = 0.5 if worst < 0.2 else 0.95
    ticks = np.array([0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9])
    ticks = ticks[ticks < high]
    ax.set_xticks(warp(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(warp(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    lim = warp(np.array([0.0005, high]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.plot(lim, lim, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- scoring
def cosine_score_matrix(enroll: torch.Tensor, test: torch.Tensor, mean=None) -> torch.Tensor:
    """Cosine similarities ``(N, M)`` between two sets of embeddings, after optional centring.

    Example
    -------
    >>> e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> cosine_score_matrix(e, e).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if mean is not None:
        enroll, test = enroll - mean, test - mean
    return F.normalize(enroll.float(), dim=-1) @ F.normalize(test.float(), dim=-1).T


def cosine_scores(enroll: torch.Tensor, test: torch.Tensor, mean=None) -> torch.Tensor:
    """Cosine similarity of each trial pair (row ``i`` of ``enroll`` vs row ``i`` of ``test``).

    Arguments
    ---------
    enroll, test : torch.Tensor
        ``(N, D)`` embeddings of the two sides of ``N`` trials.
    mean : torch.Tensor, optional
        ``(D,)`` mean subtracted first (e.g. of the training embeddings).

    Example
    -------
    >>> cosine_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).tolist()
    [0.7071067690849304]
    """
    if mean is not None:
        enroll, test = enroll - mean, test - mean
    return F.cosine_similarity(enroll.float(), test.float(), dim=-1)


def adaptive_snorm(
    scores: torch.Tensor,
    enroll: torch.Tensor,
    test: torch.Tensor,
    cohort: torch.Tensor,
    top_n: int = 300,
    mean=None,
) -> torch.Tensor:
    """Adaptive symmetric score normalisation (AS-norm) of trial scores.

    Each score is normalised with the mean and standard deviation of the ``top_n`` highest
    cosine scores of the enrolment side against the cohort and, separately, of the test side;
    the two normalised scores are averaged.

    Arguments
    ---------
    scores : torch.Tensor
        ``(N,)`` raw cosine scores of the trials.
    enroll, test : torch.Tensor
        ``(N, D)`` embeddings of the two sides.
    cohort : torch.Tensor
        ``(C, D)`` cohort embeddings (training speakers or utterances).
    top_n : int
        Size of the adaptive cohort (capped at ``C``).
    mean : torch.Tensor, optional
        Mean subtracted before the cosine (as for the trial scores).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> e, t, c = (torch.randn(n, 4, generator=g) for n in (3, 3, 10))
    >>> adaptive_snorm(cosine_scores(e, t), e, t, c, top_n=5).shape
    torch.Size([3])
    """
    top_n = max(2, min(int(top_n), cohort.shape[0]))

    def stats(side):
        top = cosine_score_matrix(side, cohort, mean).topk(top_n, dim=-1).values
        return top.mean(dim=-1), top.std(dim=-1).clamp(min=1e-6)

    mu_e, sd_e = stats(enroll)
    mu_t, sd_t = stats(test)
    return 0.5 * ((scores - mu_e) / sd_e + (scores - mu_t) / sd_t)
