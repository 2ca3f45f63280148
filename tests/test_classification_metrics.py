"""UA / WA / F1 / confusion matrix checked against brute-force loops on random labels."""

import random

import numpy as np
import pytest

from lasersb.metrics.classification import (
    classification_report,
    confusion_matrix,
    f1_score,
    folds_markdown_table,
    macro_f1,
    precision_recall_f1,
    summarise_folds,
    unweighted_accuracy,
    weighted_accuracy,
)


def _brute(targets, predictions, num_classes):
    counts = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(targets, predictions):
        counts[t][p] += 1
    correct = sum(t == p for t, p in zip(targets, predictions))
    wa = correct / len(targets)
    recalls = []
    for c in range(num_classes):
        members = [p for t, p in zip(targets, predictions) if t == c]
        if members:
            recalls.append(sum(p == c for p in members) / len(members))
    ua = sum(recalls) / len(recalls)
    f1s = {}
    for c in range(num_classes):
        tp = sum(t == c and p == c for t, p in zip(targets, predictions))
        fp = sum(t != c and p == c for t, p in zip(targets, predictions))
        fn = sum(t == c and p != c for t, p in zip(targets, predictions))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s[c] = (prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    present = [c for c in range(num_classes) if c in targets or c in predictions]
    macro = sum(f1s[c][2] for c in present) / len(present)
    return counts, wa, ua, f1s, macro


@pytest.mark.parametrize("num_classes", [2, 4, 5])
def test_metrics_match_brute_force(num_classes):
    rng = random.Random(num_classes)
    for _trial in range(30):
        n = rng.randint(1, 40)
        # Skewed class priors, so that UA and WA differ; some classes may be absent.
        weights = [rng.random() ** 2 + 0.01 for _ in range(num_classes)]
        targets = rng.choices(range(num_classes), weights, k=n)
        predictions = [t if rng.random() < 0.5 else rng.randrange(num_classes) for t in targets]
        counts, wa, ua, f1s, macro = _brute(targets, predictions, num_classes)
        assert confusion_matrix(targets, predictions, num_classes).tolist() == counts
        assert weighted_accuracy(targets, predictions) == pytest.approx(wa)
        assert unweighted_accuracy(targets, predictions, num_classes) == pytest.approx(ua)
        assert macro_f1(targets, predictions, num_classes) == pytest.approx(macro)
        for c in range(num_classes):
            assert precision_recall_f1(targets, predictions, c) == pytest.approx(f1s[c])
        report = classification_report(targets, predictions, [f"c{i}" for i in range(num_classes)])
        assert report["wa"] == report["accuracy"] == pytest.approx(wa)
        assert report["ua"] == pytest.approx(ua)
        assert sum(map(sum, report["confusion_matrix"])) == n
        if num_classes == 2:
            assert report["f1"] == pytest.approx(f1s[1][2])
            assert report["positive_class"] == "c1"
        else:
            assert "f1" not in report


def test_ua_differs_from_wa_on_imbalanced_data():
    targets = [0] * 9 + [1]
    predictions = [0] * 10  # majority-class guesser
    assert weighted_accuracy(targets, predictions) == pytest.approx(0.9)
    assert unweighted_accuracy(targets, predictions) == pytest.approx(0.5)
    assert f1_score(targets, predictions, positive=1) == 0.0


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5], [0])


def test_fold_summary_and_table():
    reports = [{"ua": u, "wa": w} for u, w in [(0.5, 0.6), (0.7, 0.4), (0.6, 0.5)]]
    summary = summarise_folds(reports)
    assert summary["num_folds"] == 3
    assert summary["ua"]["mean"] == pytest.approx(0.6)
    assert summary["ua"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.6]))
    table = folds_markdown_table(reports, ["S1", "S2", "S3"])
    lines = table.splitlines()
    assert len(lines) == 2 + 3 + 1
    assert lines[2] == "| S1 | 50.00 | 60.00 |"
    assert lines[-1].startswith("| mean ± std | 60.00 ± 8.16 | 50.00 ± 8.16 |")
    with pytest.raises(ValueError):
        summarise_folds([])
