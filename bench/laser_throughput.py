#!/usr/bin/env python3
"""LASER SSFT throughput: utterance pairs per second for a HuBERT-base-sized upstream.

One training step as the recipe runs it: batched speed+pitch views on the training device
(:class:`lasersb.augment.LaserViews`), both views through the upstream in one pass (top two
layers trainable), projection + L2 norm, soft-DTW divergence (gamma 0.1) + temporal regulariser,
backward, AdamW step. The upstream is a randomly initialised HuBERT base (``HubertConfig()``
defaults, saved with ``save_pretrained`` and loaded through the recipe's loader; no download).
Utterance durations are drawn like LibriSpeech train-clean-100 (mean 12.7 s, at most 24.5 s).

Prints a Markdown table with the median time per step and its parts (augmentation, upstream
forward+backward, loss forward+backward), pairs per second, the loss's share of the step, and
the time the paper-scale run (3,600 steps of 8 pairs) would take at that speed.

    python bench/laser_throughput.py                      # CUDA if available, else CPU
    python bench/laser_throughput.py --device cpu --steps 2 --batch-size 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def librispeech_like_durations(count, generator, mean=12.7, maximum=24.5, minimum=1.5):
    """Durations (s) from a gamma distribution matching train-clean-100's mean and maximum."""
    shape = 6.0
    gamma = torch.distributions.Gamma(torch.tensor(shape), torch.tensor(shape / mean))
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    return gamma.sample((count,)).clamp(minimum, maximum).tolist()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(device, hidden_size=768, num_layers=12, trainable_layers=2, **config_overrides):
    """The recipe's modules around a random HuBERT-base-sized upstream.

    ``config_overrides`` go to ``HubertConfig`` (smaller models for a dry run on the CPU).
    """
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from lasersb.alignment import SoftDTWDivergence, TemporalRegulariser
    from lasersb.augment import LaserViews
    from lasersb.models.projection import NormalisedProjection
    from lasersb.models.upstream import SSLUpstream

    folder = Path(tempfile.mkdtemp(prefix="hubert_base_random_"))
    config = HubertConfig(hidden_size=hidden_size, num_hidden_layers=num_layers, **config_overrides)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(
        folder
    )
    upstream = SSLUpstream(str(folder), trainable_layers=trainable_layers, exact_padding=True)
    upstream = upstream.to(device)
    projection = NormalisedProjection(upstream.hidden_size, 256).to(device)
    views = LaserViews(speed_factors=(0.9, 1.0, 1.1), semitones=(-2, 2))
    params = [p for m in (upstream, projection) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5)
    return (
        upstream,
        projection,
        views,
        SoftDTWDivergence(gamma=0.1),
        TemporalRegulariser(sigma=0, margin=1.1),
        optimizer,
    )


def run_step(modules, wavs, lens, device, precision):
    """One LASER step; returns the seconds spent in (augmentation, upstream, loss, total)."""
    from lasersb.augment import stack_views

    upstream, projection, views, divergence, regulariser, optimizer = modules
    autocast = torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
    _sync(device)
    t0 = time.perf_counter()
    view_a, lens_a, view_b, lens_b = views(wavs, lens)
    stacked, stacked_lens = stack_views(view_a, lens_a, view_b, lens_b)
    _sync(device)
    t1 = time.perf_counter()
    with autocast:
        out = upstream(stacked, stacked_lens)
        z = projection(out.last_hidden_state)
    # The loss runs on a detached copy so its forward+backward can be timed on its own; the
    # gradient is then sent through the upstream graph, exactly as one backward would.
    z_loss = z.detach().float().requires_grad_(True)
    frame_lens = out.frame_lens.to(device)
    _sync(device)
    t2 = time.perf_counter()
    half = wavs.shape[0]
    za, zb, la, lb = z_loss[:half], z_loss[half:], frame_lens[:half], frame_lens[half:]
    loss = divergence(za, zb, la, lb) + 0.4 * (regulariser(za, la) + regulariser(zb, lb))
    loss.mean().backward()
    _sync(device)
    t3 = time.perf_counter()
    z.backward(z_loss.grad.to(z.dtype))
    torch.nn.utils.clip_grad_norm_(
        [p for g in optimizer.param_groups for p in g["params"]], max_norm=1.0
    )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    t4 = time.perf_counter()
    return t1 - t0, (t2 - t1) + (t4 - t3), t3 - t2, t4 - t0


