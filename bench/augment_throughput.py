#!/usr/bin/env python3
"""Throughput of LASER's view augmentation (speed perturbation + pitch shift of +-2 semitones).

Compares, on batches of LibriSpeech-like utterances (durations from a gamma distribution with
train-clean-100's mean 12.7 s, clipped to [1.5, 24.5] s):

(a) the per-utterance torchaudio baseline: ``torchaudio.functional.resample`` (speed) then
    ``torchaudio.functional.pitch_shift`` (phase vocoder + resampling with a 16000 x ~18000-tap
    kernel), one utterance at a time (limited to ``--baseline-utts`` so it finishes);
(b) our batched :class:`lasersb.augment.LaserViews` (stretch per semitone value + ONE small-kernel
    resampling per (speed, semitone) pair, phase locking) on the CPU with 1 thread and with all
    threads, and the unfused two-step ``speed_perturb`` then ``pitch_shift``;
(c) the same on CUDA when a GPU is available (otherwise the row says so).

Prints a Markdown table: seconds per batch, utterances/s, real-time factor (audio seconds
processed per second) and the projected time for the 28,800 utterances of the LASER run
(3,600 steps x 8 utterances).

    python bench/augment_throughput.py                     # defaults: batch 8, 3 batches
    python bench/augment_throughput.py --batches 1 --baseline-utts 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchaudio.functional as taF

from lasersb.augment import LaserViews, pitch_shift, speed_perturb

SAMPLE_RATE = 16000
TOTAL_UTTERANCES = 28_800


def librispeech_like_batch(batch_size, generator, mean=12.7, maximum=24.5, minimum=1.5):
    """A padded batch of noise 'utterances' with LibriSpeech-like durations (s)."""
    shape = 6.0
    gamma = torch.distributions.Gamma(torch.tensor(shape), torch.tensor(shape / mean))
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    seconds = gamma.sample((batch_size,)).clamp(minimum, maximum)
    lengths = (seconds * SAMPLE_RATE).long()
    total = int(lengths.max())
    wavs = torch.zeros(batch_size, total)
    for i, n in enumerate(lengths.tolist()):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=generator)
    return wavs, lengths.float() / total, float(seconds.sum())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(fn, batches, device):
    """Median seconds per batch of ``fn(wavs, lens)`` (after one warm-up call)."""
    wavs, lens, _ = batches[0]
    fn(wavs.to(device), lens.to(device))
    times = []
    for wavs, lens, _ in batches:
        wavs, lens = wavs.to(device), lens.to(device)
        _sync(device)
        start = time.perf_counter()
        fn(wavs, lens)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_per_utterance(batches, count, generator):
    """torchaudio speed (resample) + pitch_shift per utterance; returns (s/utt, audio s/utt)."""
    spent, audio, done = 0.0, 0.0, 0
    for wavs, lens, _ in batches:
        for wav, rel in zip(wavs, lens):
            if done >= count:
                break
            n = int(round(float(rel) * wavs.shape[1]))
            speed = [0.9, 1.0, 1.1][int(torch.randint(3, (1,), generator=generator))]
            semitones = [-2, 2][int(torch.randint(2, (1,), generator=generator))]
            start = time.perf_counter()
            x = wav[None, :n]
            if speed != 1.0:
                x = taF.resample(x, int(SAMPLE_RATE * speed), SAMPLE_RATE)
            taF.pitch_shift(x, SAMPLE_RATE, semitones)
            spent += time.perf_counter() - start
            audio += n / SAMPLE_RATE
            done += 1
    return spent / done, audio / done


def unfused(views):
    """speed_perturb then pitch_shift as two separate batched steps (same draws' ranges)."""

    def run(wavs, lens):
        sped, sped_lens, _ = speed_perturb(wavs, lens, views.speed_factors)
        return pitch_shift(sped, sped_lens, views.semitones, views.sample_rate)

    return run


def row(name, device_name, seconds_per_batch, batch_size, audio_per_batch):
    utt_per_s = batch_size / seconds_per_batch
    projected_h = TOTAL_UTTERANCES / utt_per_s / 3600
    rtf = audio_per_batch / seconds_per_batch
    return (
        f"| {name} | {device_name} | {seconds_per_batch:.3f} | {utt_per_s:.2f} | {rtf:.0f}x | "
        f"{projected_h:.2f} h |"
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--baseline-utts", type=int, default=2, help="0 skips the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wavlm", action="store_true", help="WavLM's 7 speed factors")
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(args.seed)
    batches = [librispeech_like_batch(args.batch_size, generator) for _ in range(args.batches)]
    audio_per_batch = statistics.mean(b[2] for b in batches)
    factors = (0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2) if args.wavlm else (0.9, 1.0, 1.1)
    views = LaserViews(speed_factors=factors, semitones=(-2, 2))
    all_threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    cpu_name = f"CPU ({all_threads}-core {cpu_model()})"
    lines = [
        f"Batches of {args.batch_size} utterances, mean {audio_per_batch / args.batch_size:.1f} s "
        f"(LibriSpeech-like), speed factors {factors}, semitones (-2, 2); projected = "
        f"{TOTAL_UTTERANCES:,} utterances.",
        "",
        "| method | device | s / batch | utt / s | real-time factor | projected |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    results = {}
    if args.baseline_utts > 0:
        torch.set_num_threads(1)
        per_utt, audio = baseline_per_utterance(batches, args.baseline_utts, generator)
        results["baseline"] = per_utt
        lines.append(
            row(
                f"torchaudio resample + pitch_shift, per utterance ({args.baseline_utts} utts)",
                "CPU, 1 thread",
                per_utt * args.batch_size,
                args.batch_size,
                audio * args.batch_size,
            )
        )
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        label = f"CPU, {threads} thread{'s' if threads > 1 else ''}"
        seconds = time_batches(views, batches, cpu)
        results[f"ours_{threads}"] = seconds / args.batch_size
        lines.append(
            row("LaserViews (fused, batched)", label, seconds, args.batch_size, audio_per_batch)
        )
        seconds = time_batches(unfused(views), batches, cpu)
        lines.append(
            row(
                "speed_perturb + pitch_shift (2 steps)",
                label,
                seconds,
                args.batch_size,
                audio_per_batch,
            )
        )
    torch.set_num_threads(all_threads)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        seconds = time_batches(views, batches, gpu)
        lines.append(
            row(
                "LaserViews (fused, batched)",
                torch.cuda.get_device_name(gpu),
                seconds,
                args.batch_size,
                audio_per_batch,
            )
        )
    else:
        lines.append("| LaserViews (fused, batched) | CUDA | not measured: no GPU | | | |")
    print(f"Machine: {cpu_name}; torch {torch.__version__}")
    print()
    print("\n".join(lines))
    if "baseline" in results:
        print()
        print(
            f"Speed-up per utterance vs the torchaudio baseline (both 1 thread): "
            f"{results['baseline'] / results['ours_1']:.0f}x"
        )


if __name__ == "__main__":
    main()
