"""Utterance-classification metrics: UA/WA (emotion recognition), F1 (Alzheimer's detection).

Conventions of the speech-emotion literature (IEMOCAP):

- **WA** (weighted accuracy) is the overall accuracy: correct / total, so frequent classes
  weigh more.
- **UA** (unweighted accuracy) is the mean of the per-class recalls over the classes present in
  the references (balanced accuracy), so every class weighs the same.

For binary detection (ADReSS: control ``cc`` = 0, dementia ``cd`` = 1) the F1 of the positive
class is reported with its precision and recall, plus the macro F1 over both classes.
:func:`classification_report` gathers everything for one evaluation, and
:func:`summarise_folds` / :func:`folds_markdown_table` aggregate cross-validation folds
(mean and standard deviation); :func:`aggregate_posteriors` averages utterance posteriors per
group (e.g. the chunks of one ADReSS subject) before scoring.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as sk_metrics

__all__ = [
    "confusion_matrix",
    "weighted_accuracy",
    "unweighted_accuracy",
    "precision_recall_f1",
    "f1_score",
    "macro_f1",
    "classification_report",
    "summarise_folds",
    "folds_markdown_table",
    "aggregate_posteriors",
]


def _as_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError(f"{name} must hold non-negative integer class indices")
    return array.astype(np.int64)


def confusion_matrix(targets, predictions, num_classes: int | None = None) -> np.ndarray:
    """Count matrix ``C[i, j]``: utterances of reference class ``i`` predicted as ``j``.

    Arguments
    ---------
    targets, predictions : sequence of int
        Reference and predicted class indices (same length).
    num_classes : int, optional
        Number of classes (default: the largest index seen + 1).

    Returns
    -------
    numpy.ndarray
        ``(num_classes, num_classes)`` int64 counts; rows are references.

    Example
    -------
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2]).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    """
    targets = _as_labels(targets, "targets")
    predictions = _as_labels(predictions, "predictions")
    if targets.shape != predictions.shape:
        raise ValueError(
            f"targets and predictions differ in length: {targets.size} vs {predictions.size}"
        )
    seen = int(max(targets.max(initial=-1), predictions.max(initial=-1))) + 1
    num_classes = seen if num_classes is None else int(num_classes)
    if seen > num_classes:
        raise ValueError(f"class index {seen - 1} out of range for num_classes={num_classes}")
    labels = np.arange(num_classes)
    return sk_metrics.confusion_matrix(targets, predictions, labels=labels).astype(np.int64)


def weighted_accuracy(targets, predictions) -> float:
    """Overall accuracy (WA): the fraction of correctly classified utterances.

    Example
    -------
    >>> weighted_accuracy([0, 0, 0, 1], [0, 0, 0, 0])
    0.75
    """
    targets = _as_labels(targets, "targets")
    predictions = _as_labels(predictions, "predictions")
    confusion_matrix(targets, predictions)  # checks the lengths
    return float(sk_metrics.accuracy_score(targets, predictions)) if targets.size else float("nan")


def unweighted_accuracy(targets, predictions, num_classes: int | None = None) -> float:
    """Mean per-class recall (UA) over the classes that occur in ``targets``.

    Example
    -------
    >>> unweighted_accuracy([0, 0, 0, 1], [0, 0, 0, 0])
    0.5
    """
    targets = _as_labels(targets, "targets")
    predictions = _as_labels(predictions, "predictions")
    confusion_matrix(targets, predictions, num_classes)  # checks lengths and indices
    if not targets.size:
        return float("nan")
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected here
        warnings.simplefilter("ignore", UserWarning)
        return float(sk_metrics.balanced_accuracy_score(targets, predictions))


def precision_recall_f1(targets, predictions, positive: int = 1) -> tuple[float, float, float]:
    """Precision, recall and F1 of class ``positive`` (0 where undefined, as scikit-learn).

    Kept instead of ``sklearn.metrics.precision_recall_fscore_support``: its F1,
    ``2tp / (2tp + fp + fn)``, differs from our ``2PR / (P + R)`` in the last bit (up to 1.1e-16,
    535 of 2,000 random cases), which would change the published ``results.json``; the values
    agree to 1e-15 (``tests/test_dependency_equivalence.py``).

    Example
    -------
    >>> precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0])
    (0.5, 0.5, 0.5)
    """
    targets = _as_labels(targets, "targets")
    predictions = _as_labels(predictions, "predictions")
    if targets.shape != predictions.shape:
        raise ValueError(
            f"targets and predictions differ in length: {targets.size} vs {predictions.size}"
        )
    tp = int(((predictions == positive) & (targets == positive)).sum())
    fp = int(((predictions == positive) & (targets != positive)).sum())
    fn = int(((predictions != positive) & (targets == positive)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def f1_score(targets, predictions, positive: int = 1) -> float:
    """Binary F1 of class ``positive``.

    Example
    -------
    >>> round(f1_score([1, 1, 1, 0], [1, 1, 0, 0]), 4)
    0.8
    """
    return precision_recall_f1(targets, predictions, positive)[2]


def macro_f1(targets, predictions, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 over the classes present in references or predictions.

    Example
    -------
    >>> round(macro_f1([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.7333
    """
    matrix = confusion_matrix(targets, predictions, num_classes)
    classes = np.flatnonzero((matrix.sum(axis=0) + matrix.sum(axis=1)) > 0)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([f1_score(targets, predictions, int(c)) for c in classes]))


