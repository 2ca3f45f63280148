"""Benchmark: forward + backward of the soft-DTW divergence (LASER's loss).

Times ``soft_dtw_divergence`` (gamma 0.1, D = 256, L2-normalised frames; float32 inputs, or
bfloat16 with ``--dtypes``; all pairs at full length, or ragged lengths drawn uniformly in
``[N/2, N]`` per sequence with ``--ragged``) for this repository and, in the same process,
whichever baselines are available:

* ``tslearn``: ``tslearn.metrics.SoftDTWLossPyTorch(gamma, normalize=True)``;
* ``pysdtw``: ``pysdtw.SoftDTW`` (CUDA only), three calls for the divergence (ragged pairs as
  ``PackedSequence``, its way of taking lengths);
* ``numba-loop``: a plain per-pair loop like the authors' LASER release: ``expand`` distances
  (a ``B x N x M x D`` intermediate per pair) and a single-threaded numba DP / E recursion per
  pair and term (written below, after Maghoumi's pytorch-softdtw-cuda CPU path).

Prints a Markdown table of median wall-clock ms and peak memory (CUDA: ``max_memory_allocated``;
CPU: the peak increase of the process RSS, sampled every 2 ms). Slow baselines are skipped on
large CPU cases (``--baseline-max-cells``) with a ``skipped (reason)`` cell; numbers are never
invented. Example::

    python bench/soft_dtw.py --device cpu --sizes 8x300,1x600 --repeats 3
    python bench/soft_dtw.py --device cuda --dtypes float32,bfloat16 --ragged 8x600,8x1000

:func:`run_cases` yields one result per (case, method) for other scripts (bench/gpu_check.py).
"""

import argparse
import os
import statistics
import threading
import time

import numpy as np
import torch
from numba import njit

from lasersb.alignment import soft_dtw_divergence

DEFAULT_SIZES = "1x600,8x600,8x1000,32x250,4x1500,8x4000"


# ----------------------------------------------------------------------------- numba loop


@njit(cache=True)
def _loop_forward(D, gamma):
    N, M = D.shape
    R = np.full((N + 2, M + 2), np.inf)
    R[0, 0] = 0.0
    for j in range(1, M + 1):
        for i in range(1, N + 1):
            r0 = -R[i - 1, j - 1] / gamma
            r1 = -R[i - 1, j] / gamma
            r2 = -R[i, j - 1] / gamma
            rmax = max(max(r0, r1), r2)
            rsum = np.exp(r0 - rmax) + np.exp(r1 - rmax) + np.exp(r2 - rmax)
            R[i, j] = D[i - 1, j - 1] - gamma * (np.log(rsum) + rmax)
    return R


@njit(cache=True)
def _loop_backward(D_, R, gamma):
    N, M = D_.shape
    D = np.zeros((N + 2, M + 2))
    D[1 : N + 1, 1 : M + 1] = D_
    E = np.zeros((N + 2, M + 2))
    E[-1, -1] = 1.0
    R[:, -1] = -np.inf
    R[-1, :] = -np.inf
    R[-1, -1] = R[-2, -2]
    for j in range(M, 0, -1):
        for i in range(N, 0, -1):
            a = np.exp((R[i + 1, j] - R[i, j] - D[i + 1, j]) / gamma)
            b = np.exp((R[i, j + 1] - R[i, j] - D[i, j + 1]) / gamma)
            c = np.exp((R[i + 1, j + 1] - R[i, j] - D[i + 1, j + 1]) / gamma)
            E[i, j] = E[i + 1, j] * a + E[i, j + 1] * b + E[i + 1, j + 1] * c
    return E[1 : N + 1, 1 : M + 1]


class _LoopSoftDTW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, D, gamma):
        D_np = D.detach().cpu().double().numpy()
        R = _loop_forward(D_np, gamma)
        ctx.save_for_backward(D)
        ctx.R, ctx.D_np, ctx.gamma = R, D_np, gamma
        return torch.tensor(R[-2, -2], dtype=D.dtype, device=D.device)

    @staticmethod
    def backward(ctx, grad):
        (D,) = ctx.saved_tensors
        E = _loop_backward(ctx.D_np, ctx.R, ctx.gamma)
        return grad * torch.from_numpy(E).to(D), None


def _expand_sqeuclidean(x, y):
    n, m, d = x.shape[1], y.shape[1], x.shape[2]
    x = x.unsqueeze(2).expand(-1, n, m, d)
    y = y.unsqueeze(1).expand(-1, n, m, d)
    return torch.pow(x - y, 2).sum(3)


