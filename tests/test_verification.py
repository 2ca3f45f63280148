"""Speaker-verification metrics and scoring checked against brute-force computations.

EER and normalised minDCF are compared with a loop-over-thresholds implementation written
from the definitions (hand-made score lists with known values, and random lists with ties);
cosine scoring, mean subtraction and adaptive s-norm with per-trial loops; trial-list parsing
and the DET plot file.
"""

import math

import numpy as np
import pytest
import torch

from lasersb.data.speakers import read_trials
from lasersb.metrics.trial_scoring import score_trials
from lasersb.metrics.verification import (
    adaptive_snorm,
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    error_rates,
    plot_det,
    verification_metrics,
)


def brute_force_rates(scores, labels):
    """(threshold, p_miss, p_fa) for accept-if-score>=t at every distinct score and +inf."""
    thresholds = sorted(set(scores)) + [math.inf]
    n_tar = sum(1 for lab in labels if lab == 1)
    n_non = len(labels) - n_tar
    rows = []
    for t in thresholds:
        misses = sum(1 for s, lab in zip(scores, labels) if lab == 1 and s < t)
        fas = sum(1 for s, lab in zip(scores, labels) if lab == 0 and s >= t)
        rows.append((t, misses / n_tar, fas / n_non))
    return rows


def brute_force_eer(scores, labels):
    """Crossing of P_miss = P_fa on the polyline through the operating points."""
    rows = brute_force_rates(scores, labels)
    for (_, m0, f0), (_, m1, f1) in zip(rows, rows[1:]):
        if m0 == f0:
            return m0
        if (m0 - f0) < 0 <= (m1 - f1):
            d0, d1 = m0 - f0, m1 - f1
            alpha = d0 / (d0 - d1)
            return m0 + alpha * (m1 - m0)
    return rows[-1][1]


def brute_force_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    rows = brute_force_rates(scores, labels)
    costs = [c_miss * m * p_target + c_fa * f * (1 - p_target) for _, m, f in rows]
    costs.append(c_fa * (1 - p_target))  # accept everything
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


HAND_SCORES = [0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1]
HAND_LABELS = [1, 1, 1, 1, 0, 0, 0, 0]


def test_hand_made_list_known_values():
    # Worked by hand: at t=0.6 one target (0.3) is missed and one non-target (0.6) accepted.
    eer, threshold = compute_eer(HAND_SCORES, HAND_LABELS)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)
    # p=0.01: best is t=0.7 (P_miss 1/4, P_fa 0): 0.25 * 0.01 / 0.01.
    assert compute_min_dcf(HAND_SCORES, HAND_LABELS, 0.01)[0] == pytest.approx(0.25)
    # p=0.99: best is t=0.3 (P_miss 0, P_fa 2/4): 0.5 * 0.01 / 0.01.
    assert compute_min_dcf(HAND_SCORES, HAND_LABELS, 0.99)[0] == pytest.approx(0.5)
    metrics = verification_metrics(HAND_SCORES, HAND_LABELS)
    assert metrics["EER"] == pytest.approx(25.0)
    assert metrics["minDCF@0.05"] == pytest.approx(0.25)


def test_separable_and_inverted_lists():
    assert compute_eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == 0.0
    assert compute_min_dcf([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 0.01)[0] == 0.0
    assert compute_eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])[0] == pytest.approx(1.0)
    # A useless system never costs more than the best trivial decision (normalised cost 1).
    assert compute_min_dcf([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0], 0.05)[0] == pytest.approx(1.0)


def test_eer_interpolates_between_operating_points():
    scores, labels = [0.9, 0.6, 0.5, 0.4, 0.3, 0.2], [1, 1, 0, 1, 0, 0]
    # Points (p_fa, p_miss): t=0.5 -> (1/3, 1/3): an exact crossing.
    assert compute_eer(scores, labels)[0] == pytest.approx(1 / 3)
    # Targets 0.9 0.6 0.3, non-targets 0.5 0.2: (p_fa, p_miss) goes from (1/2, 1/3) at t=0.5 to
    # (0, 1/3) at t=0.6; the diagonal is crossed in between, at p_fa = p_miss = 1/3.
    scores, labels = [0.9, 0.6, 0.3, 0.5, 0.2], [1, 1, 1, 0, 0]
    assert compute_eer(scores, labels)[0] == pytest.approx(1 / 3)
    assert brute_force_eer(scores, labels) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_lists_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_tar, n_non = int(rng.integers(5, 40)), int(rng.integers(5, 80))
    targets = rng.normal(1.0, 1.0, n_tar).round(1)  # rounding makes ties
    nontargets = rng.normal(0.0, 1.0, n_non).round(1)
    scores = np.concatenate([targets, nontargets]).tolist()
    labels = [1] * n_tar + [0] * n_non
    rows = brute_force_rates(scores, labels)
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    assert thresholds.tolist() == [r[0] for r in rows]
    np.testing.assert_allclose(p_miss, [r[1] for r in rows])
    np.testing.assert_allclose(p_fa, [r[2] for r in rows])
    assert compute_eer(scores, labels)[0] == pytest.approx(brute_force_eer(scores, labels))
    for p in (0.01, 0.05, 0.5):
        for c_miss, c_fa in ((1.0, 1.0), (10.0, 1.0)):
            expected = brute_force_min_dcf(scores, labels, p, c_miss, c_fa)
            got = compute_min_dcf(scores, labels, p, c_miss, c_fa)[0]
            assert got == pytest.approx(expected)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="both target and non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels must be"):
        compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(HAND_SCORES, HAND_LABELS, 0.0)


