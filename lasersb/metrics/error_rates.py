"""Word and phone error rates (WER/PER) with their insertions, deletions and substitutions.

:class:`ErrorRateTracker` collects reference and hypothesis units (words or phones) per
utterance, scores them with SpeechBrain's Kaldi-compatible edit distance
(:mod:`speechbrain.utils.edit_distance`) and writes:

* a per-utterance hypothesis file (``hyp_<split>.txt``: ``id<TAB>hypothesis``),
* a per-utterance scoring file with alignments (``<metric>_<split>.txt``, SpeechBrain format),
* a JSON summary (``error_rate`` in %, ``insertions``, ``deletions``, ``substitutions``,
  ``num_ref_tokens`` (N), ``num_edits``, sentence error rate, utterance counts).
"""

from __future__ import annotations

import json
from pathlib import Path

from speechbrain.dataio.wer import print_alignments, print_wer_summary
from speechbrain.utils.edit_distance import wer_details_by_utterance, wer_summary

from lasersb.distributed import rank


def character_units(text: str) -> list[str]:
    """Characters of a transcript for CER (spaces count, as ``|``).

    Example
    -------
    >>> character_units("a  cat")
    ['A', '|', 'C', 'A', 'T']
    """
    return list("|".join(str(text).upper().split()))


def error_rate_summary(details_by_utterance, metric: str = "WER") -> dict:
    """Summarise per-utterance edit details into a JSON-serialisable dict.

    Arguments
    ---------
    details_by_utterance : list of dict
        Output of :func:`speechbrain.utils.edit_distance.wer_details_by_utterance`.
    metric : str
        Name of the error rate (``"WER"`` or ``"PER"``), stored under ``metric``.

    Returns
    -------
    dict
        ``metric``, ``error_rate`` (%), ``insertions``, ``deletions``, ``substitutions``,
        ``num_edits``, ``num_ref_tokens``, ``sentence_error_rate`` (%), ``num_utterances``,
        ``num_erroneous_utterances``.

    Example
    -------
    >>> details = wer_details_by_utterance({"u1": ["A", "B", "C"]}, {"u1": ["A", "X"]})
    >>> summary = error_rate_summary(details)
    >>> round(summary["error_rate"], 2), summary["substitutions"], summary["deletions"]
    (66.67, 1, 1)
    """
    if not details_by_utterance:
        raise ValueError("No utterances were scored: the evaluation set is empty")
    raw = wer_summary(details_by_utterance)
    return {
        "metric": metric,
        "error_rate": float(raw["WER"]),
        "insertions": int(raw["insertions"]),
        "deletions": int(raw["deletions"]),
        "substitutions": int(raw["substitutions"]),
        "num_edits": int(raw["num_edits"]),
        "num_ref_tokens": int(raw["num_scored_tokens"]),
        "sentence_error_rate": float(raw["SER"]),
        "num_utterances": int(raw["num_scored_sents"]),
        "num_erroneous_utterances": int(raw["num_erroneous_sents"]),
    }


def compute_error_rate(refs: dict, hyps: dict, metric: str = "WER") -> dict:
    """Error-rate summary of hypotheses against references, both ``{id: list of units}``.

    Example
    -------
    >>> compute_error_rate({"u": ["AH", "B"]}, {"u": ["AH", "B", "K"]}, "PER")["insertions"]
    1
    """
    missing = [key for key in refs if key not in hyps]
    if missing:
        raise KeyError(f"No hypothesis for utterance(s) {missing[:5]}")
    return error_rate_summary(wer_details_by_utterance(refs, hyps), metric)


class ErrorRateTracker:
    """Accumulate per-utterance references/hypotheses and write the scoring files.

    Arguments
    ---------
    metric : str
        ``"WER"`` (units are words) or ``"PER"`` (units are phones).

    Example
    -------
    >>> tracker = ErrorRateTracker("PER")
    >>> tracker.append(["u1", "u2"], [["K", "AE", "T"], ["D", "AO", "G"]],
    ...                [["K", "AE", "T"], ["D", "G"]])
    >>> round(tracker.summarize()["error_rate"], 2)
    16.67
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> paths = tracker.write(out, "test")
    >>> sorted(p.name for p in paths.values())
    ['hyp_test.txt', 'per_test.json', 'per_test.txt']
    >>> (out / "hyp_test.txt").read_text().splitlines()[1]
    'u2\\tD G'
    """

    def __init__(self, metric: str = "WER"):
        self.metric = str(metric)
        self.clear()

    def clear(self):
        """Forget all utterances."""
        self.refs: dict[str, list[str]] = {}
        self.hyps: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def append(self, ids, refs, hyps):
        """Add a batch of utterances.

        Arguments
        ---------
        ids : Sequence[str]
            Utterance ids.
        refs : Sequence[Sequence[str]]
            Reference units per utterance.
        hyps : Sequence[Sequence[str]]
            Hypothesis units per utterance.
        """
        if not len(ids) == len(refs) == len(hyps):
            raise ValueError(
                f"ids, refs and hyps differ in length: {len(ids)}, {len(refs)}, {len(hyps)}"
            )
        for key, ref, hyp in zip(ids, refs, hyps):
            self.refs[str(key)] = [str(u) for u in ref]
            self.hyps[str(key)] = [str(u) for u in hyp]

    def details(self, compute_alignments: bool = False) -> list[dict]:
        """Per-utterance details (see :func:`wer_details_by_utterance`)."""
        return wer_details_by_utterance(self.refs, self.hyps, compute_alignments=compute_alignments)

    def summarize(self) -> dict:
        """The summary dict of :func:`error_rate_summary`."""
        return error_rate_summary(self.details(), self.metric)

    def write(self, folder, split: str) -> dict:
        """Write the hypothesis, alignment and JSON summary files of one split.

        Arguments
        ---------
        folder : str or Path
            Output folder (created if needed).
        split : str
            Split name used in the file names (``test-clean``...).

        Returns
        -------
        dict
            ``{"hypotheses": Path, "alignments": Path, "summary": Path}``.
        """
        folder = Path(folder)
        details = self.details(compute_alignments=True)
        summary = error_rate_summary(details, self.metric)
        name = self.metric.lower()
        paths = {
            "hypotheses": folder / f"hyp_{split}.txt",
            "alignments": folder / f"{name}_{split}.txt",
            "summary": folder / f"{name}_{split}.json",
        }
        if rank() != 0:  # under DDP every rank holds the same results; rank 0 writes them
            return paths
        folder.mkdir(parents=True, exist_ok=True)
        with open(paths["hypotheses"], "w", encoding="utf-8") as handle:
            for key, hyp in self.hyps.items():
                handle.write(f"{key}\t{' '.join(hyp)}\n")
        with open(paths["alignments"], "w", encoding="utf-8") as handle:
            raw = wer_summary(details)
            print_wer_summary(raw, file=handle)
            print_alignments(details, file=handle)
        paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return paths