def numba_loop_divergence(x, y, gamma):
    """Per-pair loop: expand distances and a single-threaded numba DP for each term."""
    out = []
    for b in range(x.shape[0]):
        xb, yb = x[b : b + 1], y[b : b + 1]
        terms = [
            _LoopSoftDTW.apply(_expand_sqeuclidean(p, q)[0], gamma)
            for p, q in ((xb, yb), (xb, xb), (yb, yb))
        ]
        out.append(terms[0] - 0.5 * (terms[1] + terms[2]))
    return torch.stack(out)


# ----------------------------------------------------------------------------- methods


def _pysdtw_divergence(x, y, g, x_lens=None, y_lens=None):
    import pysdtw
    from torch.nn.utils.rnn import pack_padded_sequence

    sdtw = pysdtw.SoftDTW(gamma=g, use_cuda=True)
    if x_lens is not None:
        x = pack_padded_sequence(x, x_lens.cpu(), batch_first=True, enforce_sorted=False)
        y = pack_padded_sequence(y, y_lens.cpu(), batch_first=True, enforce_sorted=False)
    return sdtw(x, y) - 0.5 * (sdtw(x, x) + sdtw(y, y))


def _run_lasersb(backend):
    def run(x, y, g, xl=None, yl=None):
        return soft_dtw_divergence(x, y, xl, yl, gamma=g, backend=backend)

    return run


def _tslearn():
    try:
        from tslearn.metrics import SoftDTWLossPyTorch
    except ImportError:
        return "not installed"

    def run(x, y, g, xl=None, yl=None):
        if xl is not None:
            raise ValueError("no lengths argument")
        return SoftDTWLossPyTorch(gamma=g, normalize=True)(x, y)

    return run


def _pysdtw(device):
    if device.type != "cuda":
        return "CUDA only"
    try:
        import pysdtw  # noqa: F401
    except ImportError:
        return "not installed"
    return _pysdtw_divergence


def _numba_loop(x, y, g, xl=None, yl=None):
    if xl is not None:
        raise ValueError("ragged lengths not implemented")
    return numba_loop_divergence(x, y, g)


def _methods(device, backend="auto", names=("lasersb", "tslearn", "pysdtw", "numba-loop")):
    """``{name: fn(x, y, gamma, x_lens, y_lens)}``, or ``{name: reason}`` when unavailable.

    Only the packages of the methods in ``names`` are imported.
    """
    makers = {
        "lasersb": lambda: _run_lasersb(backend),
        "tslearn": _tslearn,
        "pysdtw": lambda: _pysdtw(device),
        "numba-loop": lambda: _numba_loop,
    }
    return {name: makers[name]() for name in names}


