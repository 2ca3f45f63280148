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


def build(device, hidden_size=768, num_layers=12, trainable_layers=2):
    """The recipe's modules around a random HuBERT-base-sized upstream."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from lasersb.alignment import SoftDTWDivergence, TemporalRegulariser
    from lasersb.augment import LaserViews
    from lasersb.models.projection import NormalisedProjection
    from lasersb.models.upstream import SSLUpstream

    folder = Path(tempfile.mkdtemp(prefix="hubert_base_random_"))
    config = HubertConfig(hidden_size=hidden_size, num_hidden_layers=num_layers)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--precision", default=None, help="bf16 (default on CUDA) or fp32")
    parser.add_argument("--max-seconds", type=float, default=24.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    generator = torch.Generator().manual_seed(args.seed)
    modules = build(device)

    rows = []
    for step in range(args.steps + 1):
        durations = librispeech_like_durations(args.batch_size, generator, maximum=args.max_seconds)
        samples = [int(d * 16000) for d in durations]
        wavs = torch.zeros(len(samples), max(samples))
        for i, n in enumerate(samples):
            wavs[i, :n] = 0.1 * torch.randn(n, generator=generator)
        lens = torch.tensor(samples, dtype=torch.float) / max(samples)
        timing = run_step(modules, wavs.to(device), lens.to(device), device, precision)
        if step > 0:  # the first step warms up kernels and allocators
            rows.append((*timing, sum(durations)))

    med = [statistics.median(r[i] for r in rows) for i in range(5)]
    augment, upstream_t, loss_t, total, audio = med
    pairs_per_s = args.batch_size / total
    paper_steps, paper_batch = 3600, 8
    projected = paper_steps * paper_batch / pairs_per_s
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"LASER SSFT step, HuBERT-base-sized random upstream, top 2 layers trainable, {name}, ")
    print(f"batch {args.batch_size} pairs, {precision}, median of {len(rows)} steps")
    print()
    print("| part | ms / step | share |")
    print("|---|---:|---:|")
    for label, value in (
        ("augmentation (speed + pitch views)", augment),
        ("upstream forward + backward", upstream_t),
        ("loss: soft-DTW divergence + regulariser, fwd + bwd", loss_t),
        ("total", total),
    ):
        print(f"| {label} | {1000 * value:.1f} | {100 * value / total:.1f} % |")
    print()
    print("| metric | value |")
    print("|---|---:|")
    print(f"| audio per step (s, both views count once) | {audio:.1f} |")
    print(f"| utterance pairs / s | {pairs_per_s:.2f} |")
    print(f"| paper-scale run (3,600 x 8 pairs) | {projected / 60:.1f} min |")
    if device.type == "cuda":
        print(f"| peak GPU memory | {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB |")


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
