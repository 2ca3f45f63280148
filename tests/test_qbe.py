"""The QbE scoring pipeline against s3prl's per-pair protocol (scipy cdist + dtw-python)."""

import numpy as np
import pytest
import torch
from conftest import require_oracle
from scipy.spatial import distance

from lasersb.metrics.qbe import read_stdlist
from lasersb.qbe import (
    frame_distances,
    qbe_scores,
    standardise_features,
    standardise_scores,
    write_stdlist,
)

dtw_python = require_oracle("dtw")  # the reference (requirements-dev.txt)


def _s3prl_match(query, doc, method):
    """s3prl quesst14_dtw ``match``: distance, per-row min-max, subsequence DTW, -cost."""
    dist = distance.cdist(query, doc, "cosine" if method.startswith("cosine") else method)
    if method == "cosine_exp":
        dist = np.exp(dist) - 1
    lo, hi = dist.min(1)[:, None], dist.max(1)[:, None]
    dist = (dist - lo) / np.clip(hi - lo, 1e-9, np.inf)
    res = dtw_python.dtw(
        dist, step_pattern="asymmetric", open_begin=True, open_end=True, keep_internals=False
    )
    return -res.normalizedDistance


@pytest.mark.parametrize("method", ["cosine_exp", "cosine", "euclidean"])
def test_scores_equal_s3prl_protocol(method):
    rng = np.random.default_rng(0)
    feats = [torch.from_numpy(rng.standard_normal((int(n), 6))) for n in rng.integers(3, 60, 11)]
    feats = standardise_features(feats)
    queries, docs = feats[:3], feats[3:]
    # a small max_cells forces several document batches per query
    ours = qbe_scores(queries, docs, distance=method, max_cells=2000)
    for qi, q in enumerate(queries):
        for di, d in enumerate(docs):
            want = 0.0 if len(q) < 5 else _s3prl_match(q.numpy(), d.numpy(), method)
            assert abs(ours[qi, di] - want) < 1e-6, (qi, di)


def test_feature_standardisation_is_s3prls():
    feats = [torch.randn(5, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)]
    frames = torch.cat(feats)
    want = (frames - frames.mean(0)) / frames.std(0)
    assert torch.allclose(torch.cat(standardise_features(feats)), want)


def test_short_queries_score_zero_and_standardise_to_zero():
    docs = [torch.randn(20, 4, dtype=torch.float64) for _ in range(4)]
    scores = qbe_scores([torch.randn(4, 4, dtype=torch.float64)], docs)
    assert (scores == 0).all() and (standardise_scores(scores) == 0).all()


def test_padding_does_not_change_distances():
    q = torch.randn(5, 3, dtype=torch.float64)
    d = torch.randn(2, 7, 3, dtype=torch.float64)
    d[1, 4:] = 0.0  # padding of a 4-frame document
    full = frame_distances(q, d[1:, :4])
    assert torch.allclose(frame_distances(q, d)[1:, :, :4], full)


def test_stdlist_round_trip(tmp_path):
    scores = np.array([[2.5, -1.0, 2.0], [0.1, 3.0, -2.0]])
    path = tmp_path / "benchmark.stdlist.xml"
    write_stdlist(path, ["q1", "q2"], ["d1", "d2", "d3"], scores)
    read, yes = read_stdlist(path)
    assert read[("q2", "d2")] == 3.0 and len(read) == 6
    assert yes == {("q1", "d1"), ("q2", "d2")}  # strictly above 2.0, as s3prl