class _PeakRSS:
    """Peak increase of the process RSS while the block runs (sampled)."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.increase = self.peak - self.base


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_once(fn, x, y, gamma, device, lens=(None, None)):
    x.grad = y.grad = None
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn(x, y, gamma, *lens).sum().backward()
        _sync(device)
        return time.perf_counter() - start, torch.cuda.max_memory_allocated(device) - base
    start = time.perf_counter()
    with _PeakRSS() as rss:
        fn(x, y, gamma, *lens).sum().backward()
    return time.perf_counter() - start, rss.increase


def make_inputs(batch, frames, dim, device, dtype=torch.float32, ragged=False, seed=0):
    """L2-normalised ``(B, N, D)`` pairs, and per-sequence lengths in ``[N/2, N]`` if ragged."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, frames, dim, generator=gen), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(batch, frames, dim, generator=gen), dim=-1)
    x = x.to(device=device, dtype=dtype).requires_grad_(True)
    y = y.to(device=device, dtype=dtype).requires_grad_(True)
    if not ragged:
        return x, y, (None, None)
    low = max(1, frames // 2)
    lens = torch.randint(low, frames + 1, (2, batch), generator=gen)
    lens[:, 0] = frames  # the padded length is the longest sequence
    return x, y, (lens[0].to(device), lens[1].to(device))


def bench_case(
    fn,
    batch,
    frames,
    dim,
    gamma,
    device,
    repeats,
    budget_s,
    seed=0,
    dtype=torch.float32,
    ragged=False,
):
    """Median seconds and max peak bytes of ``repeats`` runs (after one warm-up run)."""
    x, y, lens = make_inputs(batch, frames, dim, device, dtype, ragged, seed)
    first, _ = _run_once(fn, x, y, gamma, device, lens)  # warm-up (JIT, autotuning, caches)
    times, peaks = [], []
    for _ in range(repeats):
        elapsed, peak = _run_once(fn, x, y, gamma, device, lens)
        times.append(elapsed)
        peaks.append(peak)
        if sum(times) + first > budget_s:
            break
    return statistics.median(times), max(peaks), len(times)


def run_cases(
    cases,
    methods,
    device,
    dim=256,
    gamma=0.1,
    repeats=3,
    budget_s=60.0,
    baseline_max_cells=float("inf"),
    deadline=None,
):
    """Yield ``(case, method, result)`` for every case and method, in that order.

    ``cases`` holds ``(batch, frames, dtype, ragged)``; ``result`` is ``{"median_ms",
    "peak_mib", "runs", "warmup_ms"}`` or ``{"skipped": reason}``. Nothing runs after
    ``deadline`` (a ``time.time()``), every remaining result then says so.
    """
    for batch, frames, dtype, ragged in cases:
        cells = batch * frames * frames
        for name, fn in methods.items():
            case = (batch, frames, dtype, ragged)
            if deadline is not None and time.time() > deadline:
                yield case, name, {"skipped": "time budget spent"}
                continue
            if isinstance(fn, str):
                yield case, name, {"skipped": fn}
                continue
            if name != "lasersb" and device.type == "cpu" and cells > baseline_max_cells:
                expand_gb = cells * dim * 4 / 1e9
                reason = (
                    f"B*N*M={cells:.2g} > {baseline_max_cells:.2g}; expand needs {expand_gb:.1f} GB"
                )
                yield case, name, {"skipped": reason}
                continue
            left = budget_s if deadline is None else max(0.0, min(budget_s, deadline - time.time()))
            try:
                start = time.perf_counter()
                seconds, peak, runs = bench_case(
                    fn, batch, frames, dim, gamma, device, repeats, left, dtype=dtype, ragged=ragged
                )
                total = time.perf_counter() - start
                result = {
                    "median_ms": seconds * 1e3,
                    "peak_mib": peak / 2**20,
                    "runs": runs,
                    "warmup_ms": max(0.0, total - seconds * runs) * 1e3,
                }
            except Exception as err:  # noqa: BLE001 - a baseline's failure is a table cell
                text = str(err).splitlines()[0][:80] if str(err) else ""
                result = {"skipped": f"{type(err).__name__}: {text}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            yield case, name, result


def _cell(result):
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    suffix = "" if result["runs"] > 1 else " (n=1)"
    return f"{result['median_ms']:,.0f} ms / {result['peak_mib']:,.0f} MiB{suffix}"


def parse_sizes(text):
    """``"8x600,1x600"`` -> ``[(8, 600), (1, 600)]``."""
    if not text:
        return []
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]


def _return_freed_memory_to_the_os():
    """Make glibc mmap every allocation >= 64 KiB so the RSS tracks live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv=None):
    """Run the benchmark and print the Markdown table."""
    _return_freed_memory_to_the_os()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma list of BxN (N = M)")
    parser.add_argument("--ragged", default="", help="comma list of BxN with ragged lengths")
    parser.add_argument("--dtypes", default="float32", help="comma list: float32, bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", help="lasersb backend (auto: by device)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument(
        "--methods", default="lasersb,tslearn,pysdtw,numba-loop", help="comma list to run"
    )
    parser.add_argument(
        "--baseline-max-cells",
        type=float,
        default=2.2e6,
        help="on CPU, skip baselines when B*N*M exceeds this (they are slow and their expand "
        "intermediate is B*N*M*D floats)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=60.0, help="stop repeating a case after this long"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    cases = [
        (batch, frames, dtype, ragged)
        for dtype in dtypes
        for ragged, text in ((False, args.sizes), (True, args.ragged))
        for batch, frames in parse_sizes(text)
    ]
    methods = _methods(device, args.backend, args.methods.split(","))
    if device.type == "cpu":
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "?")
        machine = f"{os.cpu_count()}-core CPU, {model}"
    else:
        machine = torch.cuda.get_device_name(device)
    print(
        f"Soft-DTW divergence forward+backward, gamma={args.gamma}, D={args.dim}, "
        f"{machine}; torch {torch.__version__}; cells: median ms / peak memory\n"
    )
    print("| B x N=M | inputs | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    row = []
    for (batch, frames, dtype, ragged), _name, result in run_cases(
        cases,
        methods,
        device,
        dim=args.dim,
        gamma=args.gamma,
        repeats=args.repeats,
        budget_s=args.budget_s,
        baseline_max_cells=args.baseline_max_cells,
    ):
        row.append(_cell(result))
        if len(row) == len(methods):
            label = f"{batch} x {frames}" + (" ragged" if ragged else "")
            dtype_name = str(dtype).replace("torch.", "")
            print(f"| {label} | {dtype_name} | " + " | ".join(row) + " |", flush=True)
            row = []
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