def classification_report(targets, predictions, classes, positive: int | None = None) -> dict:
    """All metrics of one evaluation as a JSON-friendly dict.

    Arguments
    ---------
    targets, predictions : sequence of int
        Reference and predicted class indices.
    classes : sequence of str
        Class names, index order.
    positive : int, optional
        Positive class of the binary precision/recall/F1 (default: 1 for two classes, none
        otherwise).

    Returns
    -------
    dict
        ``num_utterances``, ``wa``, ``ua``, ``accuracy`` (= ``wa``), ``macro_f1``,
        ``per_class`` (``{name: {"precision", "recall", "f1", "support"}}``),
        ``confusion_matrix`` (rows: references) and ``classes``; with a positive class also
        ``precision``, ``recall`` and ``f1``.

    Example
    -------
    >>> report = classification_report([0, 1, 1, 0], [0, 1, 0, 0], ["cc", "cd"])
    >>> report["accuracy"], round(report["ua"], 3), round(report["f1"], 3)
    (0.75, 0.75, 0.667)
    """
    classes = [str(c) for c in classes]
    matrix = confusion_matrix(targets, predictions, len(classes))
    if positive is None and len(classes) == 2:
        positive = 1
    report = {
        "num_utterances": int(matrix.sum()),
        "wa": weighted_accuracy(targets, predictions),
        "ua": unweighted_accuracy(targets, predictions, len(classes)),
        "macro_f1": macro_f1(targets, predictions, len(classes)),
        "classes": classes,
        "confusion_matrix": matrix.tolist(),
    }
    report["accuracy"] = report["wa"]
    report["per_class"] = {}
    for index, name in enumerate(classes):
        p, r, f = precision_recall_f1(targets, predictions, index)
        report["per_class"][name] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": int(matrix[index].sum()),
        }
    if positive is not None:
        p, r, f = precision_recall_f1(targets, predictions, int(positive))
        report.update({"positive_class": classes[int(positive)], "precision": p, "recall": r})
        report["f1"] = f
    return report


