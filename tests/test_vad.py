"""Energy VAD (lasersb.data.vad): a hand-computed case and silence removal on a mini utterance."""

import math

import numpy as np
import pytest
import soundfile

from lasersb.data.vad import (
    EnergyVAD,
    format_segments,
    mask_to_segments,
    parse_segments,
    smooth_decisions,
    speech_only,
)

# 1 kHz, 4-sample frames every 2 samples, no dither, no int16 scaling: small enough by hand.
TINY = dict(sample_rate=1000, frame_length_ms=4, frame_shift_ms=2, dither=0.0, snip_edges=True,
            wav_scale=1.0)  # fmt: skip


def test_log_energy_of_an_impulse_by_hand():
    # x = 100 at n = 5. The DC filter y[n] = x[n] - x[n-1] + 0.999 y[n-1] gives y[5] = 100,
    # then y[6 + j] = -0.1 * 0.999**j. Frames (snip_edges): [0,4) [2,6) [4,8) [6,10) [8,12).
    x = np.zeros(12)
    x[5] = 100.0
    tail = [-0.1 * 0.999**j for j in range(6)]  # y[6] .. y[11]
    energies = [
        0.0,
        100.0**2,
        100.0**2 + tail[0] ** 2 + tail[1] ** 2,
        sum(t**2 for t in tail[0:4]),
        sum(t**2 for t in tail[2:6]),
    ]
    expected = [math.log(e + 1e-15) for e in energies]
    got = EnergyVAD(**TINY).log_energy(x)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_threshold_and_smoothing_by_hand():
    x = np.zeros(12)
    x[5] = 100.0
    # log energies ~ [-34.54, 9.21, 9.21, -3.222, -3.226]; threshold 0 -> loud [0, 1, 1, 0, 0].
    vad = EnergyVAD(**TINY, energy_threshold=0.0, energy_mean_scale=0.0, frames_context=0)
    assert vad.frames(x).astype(int).tolist() == [0, 1, 1, 0, 0]
    # Context 1: windows of 3 frames (2 at the edges); fractions [1/2, 2/3, 2/3, 1/3, 0].
    for proportion, expected in [(0.5, [0, 1, 1, 0, 0]), (0.3, [1, 1, 1, 1, 0])]:
        vad = EnergyVAD(**TINY, energy_threshold=0.0, energy_mean_scale=0.0, frames_context=1,
                        proportion_threshold=proportion)  # fmt: skip
        assert vad.frames(x).astype(int).tolist() == expected
    # Mean scale 0.5, constant -2: threshold -2 + 0.5 * mean(log E) = -4.25 keeps frames 1-4.
    log_e = EnergyVAD(**TINY).log_energy(x)
    assert -2.0 + 0.5 * log_e.mean() == pytest.approx(-4.2566, abs=1e-3)
    vad = EnergyVAD(**TINY, energy_threshold=-2.0, energy_mean_scale=0.5, frames_context=0)
    assert vad.frames(x).astype(int).tolist() == [0, 1, 1, 1, 1]


def test_frame_count_padding_and_smoothing_edges():
    # snip_edges=False: round(T / shift) frames (Kaldi/hyperion), whatever the frame length.
    vad = EnergyVAD()
    assert [vad.num_frames(n) for n in (16000, 16079, 16081, 100)] == [100, 100, 101, 1]
    assert len(vad.frames(np.zeros(16081))) == 101
    assert len(vad.frames(np.zeros(0))) == 0
    # Edge windows shrink; a window wider than the input uses the widest that fits.
    # Context 2, one loud first frame: fractions [1/3, 1/4, 1/5, 0, 0, 0]; 1/5 is not > 0.2.
    assert smooth_decisions(np.array([1, 0, 0, 0, 0, 0], bool), 2, 0.2).tolist() == [
        True, True, False, False, False, False]  # fmt: skip
    assert smooth_decisions(np.array([0, 1, 0], bool), 5, 0.3).tolist() == [True, True, True]


def test_segments_round_trip_and_speech_only():
    mask = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    segments = mask_to_segments(mask)
    assert format_segments(segments) == "1:3 5:8"
    assert parse_segments("1:3 5:8").tolist() == segments.tolist()
    assert speech_only(np.arange(9), segments).tolist() == [1, 2, 5, 6, 7]
    torch = pytest.importorskip("torch")
    assert speech_only(torch.arange(9), segments).tolist() == [1, 2, 5, 6, 7]
    with pytest.raises(ValueError, match="start:end"):
        parse_segments("1-3")
    with pytest.raises(ValueError, match="proportion_threshold"):
        EnergyVAD(proportion_threshold=1.0)


def test_sample_mask_follows_the_frames():
    # One decision per 160 samples; the Fourier-resampled mask switches half-way between frames.
    frames = np.zeros(100, dtype=bool)
    frames[30:60] = True
    mask = EnergyVAD().sample_mask(np.zeros(16000), frames=frames)
    (start, end), = mask_to_segments(mask).tolist()  # fmt: skip
    assert abs(start - 29.5 * 160) <= 2 and abs(end - 59.5 * 160) <= 2


def test_silence_padding_of_a_mini_utterance_is_removed(mini_corpus):
    path = sorted((mini_corpus / "VoxCeleb1" / "wav").glob("id*/*/*.wav"))[0]
    speech, sr = soundfile.read(path, dtype="float64")
    rng = np.random.RandomState(0)
    lead, trail = sr, 3 * sr // 2  # 1 s and 1.5 s of near-silence (-80 dBFS noise)
    padded = np.concatenate([1e-4 * rng.randn(lead), speech, 1e-4 * rng.randn(trail)])
    vad = EnergyVAD()
    segments = vad.segments(padded)
    kept = speech_only(padded, segments)
    # The padding goes; at most the context (2 frames) before the utterance and the DC filter's
    # decay (< 0.25 s) after it stay.
    assert segments[0, 0] >= lead - 3 * 160
    assert segments[-1, 1] <= lead + len(speech) + sr // 4
    assert len(kept) < len(speech) + 0.3 * sr < len(padded) - 2 * sr
    # The speech stays: the padded file keeps at least what the unpadded one keeps.
    alone = vad.segments(speech)
    assert len(kept) >= len(speech_only(speech, alone)) > 0.8 * len(speech)
