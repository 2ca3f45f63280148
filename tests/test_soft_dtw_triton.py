"""The Triton soft-DTW kernels' logic, run on CPU tensors under TRITON_INTERPRET=1.

CI has no GPU. The interpreter must be switched on before triton is imported, so the checks run
in a subprocess with ``TRITON_INTERPRET=1`` in its environment only (nothing leaks into the other
tests). The subprocess compares the Triton backend with the reference backend (values,
gradients, soft alignments; float64 and float32; with and without a band; padded pairs) and
counts kernel launches (the divergence's three terms share one forward and one backward launch).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from lasersb.alignment import _triton, soft_alignment, soft_dtw, soft_dtw_divergence

    launches = []

    class Counting:
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            launches.append((self.name, grid[0]))
            return self.kernel[grid]

    _triton._forward_kernel = Counting(_triton._forward_kernel, "forward")
    _triton._backward_kernel = Counting(_triton._backward_kernel, "backward")

    def err(a, b):
        return float((a.double() - b.double()).abs().max() / b.double().abs().max())

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    xl, yl = torch.tensor([7, 3]), torch.tensor([4, 5])
    out = {}
    for band in (None, 1):
        opts = dict(gamma=0.3, bandwidth=band)
        launches.clear()
        tri = soft_dtw_divergence(x, y, xl, yl, backend="triton", **opts)
        g_tri = torch.autograd.grad(tri.sum(), (x, y))
        out[f"launches_{band}"] = list(launches)
        ref = soft_dtw_divergence(x, y, xl, yl, backend="reference", **opts)
        g_ref = torch.autograd.grad(ref.sum(), (x, y))
        out[f"value_{band}"] = err(tri, ref)
        out[f"grad_{band}"] = max(err(a, b) for a, b in zip(g_tri, g_ref))
        out[f"pad_grad_{band}"] = float(g_tri[0][1, 3:].abs().sum() + g_tri[1][0, 4:].abs().sum())
        a32 = soft_alignment(x.float(), y.float(), xl, yl, backend="triton", **opts)
        a64 = soft_alignment(x, y, xl, yl, backend="reference", **opts)
        out[f"align32_{band}"] = err(a32, a64)
        out[f"align32_dtype_{band}"] = str(a32.dtype)
    long_x = torch.randn(1, 40, 2, generator=gen)
    long_y = torch.randn(1, 3, 2, generator=gen)
    tri = soft_dtw(long_x, long_y, gamma=0.01, bandwidth=0, backend="triton")
    ref = soft_dtw(long_x, long_y, gamma=0.01, bandwidth=0, backend="reference")
    out["unequal_band"] = err(tri, ref)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def interpreted_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("band", [None, 1])
def test_triton_matches_reference_under_interpreter(interpreted_results, band):
    res = interpreted_results
    assert res[f"value_{band}"] < 1e-10
    assert res[f"grad_{band}"] < 1e-10
    assert res[f"pad_grad_{band}"] == 0.0
    assert res[f"align32_{band}"] < 1e-5
    assert res[f"align32_dtype_{band}"] == "torch.float32"


def test_divergence_is_one_launch_per_pass(interpreted_results):
    # the three terms (xy, xx, yy) of a batch of 2 run as one forward and one backward
    # launch over 6 programs
    assert interpreted_results["launches_None"] == [["forward", 6], ["backward", 6]]
    assert interpreted_results["launches_1"] == [["forward", 6], ["backward", 6]]
    assert interpreted_results["unequal_band"] < 1e-5


def test_triton_backend_refuses_cpu_tensors_without_interpreter():
    import torch

    from lasersb.alignment import soft_dtw

    if os.environ.get("TRITON_INTERPRET"):
        pytest.skip("this process runs under the Triton interpreter")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        soft_dtw(torch.randn(1, 3, 2), torch.randn(1, 3, 2), backend="triton")
