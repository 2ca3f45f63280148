#!/usr/bin/env python3
"""Spin's speaker perturbation: the release's Praat "Change gender" against our batched one.

On the same utterances (default: the first ``--utterances`` of the embedded mini corpus's
train-clean-100; ``--folder`` takes any folder of .flac/.wav files, e.g. real LibriSpeech):

1. **Shifts at fixed ratios** (formant ratio ``--formant``, pitch ratio ``--pitch``, pitch range
   factor 1, equaliser off): the measured median-F0 ratio (``librosa.pyin``, independent of both
   methods) and the measured F1 and F2 ratios (Praat's Burg formant tracker, medians over the
   voiced frames), mean and standard deviation over the utterances;
2. **Throughput** with the release's random draws and the equaliser on: seconds of audio
   perturbed per second, (a) :class:`lasersb.augment.praat.PraatSpeakerPerturbation` one
   utterance at a time in this process (one data-loader worker's rate), (b)
   :class:`lasersb.augment.speaker.SpeakerPerturbation` on the padded batch of all of them
   (CPU, all threads; CUDA too when available); and the time the release's run would spend on
   it (5,000 steps x 256 s of audio) with one worker.

Prints Markdown tables (no assertion: the numbers go to recipes/LibriSpeech/ssft/README.md).

    python bench/speaker_perturbation.py [--utterances 16] [--folder DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lasersb.augment.praat import PraatSpeakerPerturbation
from lasersb.augment.speaker import RandomEqualiser, SpeakerPerturbation

SAMPLE_RATE = 16000
SPIN_AUDIO_SECONDS = 5000 * 256.0  # total_steps x batch_total_seconds


def load_utterances(folder, count):
    import soundfile as sf

    if folder is None:
        from lasersb.data.mini import get_mini_corpus

        folder = get_mini_corpus() / "LibriSpeech" / "train-clean-100"
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".flac", ".wav"))[:count]
    if not files:
        raise SystemExit(f"No .flac/.wav files under {folder}.")
    wavs = []
    for path in files:
        wav, rate = sf.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{path}: {rate} Hz; this bench expects {SAMPLE_RATE} Hz audio.")
        wavs.append(wav if wav.ndim == 1 else wav.mean(-1))
    return wavs


def median_f0(wav):
    import librosa

    f0, _, _ = librosa.pyin(wav, fmin=50, fmax=800, sr=SAMPLE_RATE, frame_length=1024)
    return float(np.nanmedian(f0))


def formants(wav):
    """Median F1 and F2 (Hz) over the frames Praat finds voiced."""
    import parselmouth

    sound = parselmouth.Sound(wav.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    pitch = sound.to_pitch_ac(pitch_floor=75, pitch_ceiling=600)
    track = sound.to_formant_burg(time_step=0.01, maximum_formant=5500)
    values = {1: [], 2: []}
    for t in track.xs():
        if pitch.get_value_at_time(t) > 0:
            for k in values:
                value = track.get_value_at_time(k, t)
                if np.isfinite(value):
                    values[k].append(value)
    return float(np.median(values[1])), float(np.median(values[2]))


def mean_std(values):
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def shift_table(wavs, formant_ratio, pitch_ratio):
    praat = PraatSpeakerPerturbation(eq_gain_db=0.0)
    batched = SpeakerPerturbation(sample_rate=SAMPLE_RATE)
    rng = np.random.default_rng(0)
    rows = {"praat (release)": [], "batched (ours)": []}
    semitones = 12.0 * np.log2(pitch_ratio)
    for wav in wavs:
        reference = (median_f0(wav), *formants(wav))
        outputs = {
            "praat (release)": praat(wav, rng, ratios=(formant_ratio, pitch_ratio, 1.0)),
            "batched (ours)": batched(
                torch.tensor(wav)[None], None, formant=[formant_ratio], semitones=[semitones]
            )[0].numpy(),
        }
        for name, out in outputs.items():
            measured = (median_f0(out), *formants(out))
            rows[name].append([m / r for m, r in zip(measured, reference)])
    print(f"\nShifts at formant ratio {formant_ratio}, pitch ratio {pitch_ratio} "
          f"(semitones {semitones:.2f}; batched rounds to a quarter semitone), "
          f"{len(wavs)} utterances, mean ± std of measured/original:\n")  # fmt: skip
    print("| method | median F0 ratio | F1 ratio | F2 ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in rows.items():
        columns = [mean_std([v[i] for v in values]) for i in range(3)]
        print(f"| {name} | " + " | ".join(columns) + " |")


def throughput_table(wavs):
    audio_seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    praat = PraatSpeakerPerturbation()
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for wav in wavs:
        praat(wav, rng)
    praat_rate = audio_seconds / (time.perf_counter() - start)
    rows = [("praat (release), per utterance, 1 process", praat_rate)]
    padded = torch.nn.utils.rnn.pad_sequence([torch.tensor(w) for w in wavs], batch_first=True)
    lens = torch.tensor([len(w) for w in wavs]) / padded.shape[1]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        batched = SpeakerPerturbation(equaliser=RandomEqualiser()).to(device)
        x, n = padded.to(device), lens.to(device)
        batched(x, n, generator=torch.Generator().manual_seed(0))  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        batched(x, n, generator=torch.Generator().manual_seed(1))
        if device == "cuda":
            torch.cuda.synchronize()
        rate = audio_seconds / (time.perf_counter() - start)
        rows.append((f"batched (ours), one padded batch, {device}", rate))
    print(f"\nThroughput on {len(wavs)} utterances ({audio_seconds:.1f} s of audio), "
          f"{platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}:\n")  # fmt: skip
    print("| method | audio seconds per second | Spin run (1.28 M s of audio) |")
    print("| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {SPIN_AUDIO_SECONDS / rate / 3600:.2f} h |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--folder", default=None, help="folder of 16 kHz .flac/.wav files")
    parser.add_argument("--formant", type=float, default=1.2)
    parser.add_argument("--pitch", type=float, default=1.5)
    args = parser.parse_args()
    wavs = load_utterances(args.folder, args.utterances)
    shift_table(wavs, args.formant, args.pitch)
    shift_table(wavs, 1.0 / args.formant, 1.0 / args.pitch)
    throughput_table(wavs)


if __name__ == "__main__":
    main()
