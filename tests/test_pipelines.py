"""Tests of lasersb.data.pipelines: CSV -> checked waveforms -> plain and dynamic batches."""

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.dataio.dataloader import make_dataloader

from lasersb.data.audio import AudioError
from lasersb.data.pipelines import audio_dataset, dataloader_options

DURATIONS = [0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 0.4, 0.9, 2.5, 0.6]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Ten short noise files and a CSV that addresses them through ``$data_root``."""
    root = tmp_path_factory.mktemp("pipeline_corpus")
    rng = np.random.default_rng(0)
    lines = ["ID,duration,wav,spk_id,wrd"]
    for i, duration in enumerate(DURATIONS):
        samples = int(duration * 16000)
        soundfile.write(root / f"u{i}.flac", rng.uniform(-0.3, 0.3, samples), 16000)
        lines.append(f"u{i},{duration},$data_root/u{i}.flac,spk{i % 3},WORD {i}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_items_and_passthrough(corpus):
    dataset = audio_dataset(corpus / "data.csv", replacements={"data_root": str(corpus)})
    assert len(dataset) == len(DURATIONS)
    item = dataset[2]
    assert item["id"] == "u2" and item["spk_id"] == "spk2" and item["wrd"] == "WORD 2"
    assert item["duration"] == 0.8
    assert item["sig"].dtype == torch.float32 and item["sig"].shape == (12800,)
    assert "phn" not in item


def test_filter_and_sort(corpus):
    dataset = audio_dataset(
        corpus / "data.csv",
        min_duration=0.5,
        max_duration=1.5,
        sort="descending",
        replacements={"data_root": str(corpus)},
    )
    with dataset.output_keys_as(["id", "duration"]):
        durations = [item["duration"] for item in dataset]
    assert durations == sorted((d for d in DURATIONS if 0.5 <= d <= 1.5), reverse=True)
    with pytest.raises(ValueError, match="sort must be"):
        audio_dataset(corpus / "data.csv", sort="random")


def test_bad_inputs_name_the_file(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="Data CSV not found.*nope.csv"):
        audio_dataset(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("ID,path\nu1,x.flac\n")
    with pytest.raises(ValueError, match="lacks the column.*wav"):
        audio_dataset(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text(f"ID,duration,wav\nu1,1.0,{tmp_path}/gone.flac\n")
    dataset = audio_dataset(tmp_path / "missing.csv")
    with pytest.raises(AudioError, match="gone.flac"):
        dataset[0]


def test_plain_batches(corpus):
    dataset = audio_dataset(corpus / "data.csv", replacements={"data_root": str(corpus)})
    options = dataloader_options(dataset, batch_size=4)
    generator = options.pop("generator")
    assert isinstance(generator, torch.Generator) and generator.initial_seed() == 0
    assert options == {"batch_size": 4, "shuffle": False, "num_workers": 0}
    batches = list(make_dataloader(dataset, **options))
    assert [len(b.id) for b in batches] == [4, 4, 2]
    wavs, lens = batches[0].sig
    assert wavs.shape == (4, int(1.0 * 16000)) and lens.max() == 1.0
    torch.testing.assert_close(lens, torch.tensor([0.3, 0.5, 0.8, 1.0]))


@pytest.mark.parametrize("shuffle", [False, True])
def test_dynamic_batches_respect_budget(corpus, shuffle):
    dataset = audio_dataset(corpus / "data.csv", replacements={"data_root": str(corpus)})
    budget = 2.0
    options = dataloader_options(
        dataset,
        8,
        dynamic_batching=True,
        max_batch_length=budget,
        shuffle=shuffle,
        seed=1,
        num_buckets=4,
    )
    loader = make_dataloader(dataset, **options)
    seen = []
    for batch in loader:
        wavs, lens = batch.sig
        padded_seconds = wavs.shape[0] * wavs.shape[1] / 16000
        # the padded batch fits the budget, unless one utterance alone is longer than it
        assert padded_seconds <= budget + 1e-6 or wavs.shape[0] == 1
        seen.extend(batch.id)
    assert sorted(seen) == sorted(f"u{i}" for i in range(len(DURATIONS)))  # each exactly once
    # same seed -> same batches
    fresh = [
        list(
            dataloader_options(
                dataset,
                8,
                dynamic_batching=True,
                max_batch_length=budget,
                shuffle=shuffle,
                seed=1,
                num_buckets=4,
            )["batch_sampler"]
        )
        for _ in range(2)
    ]
    assert fresh[0] == fresh[1]


def test_dynamic_batching_needs_budget(corpus):
    dataset = audio_dataset(corpus / "data.csv", replacements={"data_root": str(corpus)})
    with pytest.raises(ValueError, match="max_batch_length"):
        dataloader_options(dataset, 4, dynamic_batching=True)


def test_length_buckets_as_s3prl_and_resumable_order():
    """s3prl's ASR batching: sorted buckets, halved when long, order fixed by seed and epoch."""
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.utils.epoch_loop import EpochCounter

    from lasersb.data.pipelines import LengthBucketBatchSampler

    durations = [float(d) for d in torch.randperm(40, generator=torch.Generator().manual_seed(0))]
    data = DynamicItemDataset({f"u{i}": {"duration": d + 1} for i, d in enumerate(durations)})
    plain = list(LengthBucketBatchSampler(data, batch_size=8, shuffle=False))
    assert [len(b) for b in plain] == [8] * 5
    lengths = [durations[i] for batch in plain for i in batch]
    assert lengths == sorted(lengths, reverse=True)  # consecutive length-sorted buckets
    # s3prl's threshold (2,000 samples = 0.125 s) halves every bucket: batches of 4.
    halved = LengthBucketBatchSampler(data, 8, halve_above_seconds=0.125, shuffle=False)
    assert [len(b) for b in halved] == [4] * 10
    # The shuffled order depends on the epoch counter only, so a resumed run redraws it.
    counter = EpochCounter(3)
    options = dataloader_options(
        data, 8, shuffle=True, seed=1, bucketing=True, epoch_counter=counter
    )
    sampler = options["batch_sampler"]
    first, again = list(sampler), list(sampler)
    assert first == again and sorted(map(tuple, first)) == sorted(map(tuple, plain))
    counter.current = 1
    assert list(sampler) != first
    with pytest.raises(ValueError, match="bucketing and dynamic_batching"):
        dataloader_options(data, 8, bucketing=True, dynamic_batching=True, max_batch_length=9)