def test_cosine_mean_and_adaptive_snorm_match_loops():
    g = torch.Generator().manual_seed(0)
    enroll, test, cohort = (torch.randn(n, 6, generator=g) for n in (5, 5, 12))
    mean = cohort.mean(0)
    raw = cosine_scores(enroll, test)
    centred = cosine_scores(enroll, test, mean)
    top_n = 4
    normed = adaptive_snorm(centred, enroll, test, cohort, top_n=top_n, mean=mean)
    for i in range(5):
        e, t = enroll[i], test[i]
        assert raw[i] == pytest.approx(float(e @ t / (e.norm() * t.norm())), abs=1e-6)
        ec, tc = e - mean, t - mean
        s = float(ec @ tc / (ec.norm() * tc.norm()))
        assert centred[i] == pytest.approx(s, abs=1e-6)
        stats = []
        for side in (ec, tc):
            coh = [float(side @ (c - mean) / (side.norm() * (c - mean).norm())) for c in cohort]
            top = sorted(coh, reverse=True)[:top_n]
            stats.append((np.mean(top), np.std(top, ddof=1)))
        expected = 0.5 * ((s - stats[0][0]) / stats[0][1] + (s - stats[1][0]) / stats[1][1])
        assert normed[i] == pytest.approx(expected, abs=1e-4)


def test_trials_scoring_and_det_plot(tmp_path):
    trials_file = tmp_path / "veri_test2.txt"
    trials_file.write_text(
        "1 id1/v/00001.wav id1/w/00002.wav\n0 id1/v/00001.wav id2/x/00001.wav\n"
        "id2/x/00001.wav id2/y/00002.wav target\n"
    )
    trials = read_trials(trials_file)
    assert trials[2] == (1, "id2/x/00001.wav", "id2/y/00002.wav")
    emb = {
        "id1/v/00001.wav": torch.tensor([1.0, 0.0]),
        "id1/w/00002.wav": torch.tensor([0.9, 0.1]),
        "id2/x/00001.wav": torch.tensor([0.0, 1.0]),
        "id2/y/00002.wav": torch.tensor([0.2, 1.0]),
    }
    scores, labels = score_trials(trials, emb)
    assert labels.tolist() == [1, 0, 1]
    assert scores[1] == pytest.approx(0.0) and scores[0] > 0.9
    with pytest.raises(KeyError, match="No embedding"):
        score_trials(trials, {"id1/v/00001.wav": emb["id1/v/00001.wav"]})
    png = plot_det(
        {"toy": (scores, labels), "hand": (HAND_SCORES, HAND_LABELS)}, tmp_path / "d.png"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.txt"
    bad.write_text("1 only_one.wav\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_trials(bad)
    with pytest.raises(FileNotFoundError, match="veri_test2"):
        read_trials(tmp_path / "missing.txt")


def test_label_free_cohort_reads_no_speaker_label(tmp_path):
    """DINO's AS-norm cohort (selection random) works on a manifest without spk_id."""
    from lasersb.data.speakers import cohort_from_manifest

    rows = "".join(f"u{i},1.0,w{i}.wav\n" for i in range(10))
    (tmp_path / "m.csv").write_text("ID,duration,wav\n" + rows)
    cohort = cohort_from_manifest(tmp_path / "m.csv", size=4, seed=3, selection="random")
    assert len(cohort) == 4 and cohort == cohort_from_manifest(
        tmp_path / "m.csv", size=4, seed=3, selection="random"
    )
    with pytest.raises(KeyError):
        cohort_from_manifest(tmp_path / "m.csv", size=4, selection="per_speaker")