PAPER_STEPS, PAPER_BATCH = 3600, 8

PARTS = (
    ("augmentation", "augmentation (speed + pitch views)"),
    ("upstream", "upstream forward + backward (+ clipping, AdamW)"),
    ("loss", "loss: soft-DTW divergence + regulariser, fwd + bwd"),
    ("total", "total"),
)


def measure(
    device,
    batch_size=8,
    steps=5,
    precision=None,
    max_seconds=24.5,
    mean_seconds=12.7,
    min_seconds=1.5,
    seed=0,
    deadline=None,
    **build_options,
):
    """Time ``steps`` LASER steps (after one warm-up step); returns a dict of the results.

    Medians in seconds per part (``augmentation``, ``upstream``, ``loss``, ``total``), their
    shares of the step, pairs per second, the projected paper-scale time (3,600 steps x 8
    pairs) and the peak GPU memory. Timing stops early (after at least one timed step) once
    ``deadline`` (a ``time.time()``) has passed.
    """
    device = torch.device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    modules = build(device, **build_options)
    build_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = []
    for step in range(steps + 1):
        if rows and deadline is not None and time.time() > deadline:
            break
        durations = librispeech_like_durations(
            batch_size, generator, mean=mean_seconds, maximum=max_seconds, minimum=min_seconds
        )
        samples = [int(d * 16000) for d in durations]
        wavs = torch.zeros(len(samples), max(samples))
        for i, n in enumerate(samples):
            wavs[i, :n] = 0.1 * torch.randn(n, generator=generator)
        lens = torch.tensor(samples, dtype=torch.float) / max(samples)
        timing = run_step(modules, wavs.to(device), lens.to(device), device, precision)
        if step > 0:  # the first step warms up kernels and allocators
            rows.append((*timing, sum(durations)))
    med = {key: statistics.median(r[i] for r in rows) for i, (key, _) in enumerate(PARTS)}
    audio = statistics.median(r[4] for r in rows)
    pairs_per_s = batch_size / med["total"]
    upstream = modules[0]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "upstream": f"random HuBERT, {upstream.num_layers} layers x {upstream.hidden_size}",
        "precision": precision,
        "batch_size": batch_size,
        "timed_steps": len(rows),
        "build_s": build_s,
        "median_s": med,
        "share": {key: med[key] / med["total"] for key in med},
        "audio_s_per_step": audio,
        "pairs_per_s": pairs_per_s,
        "paper_scale_min": PAPER_STEPS * PAPER_BATCH / pairs_per_s / 60,
        "steps_s": [list(r) for r in rows],
    }
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def markdown(result):
    """Markdown tables of a :func:`measure` result."""
    lines = [
        f"LASER SSFT step, {result['upstream']} (HuBERT base: 12 x 768), top 2 layers "
        f"trainable, {result['device']}, batch {result['batch_size']} pairs, "
        f"{result['precision']}, median of {result['timed_steps']} steps",
        "",
        "| part | ms / step | share |",
        "|---|---:|---:|",
    ]
    for key, label in PARTS:
        lines.append(
            f"| {label} | {1000 * result['median_s'][key]:.1f} | "
            f"{100 * result['share'][key]:.1f} % |"
        )
    lines += [
        "",
        "| metric | value |",
        "|---|---:|",
        f"| audio per step (s, both views count once) | {result['audio_s_per_step']:.1f} |",
        f"| utterance pairs / s | {result['pairs_per_s']:.2f} |",
        f"| paper-scale run ({PAPER_STEPS:,} x {PAPER_BATCH} pairs) | "
        f"{result['paper_scale_min']:.1f} min |",
    ]
    if "peak_gpu_gib" in result:
        lines.append(f"| peak GPU memory | {result['peak_gpu_gib']:.2f} GiB |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--precision", default=None, help="bf16 (default on CUDA) or fp32")
    parser.add_argument("--max-seconds", type=float, default=24.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(
        args.device,
        batch_size=args.batch_size,
        steps=args.steps,
        precision=args.precision,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    print(markdown(result))


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} x{torch.get_num_threads()} threads"
    except OSError:
        pass
    return f"CPU {platform.processor()}"


if __name__ == "__main__":
    main()
