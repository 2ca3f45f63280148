"""Benchmark: subsequence-DTW matches per second, lasersb vs dtw-python (s3prl's QbE matcher).

Both sides get the same min-max normalised cost matrices of random QbE-like pairs (query and
document frame counts drawn uniformly from ``--query-frames`` and ``--doc-frames``; 50 frames per
second for HuBERT/WavLM). Timed:

* ``dtw-python``: one ``dtw(lm, step_pattern="asymmetric", open_begin=True, open_end=True)`` call
  per pair, as s3prl's ``quesst14_dtw`` makes it (``distance_only=False``: with open begin
  dtw-python also backtracks), in this process (s3prl spreads the calls over a process pool);
* ``lasersb``: :func:`lasersb.alignment.subsequence_dtw.subsequence_dtw` on padded batches of
  pairs (documents of one query sorted by length, as :func:`lasersb.qbe.qbe_scores` batches them),
  with 1 thread and with all threads numba is allowed; ``--device cuda`` adds the Triton backend.
  The results are checked against dtw-python on every pair (max abs difference printed).

Prints a Markdown table and the projected DTW time of the QUESST 2014 evaluation set at that
rate (``--projection`` query x document counts). Example::

    python bench/qbe_dtw.py --pairs 2000 --device cpu
"""

import argparse
import time

import numpy as np
import torch

from lasersb.alignment.subsequence_dtw import subsequence_dtw


def make_pairs(n_pairs, query_frames, doc_frames, seed):
    """Min-max normalised random cost matrices ``[(N, M) float64]``."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_pairs):
        n = int(rng.integers(*query_frames))
        m = int(rng.integers(*doc_frames))
        lm = np.expm1(rng.random((n, m)))
        lo, hi = lm.min(1, keepdims=True), lm.max(1, keepdims=True)
        pairs.append((lm - lo) / np.clip(hi - lo, 1e-9, None))
    return pairs


def time_dtw_python(pairs):
    from dtw import dtw

    start = time.perf_counter()
    out = [
        dtw(lm, step_pattern="asymmetric", open_begin=True, open_end=True).normalizedDistance
        for lm in pairs
    ]
    return time.perf_counter() - start, np.array(out)


def _batches(pairs, per_batch):
    # one "query" per group of per_batch pairs, documents sorted by length inside it
    for start in range(0, len(pairs), per_batch):
        index = sorted(
            range(start, min(start + per_batch, len(pairs))), key=lambda i: pairs[i].shape
        )
        n_max = max(pairs[i].shape[0] for i in index)
        m_max = max(pairs[i].shape[1] for i in index)
        D = np.zeros((len(index), n_max, m_max))
        for row, i in enumerate(index):
            D[row, : pairs[i].shape[0], : pairs[i].shape[1]] = pairs[i]
        q = torch.tensor([pairs[i].shape[0] for i in index])
        d = torch.tensor([pairs[i].shape[1] for i in index])
        yield index, torch.from_numpy(D), q, d


def time_lasersb(pairs, backend, device, per_batch, dtype):
    batches = [
        (i, D.to(device=device, dtype=dtype), q.to(device), d.to(device))
        for i, D, q, d in _batches(pairs, per_batch)
    ]
    subsequence_dtw(*batches[0][1:], backend=backend)  # compile / warm up
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = np.zeros(len(pairs))
    start = time.perf_counter()
    results = [(i, subsequence_dtw(D, q, d, backend=backend)) for i, D, q, d in batches]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for index, res in results:
        out[index] = res.normalized_distance.double().cpu().numpy()
    return seconds, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--baseline-pairs", type=int, default=500, help="dtw-python pairs timed")
    parser.add_argument("--query-frames", type=int, nargs=2, default=(40, 120))
    parser.add_argument("--doc-frames", type=int, nargs=2, default=(150, 600))
    parser.add_argument("--per-batch", type=int, default=250, help="pairs per DTW call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--projection", type=int, nargs=2, default=(555, 12492))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import numba

    pairs = make_pairs(args.pairs, args.query_frames, args.doc_frames, args.seed)
    cells = sum(p.size for p in pairs) / len(pairs)
    base = pairs[: args.baseline_pairs]
    t_ref, ref = time_dtw_python(base)
    rows = [("dtw-python (1 process)", len(base) / t_ref, 0.0)]
    threads = numba.get_num_threads()
    for n_threads in sorted({1, threads}):
        numba.set_num_threads(n_threads)
        t, out = time_lasersb(pairs, "numba", torch.device("cpu"), args.per_batch, torch.float64)
        err = float(np.abs(out[: len(base)] - ref).max())
        rows.append((f"lasersb numba, {n_threads} thread(s), float64", len(pairs) / t, err))
    numba.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        for dtype in (torch.float32, torch.float64):
            t, out = time_lasersb(pairs, "triton", device, args.per_batch, dtype)
            err = float(np.abs(out[: len(base)] - ref).max())
            rows.append((f"lasersb triton, {str(dtype)[6:]}", len(pairs) / t, err))
    n_q, n_d = args.projection
    print(
        f"{args.pairs} pairs, query {args.query_frames[0]}-{args.query_frames[1]} x document "
        f"{args.doc_frames[0]}-{args.doc_frames[1]} frames (mean {cells / 1e3:.1f} k cells); "
        f"projection: {n_q} x {n_d} = {n_q * n_d / 1e6:.2f} M matches\n"
    )
    print("| matcher | matches / s | projected DTW time | max abs diff vs dtw-python |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate, err in rows:
        hours = n_q * n_d / rate / 3600
        print(f"| {name} | {rate:,.0f} | {hours:.2f} h | {err:.1e} |")


if __name__ == "__main__":
    main()
