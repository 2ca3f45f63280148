"""The Triton soft-DTW kernels, on CPU tensors under TRITON_INTERPRET=1 or compiled on a GPU.

CI has no GPU. The interpreter must be switched on before triton is imported, so the checks run
in a subprocess with ``TRITON_INTERPRET=1`` in its environment only (nothing leaks into the other
tests). The subprocess compares the Triton backend with the reference backend (values,
gradients, soft alignments; float64 and float32; with and without a band; padded pairs; a long
pair, 1000 frames on a GPU and 24 under the interpreter, against the float64 reference) and
counts kernel launches (the divergence's three terms share one forward and one backward launch).

``LASERSB_TRITON_DEVICE=cuda`` runs the same checks with the kernels compiled for the GPU (no
interpreter); ``bench/gpu_check.sh`` does so, with ``LASERSB_TRITON_RESULTS=<file>`` to keep the
measured errors as JSON.
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
    import os
    import torch
    from lasersb.alignment import _triton, soft_alignment, soft_dtw, soft_dtw_divergence

    device = torch.device(os.environ.get("LASERSB_TRITON_DEVICE", "cpu"))

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
    x = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    y = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    xl, yl = torch.tensor([7, 3], device=device), torch.tensor([4, 5], device=device)
    out = {"device": str(device)}
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
    long_x = torch.randn(1, 40, 2, generator=gen).to(device)
    long_y = torch.randn(1, 3, 2, generator=gen).to(device)
    tri = soft_dtw(long_x, long_y, gamma=0.01, bandwidth=0, backend="triton")
    ref = soft_dtw(long_x, long_y, gamma=0.01, bandwidth=0, backend="reference")
    out["unequal_band"] = err(tri, ref)

    # A long ragged pair (LASER's gamma, L2-normalised frames) against the float64 reference.
    n = 1000 if device.type == "cuda" else 24
    out["long_frames"] = n
    unit = torch.nn.functional.normalize
    lx = unit(torch.randn(2, n, 16, generator=gen, dtype=torch.float64), dim=-1)
    ly = unit(torch.randn(2, n, 16, generator=gen, dtype=torch.float64), dim=-1)
    lxl = torch.tensor([n, n - n // 10], device=device)
    lyl = torch.tensor([n - n // 20, n], device=device)
    lx, ly = lx.to(device).requires_grad_(True), ly.to(device).requires_grad_(True)
    ref = soft_dtw_divergence(lx, ly, lxl, lyl, gamma=0.1, backend="reference")
    g_ref = torch.autograd.grad(ref.sum(), (lx, ly))
    for dtype in (torch.float64, torch.float32):
        a = lx.detach().to(dtype).requires_grad_(True)
        b = ly.detach().to(dtype).requires_grad_(True)
        tri = soft_dtw_divergence(a, b, lxl, lyl, gamma=0.1, backend="triton")
        g_tri = torch.autograd.grad(tri.sum(), (a, b))
        name = str(dtype).replace("torch.", "")
        out[f"long_value_{name}"] = err(tri, ref)
        out[f"long_grad_{name}"] = max(err(p, q) for p, q in zip(g_tri, g_ref))
    print("RESULT" + json.dumps(out))
    """
)


ON_GPU = os.environ.get("LASERSB_TRITON_DEVICE", "cpu") == "cuda"


@pytest.fixture(scope="module")
def interpreted_results():
    env = dict(os.environ)
    if ON_GPU:
        env.pop("TRITON_INTERPRET", None)
    else:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    results = json.loads(line[len("RESULT") :])
    if os.environ.get("LASERSB_TRITON_RESULTS"):
        with open(os.environ["LASERSB_TRITON_RESULTS"], "w") as handle:
            json.dump(results, handle, indent=2)
    return results


def test_runs_where_asked(interpreted_results):
    assert interpreted_results["device"] == ("cuda" if ON_GPU else "cpu")


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


def test_long_pair_matches_float64_reference(interpreted_results):
    res = interpreted_results
    assert res["long_frames"] == (1000 if ON_GPU else 24)
    assert res["long_value_float64"] < 1e-10
    assert res["long_grad_float64"] < 1e-10
    # float32 DP over ~2,000 anti-diagonals: the error grows with the path length
    assert res["long_value_float32"] < 1e-4
    assert res["long_grad_float32"] < 1e-3


def test_triton_backend_refuses_cpu_tensors_without_interpreter():
    import torch

    from lasersb.alignment import soft_dtw

    if os.environ.get("TRITON_INTERPRET"):
        pytest.skip("this process runs under the Triton interpreter")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        soft_dtw(torch.randn(1, 3, 2), torch.randn(1, 3, 2), backend="triton")
