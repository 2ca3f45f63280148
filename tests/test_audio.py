"""Tests of lasersb.data.audio: every bad-file case raises an AudioError naming the file and fix."""

import numpy as np
import pytest
import soundfile
import torch

from lasersb.data.audio import AudioError, audio_info, read_audio


def _tone(num_samples, sample_rate=16000, channels=1):
    t = np.arange(num_samples) / sample_rate
    wav = 0.3 * np.sin(2 * np.pi * 440.0 * t).astype("float32")
    return wav if channels == 1 else np.stack([wav] * channels, axis=1)


def test_reads_mono_flac_exactly(tmp_path):
    path = tmp_path / "a.flac"
    wav = _tone(4000)
    soundfile.write(path, wav, 16000)
    out = read_audio(path, min_samples=400)
    assert out.dtype == torch.float32 and out.shape == (4000,)
    # flac is 16-bit PCM: exact up to quantisation
    assert np.abs(out.numpy() - wav).max() < 1e-4
    assert audio_info(path) == (16000, 4000, 1)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found.*missing.wav"):
        read_audio(tmp_path / "missing.wav")


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.flac"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="garbage.flac.*corrupt"):
        read_audio(path)


def test_truncated_flac(tmp_path):
    path = tmp_path / "trunc.flac"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 32000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"trunc\.flac.*(truncated|corrupt)"):
        read_audio(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="Empty audio file.*empty.wav"):
        read_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    path = tmp_path / "nan.wav"
    wav = _tone(1600)
    wav[100] = bad
    soundfile.write(path, wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav contains 1 NaN/inf"):
        read_audio(path)


def test_wrong_sample_rate_and_resample(tmp_path):
    path = tmp_path / "8k.wav"
    soundfile.write(path, _tone(8000, sample_rate=8000), 8000)
    with pytest.raises(AudioError, match="8k.wav has a sample rate of 8000 Hz.*resample=True"):
        read_audio(path)
    out = read_audio(path, resample=True)
    assert out.shape == (16000,)
    # still a 440 Hz tone after resampling
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) <= 1


def test_multichannel_needs_downmix(tmp_path):
    path = tmp_path / "stereo.wav"
    stereo = _tone(1600, channels=2)
    stereo[:, 1] = 0.0
    soundfile.write(path, stereo, 16000)
    with pytest.raises(AudioError, match="stereo.wav has 2 channels.*downmix=True"):
        read_audio(path)
    out = read_audio(path, downmix=True)
    assert out.shape == (1600,)
    assert np.allclose(out.numpy(), stereo[:, 0] / 2, atol=1e-4)


def test_too_short(tmp_path):
    path = tmp_path / "short.flac"
    soundfile.write(path, _tone(399), 16000)
    with pytest.raises(AudioError, match=r"short.flac is too short: 399 samples.*min_samples=400"):
        read_audio(path, min_samples=400)
    assert read_audio(path, min_samples=399).shape == (399,)
