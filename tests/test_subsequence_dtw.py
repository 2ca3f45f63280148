"""Subsequence DTW (asymmetric pattern) against dtw-python, on every backend.

dtw-python is the reference s3prl's ``quesst14_dtw`` uses; the numba and reference backends are
compared with it on random ragged pairs in float64 (all four open-begin/open-end settings), the
Triton kernel under ``TRITON_INTERPRET=1`` in a subprocess (as in test_soft_dtw_triton.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import require_oracle

from lasersb.alignment.subsequence_dtw import subsequence_dtw

dtw_python = require_oracle("dtw")  # the reference (requirements-dev.txt)

SETTINGS = [(True, True), (False, True), (True, False), (False, False)]


def _random_pairs(seed, B=24, n_hi=12, m_hi=40):
    rng = np.random.default_rng(seed)
    ns = rng.integers(1, n_hi, B)
    ms = rng.integers(1, m_hi, B)
    ms[::2] = np.minimum(ms[::2], 2 * ns[::2] - 1)  # a closed begin and end needs M <= 2N - 1
    D = torch.from_numpy(rng.random((B, ns.max(), ms.max())) * 3.0)
    return D, ns, ms


def _dtw_python(lm, open_begin, open_end):
    """dtw-python's (normalizedDistance, jmin), (inf, -1) where it finds no path."""
    try:
        r = dtw_python.dtw(lm, step_pattern="asymmetric", open_begin=open_begin, open_end=open_end)
    except ValueError:
        return np.inf, -1
    return r.normalizedDistance, int(r.jmin)


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("open_begin,open_end", SETTINGS)
def test_equals_dtw_python(backend, open_begin, open_end):
    D, ns, ms = _random_pairs(1)
    out = subsequence_dtw(
        D, torch.tensor(ns), torch.tensor(ms), open_begin, open_end, backend=backend
    )
    assert out.normalized_distance.dtype == torch.float64
    finite = 0
    for b in range(len(ns)):
        want, jmin = _dtw_python(D[b, : ns[b], : ms[b]].numpy(), open_begin, open_end)
        got = out.normalized_distance[b].item()
        if np.isfinite(want):
            finite += 1
            assert abs(got - want) < 1e-6, (b, got, want)
            assert out.end[b].item() == jmin
            assert out.distance[b].item() == pytest.approx(want * ns[b], abs=1e-6)
        else:
            assert got == np.inf
    assert finite >= len(ns) // 2  # the comparison is not vacuous


def test_ties_pick_the_first_end_like_dtw_python():
    D = torch.zeros(1, 2, 6, dtype=torch.float64)  # every end column ties
    assert subsequence_dtw(D, backend="numba").end.item() == 0
    assert _dtw_python(D[0].numpy(), True, True)[1] == 0


def test_qbe_sized_pairs_match_dtw_python():
    # one query against documents of very different lengths, as QbE calls it
    rng = np.random.default_rng(3)
    docs = [int(x) for x in rng.integers(30, 400, 6)]
    D = torch.from_numpy(rng.random((6, 57, max(docs))))
    out = subsequence_dtw(D, torch.full((6,), 57), torch.tensor(docs))
    for b, m in enumerate(docs):
        want, jmin = _dtw_python(D[b, :, :m].numpy(), True, True)
        assert abs(out.normalized_distance[b].item() - want) < 1e-6
        assert out.end[b].item() == jmin


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"\(B, N, M\)"):
        subsequence_dtw(torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match="doc_lens must lie in"):
        subsequence_dtw(torch.rand(2, 3, 4), doc_lens=torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="unknown backend"):
        subsequence_dtw(torch.rand(1, 3, 4), backend="cuda")


SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from dtw import dtw
    from lasersb.alignment import _subsequence_triton
    from lasersb.alignment.subsequence_dtw import subsequence_dtw

    launches = []

    class Counting:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.append(grid[0])
            return self.kernel[grid]

    _subsequence_triton._last_row_kernel = Counting(_subsequence_triton._last_row_kernel)
    rng = np.random.default_rng(0)
    ns = rng.integers(1, 7, 5)
    ms = rng.integers(1, 21, 5)
    D = torch.from_numpy(rng.random((5, ns.max(), ms.max())))
    out = {}
    for ob, oe in [(True, True), (False, True), (True, False), (False, False)]:
        for dtype in (torch.float64, torch.float32):
            res = subsequence_dtw(D.to(dtype), torch.tensor(ns), torch.tensor(ms), ob, oe,
                                  backend="triton")
            err, ends = 0.0, 0
            for b in range(5):
                try:
                    r = dtw(D[b, :ns[b], :ms[b]].numpy(), step_pattern="asymmetric",
                            open_begin=ob, open_end=oe)
                    want, jmin = r.normalizedDistance, int(r.jmin)
                except ValueError:
                    want, jmin = float("inf"), -1
                got = res.normalized_distance[b].item()
                if np.isfinite(want):
                    err = max(err, abs(got - want))
                    ends += int(res.end[b].item() == jmin)
                else:
                    err = max(err, 0.0 if got == float("inf") else 1.0)
                    ends += 1
            out[f"{ob}_{oe}_{str(dtype)[6:]}"] = [err, ends, str(res.normalized_distance.dtype)]
    out["launches"] = launches
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("open_begin,open_end", SETTINGS)
def test_triton_equals_dtw_python_under_interpreter(interpreted, open_begin, open_end):
    err64, ends64, dtype64 = interpreted[f"{open_begin}_{open_end}_float64"]
    err32, _, dtype32 = interpreted[f"{open_begin}_{open_end}_float32"]
    assert err64 < 1e-9 and ends64 == 5 and dtype64 == "torch.float64"
    assert err32 < 1e-5 and dtype32 == "torch.float32"


def test_triton_is_one_launch_per_call(interpreted):
    assert interpreted["launches"] == [5] * 8


def test_triton_refuses_cpu_tensors_without_interpreter():
    require_oracle("triton")
    if os.environ.get("TRITON_INTERPRET"):  # a legitimate skip: no GPU, nothing to compare
        pytest.skip("this process runs under the Triton interpreter")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        subsequence_dtw(torch.rand(1, 3, 4), backend="triton")