def summarise_folds(reports, keys=("ua", "wa")) -> dict:
    """Mean and (population) standard deviation of metrics over folds or seeds.

    Arguments
    ---------
    reports : sequence of dict
        One report per fold (e.g. from :func:`classification_report`).
    keys : sequence of str
        Metrics to summarise.

    Returns
    -------
    dict
        ``{key: {"mean", "std", "values"}}`` plus ``num_folds``.

    Example
    -------
    >>> summary = summarise_folds([{"ua": 0.5, "wa": 0.6}, {"ua": 0.7, "wa": 0.6}])
    >>> round(summary["ua"]["mean"], 3), round(summary["ua"]["std"], 3), summary["num_folds"]
    (0.6, 0.1, 2)
    """
    reports = list(reports)
    if not reports:
        raise ValueError("summarise_folds needs at least one report")
    summary = {"num_folds": len(reports)}
    for key in keys:
        values = [float(r[key]) for r in reports]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        summary[key] = {"mean": mean, "std": std, "values": values}
    return summary


def folds_markdown_table(reports, fold_names=None, keys=("ua", "wa"), percent=True) -> str:
    """Markdown table with one row per fold and a final ``mean ± std`` row.

    Example
    -------
    >>> print(folds_markdown_table([{"ua": 0.5, "wa": 0.6}, {"ua": 0.7, "wa": 0.6}]))
    | Fold | UA (%) | WA (%) |
    |---|---|---|
    | 1 | 50.00 | 60.00 |
    | 2 | 70.00 | 60.00 |
    | mean ± std | 60.00 ± 10.00 | 60.00 ± 0.00 |
    """
    reports = list(reports)
    fold_names = list(fold_names or [str(i + 1) for i in range(len(reports))])
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    header = "| Fold | " + " | ".join(f"{k.upper()}{unit}" for k in keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, report in zip(fold_names, reports):
        cells = " | ".join(f"{scale * float(report[k]):.2f}" for k in keys)
        lines.append(f"| {name} | {cells} |")
    summary = summarise_folds(reports, keys)
    cells = " | ".join(
        f"{scale * summary[k]['mean']:.2f} ± {scale * summary[k]['std']:.2f}" for k in keys
    )
    lines.append(f"| mean ± std | {cells} |")
    return "\n".join(lines)


def aggregate_posteriors(predictions: dict, groups: dict) -> dict:
    """Average utterance posteriors per group (e.g. the ADReSS chunks of one subject).

    Arguments
    ---------
    predictions : dict
        ``{"ids": [...], "targets": [...], "probs": [[...], ...]}`` as produced by
        :meth:`lasersb.brains.embedding_classifier.EmbeddingClassifierBrain.evaluate`
        (``brain.test_predictions``).
    groups : dict
        ``{utterance id: group id}``; utterances missing from it are their own group.

    Returns
    -------
    dict
        The same structure with one entry per group (the group's target is that of its first
        utterance; all utterances of a group must share it).

    Example
    -------
    >>> preds = {"ids": ["a-0", "a-1", "b-0"], "targets": [1, 1, 0],
    ...          "probs": [[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]}
    >>> out = aggregate_posteriors(preds, {"a-0": "a", "a-1": "a", "b-0": "b"})
    >>> out["ids"], out["targets"], [[round(p, 2) for p in row] for row in out["probs"]]
    (['a', 'b'], [1, 0], [[0.4, 0.6], [0.9, 0.1]])
    """
    order, sums, counts, targets = [], {}, {}, {}
    for uid, target, probs in zip(predictions["ids"], predictions["targets"], predictions["probs"]):
        group = groups.get(uid, uid)
        if group not in sums:
            order.append(group)
            sums[group] = [0.0] * len(probs)
            counts[group] = 0
            targets[group] = int(target)
        elif targets[group] != int(target):
            raise ValueError(f"Utterances of group {group!r} have different targets.")
        sums[group] = [s + float(p) for s, p in zip(sums[group], probs)]
        counts[group] += 1
    return {
        "ids": order,
        "targets": [targets[g] for g in order],
        "probs": [[s / counts[g] for s in sums[g]] for g in order],
    }
