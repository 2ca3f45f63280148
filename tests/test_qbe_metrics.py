"""QUESST 2014 metrics (ATWV/MTWV, Cnxe/minCnxe) on hand-computed cases and the file readers.

Constants: QUESST's score-TWV-Cnxe.sh (P_target 0.0008, C_miss 100, C_fa 1), beta = 12.49.
"""

import math

import numpy as np
import pytest

from lasersb.metrics.qbe import (
    QbEGroundTruth,
    cnxe,
    effective_prior,
    min_cnxe,
    qbe_metrics,
    score_stdlist,
    twv_beta,
)

BETA = 0.9992 / 0.08  # C_fa (1 - P) / (C_miss P)

# q1 occurs in d1 and d2, q2 in d3, q3 nowhere (dropped by the tool); 5 documents
TRUTH = QbEGroundTruth(
    ["q1", "q2", "q3"], ["d1", "d2", "d3", "d4", "d5"], {("q1", "d1"), ("q1", "d2"), ("q2", "d3")}
)
SCORES = {
    ("q1", "d1"): 3.0,
    ("q1", "d2"): 1.0,
    ("q1", "d3"): 2.0,
    ("q1", "d4"): 0.0,
    ("q1", "d5"): -1.0,
    ("q2", "d1"): 0.5,
    ("q2", "d2"): -2.0,
    ("q2", "d3"): 4.0,
    ("q2", "d4"): -3.0,  # (q2, d5) missing: default score -10
    ("q3", "d1"): 9.0,
}


def test_constants():
    assert twv_beta() == pytest.approx(BETA) and round(twv_beta(), 2) == 12.49
    assert effective_prior() == pytest.approx(0.08 / (0.08 + 0.9992))


def test_twv_by_hand():
    # threshold 4: q1 no YES (P_miss 1), q2 hit -> 1 - (1 + 0) / 2 = 0.5
    # threshold 3: q1 hits d1 (P_miss 1/2)    -> 1 - (0.5 + 0) / 2 = 0.75   <- the maximum
    # threshold 2: q1 false alarm d3 (P_fa 1/3) -> 1 - (0.5 + beta / 3) / 2 < 0
    # ATWV with YES = {q1 d1, q1 d3, q2 d3} -> 1 - (0.5 + beta / 3 + 0) / 2
    res = qbe_metrics(SCORES, TRUTH, decisions={("q1", "d1"), ("q1", "d3"), ("q2", "d3")})
    assert res["mtwv"] == pytest.approx(0.75)
    assert res["mtwv_threshold"] == 3.0
    assert res["atwv"] == pytest.approx(1 - (0.5 + BETA / 3) / 2)
    assert (res["queries"], res["documents"], res["trials"], res["targets"]) == (2, 5, 10, 3)
    assert res["scored_trials"] == 9


def test_mtwv_is_zero_when_every_yes_costs():
    scores = {("q1", f"d{i}"): float(i) for i in range(1, 6)}  # targets scored lowest
    assert qbe_metrics(scores, TRUTH)["mtwv"] == 0.0


def _cnxe_by_hand(scores, labels, p):
    logit = math.log(p / (1 - p))
    tar = [-math.log2(1 / (1 + math.exp(-(s + logit)))) for s, y in zip(scores, labels) if y]
    non = [
        -math.log2(1 - 1 / (1 + math.exp(-(s + logit)))) for s, y in zip(scores, labels) if not y
    ]
    cxe = p * sum(tar) / len(tar) + (1 - p) * sum(non) / len(non)
    return cxe / -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_cnxe_by_hand():
    res = qbe_metrics(SCORES, TRUTH)
    trials = [(q, d) for q in ("q1", "q2") for d in TRUTH.documents]
    s = [SCORES.get(t, -10.0) for t in trials]
    y = [t in TRUTH.targets for t in trials]
    assert res["act_cnxe"] == pytest.approx(_cnxe_by_hand(s, y, effective_prior()), rel=1e-12)


def test_cnxe_reference_points():
    y = np.array([True, False, False, True, False])
    p = effective_prior()
    assert cnxe(np.zeros(5), y, p) == pytest.approx(1.0)  # uninformative: Cnxe = 1
    separated = np.where(y, 30.0, -30.0)
    assert cnxe(separated, y, p) < 1e-6 and min_cnxe(separated, y, p) == 0.0
    s = np.array([0.3, -0.2, 0.5, -0.1, 0.0])  # overlapping scores
    assert 0.0 < min_cnxe(s, y, p) <= min(1.0, cnxe(s, y, p))
    # minCnxe only depends on the order of the scores
    assert min_cnxe(np.exp(3 * s), y, p) == pytest.approx(min_cnxe(s, y, p))


def test_score_stdlist_from_official_files(tmp_path):
    gt = tmp_path / "groundtruth_quesst14_dev"
    gt.mkdir()
    (gt / "quesst14.ecf.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<ecf source_signal_duration="10" version="1">\n'
        + "".join(
            f'<excerpt audio_filename="Audio/{d}.wav" channel="1" tbeg="0.000" dur="2.0" '
            'source_type="splitcts"/>\n'
            for d in TRUTH.documents
        )
        + "</ecf>\n"
    )
    (gt / "quesst14_dev.tlist.xml").write_text(
        '<termlist ecf_filename="quesst14.ecf.xml" version="1">\n'
        + "".join(f'<term termid="{q}"><termtext>{q}</termtext></term>\n' for q in TRUTH.queries)
        + "</termlist>\n"
    )
    (gt / "quesst14_dev.rttm").write_text(
        "".join(f"LEXEME {d} 1 0.50 0.40 {q} lex {q} 1.0\n" for q, d in sorted(TRUTH.targets))
    )
    from lasersb.qbe import write_stdlist

    queries = ["q1", "q2", "q3"]
    matrix = np.array([[SCORES.get((q, d), np.nan) for d in TRUTH.documents] for q in queries])
    matrix[1, 4] = -10.0  # what the tool would use for the missing trial
    write_stdlist(tmp_path / "sys" / "benchmark.stdlist.xml", queries, TRUTH.documents, matrix)
    res = score_stdlist(tmp_path / "sys" / "benchmark.stdlist.xml", gt)
    assert res["mtwv"] == pytest.approx(0.75) and res["targets"] == 3
    # decisions are score > 2.0: q1 d1, q2 d3 -> 1 - (0.5 + 0) / 2
    assert res["atwv"] == pytest.approx(0.75)


def test_missing_ground_truth_file_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\*\.ecf\.xml"):
        QbEGroundTruth.from_folder(tmp_path)
