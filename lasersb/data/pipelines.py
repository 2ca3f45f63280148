"""Audio dataset pipelines shared by every recipe: SpeechBrain CSV -> checked waveforms -> batches.

:func:`audio_dataset` builds a ``speechbrain.dataio.dataset.DynamicItemDataset`` from a
SpeechBrain CSV (``ID,duration,wav,...``, ``$data_root``-style placeholders replaced) whose
``sig`` item is the waveform read with :func:`lasersb.data.audio.read_audio` (every problem with a
file is an :class:`~lasersb.data.audio.AudioError` naming it). :func:`dataloader_options` returns
the keyword arguments of ``speechbrain.dataio.dataloader.make_dataloader`` (and so of
``Brain.fit(train_loader_kwargs=...)``): plain batches, or SpeechBrain's
``DynamicBatchSampler`` bucketing by duration under a total-duration budget, or
:class:`LengthBucketBatchSampler`, s3prl's SUPERB ASR batching (fixed-size batches of
length-sorted utterances, halved when long, in random order). Batches are ``PaddedBatch``:
``batch.sig`` is ``(wavs (B, T), rel_lens (B,))``. :func:`add_ctc_targets` adds the CTC target
item (``tokens``) of the ASR/PR recipes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from lasersb.data.audio import read_audio

__all__ = [
    "PASSTHROUGH_KEYS",
    "LengthBucketBatchSampler",
    "ShardedSampler",
    "add_ctc_targets",
    "audio_dataset",
    "dataloader_options",
]

#: CSV columns passed through as dataset outputs when present (besides ``id`` and ``sig``).
PASSTHROUGH_KEYS = ("duration", "spk_id", "wrd", "phn")


def _csv_columns(csv_path: Path) -> list[str]:
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"Data CSV not found: {csv_path}. Run the data preparation step of the recipe first "
            "(e.g. data_prep/librispeech_prepare.py), or fix the path in the hparams file."
        )
    with open(csv_path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"Data CSV {csv_path} is empty; rerun the data preparation.")
    missing = [column for column in ("ID", "wav") if column not in header]
    if missing:
        raise ValueError(
            f"Data CSV {csv_path} lacks the column(s) {', '.join(missing)} (has: "
            f"{', '.join(header)}). SpeechBrain CSVs need ID and wav (and duration for sorting, "
            "filtering and dynamic batching)."
        )
    return header


def audio_dataset(
    csv_path,
    sample_rate: int = 16000,
    max_duration: float | None = None,
    min_duration: float | None = None,
    sort: str | None = None,
    replacements: dict | None = None,
    min_samples: int = 0,
):
    """Build a dataset of checked waveforms from a SpeechBrain CSV.

    Arguments
    ---------
    csv_path : str or os.PathLike
        CSV with at least ``ID`` and ``wav`` columns (``duration`` in seconds needed for
        ``max_duration``/``min_duration``/``sort`` and dynamic batching).
    sample_rate : int
        Expected sample rate; files at another rate raise (see :func:`read_audio`).
    max_duration, min_duration : float, optional
        Keep only utterances with ``min_duration <= duration <= max_duration`` seconds.
    sort : str, optional
        ``"ascending"`` or ``"descending"`` by duration; ``None`` keeps the CSV order.
    replacements : dict, optional
        ``{"data_root": "/path"}`` replaces ``$data_root`` in every CSV field.
    min_samples : int
        Minimum waveform length for :func:`read_audio` (e.g. 400, the upstream's receptive
        field).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Output keys ``id``, ``sig`` (float32 ``(T,)``) and those of :data:`PASSTHROUGH_KEYS`
        present in the CSV.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> root = Path(tempfile.mkdtemp())
    >>> soundfile.write(root / "a.flac", np.zeros(1600, dtype="float32"), 16000)
    >>> _ = (root / "data.csv").write_text("ID,duration,wav,spk_id\\nu1,0.1,$root/a.flac,s1\\n")
    >>> dataset = audio_dataset(root / "data.csv", replacements={"root": str(root)})
    >>> item = dataset[0]
    >>> item["id"], item["sig"].shape, item["duration"], item["spk_id"]
    ('u1', torch.Size([1600]), 0.1, 's1')
    """
    import speechbrain as sb

    csv_path = Path(csv_path)
    columns = _csv_columns(csv_path)
    if sort not in (None, "ascending", "descending"):
        raise ValueError(f"sort must be None, 'ascending' or 'descending', got {sort!r}.")
    needs_duration = sort is not None or max_duration is not None or min_duration is not None
    if needs_duration and "duration" not in columns:
        raise ValueError(
            f"Data CSV {csv_path} has no duration column, needed for sorting/filtering by "
            "duration; rerun the data preparation."
        )
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
        str(csv_path), replacements=dict(replacements or {})
    )

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav, sample_rate=sample_rate, min_samples=min_samples)

    dataset.add_dynamic_item(audio_pipeline)
    dataset.set_output_keys(["id", "sig"] + [key for key in PASSTHROUGH_KEYS if key in columns])
    if needs_duration:
        key_max = {"duration": max_duration} if max_duration is not None else {}
        key_min = {"duration": min_duration} if min_duration is not None else {}
        dataset = dataset.filtered_sorted(
            key_max_value=key_max,
            key_min_value=key_min,
            sort_key="duration" if sort is not None else None,
            reverse=sort == "descending",
        )
    return dataset


def loader_generator(seed: int = 0) -> torch.Generator:
    """A generator of its own for a ``DataLoader`` (seeded with ``seed``).

    Each ``iter(loader)`` draws a worker base seed from the loader's generator, by default the
    global torch RNG. A run resumed mid-epoch restores the global RNG (``RandomState``) and then
    creates the epoch's iterator again: that extra draw would shift every later augmentation.
    With a generator of its own, the loader leaves the global RNG alone.

    Example
    -------
    >>> state = torch.get_rng_state()
    >>> _ = iter(torch.utils.data.DataLoader(range(4), generator=loader_generator(0)))
    >>> torch.equal(state, torch.get_rng_state())
    True
    """
    return torch.Generator().manual_seed(int(seed or 0))


class _ShuffledFixedBatches(torch.utils.data.Sampler):
    """Fixed batches (``self.batches``, built by the subclass) in an epoch-seeded order.

    The order of epoch ``e`` is a permutation seeded with ``seed + e``, where ``e`` is the
    ``epoch_counter``'s current epoch (a resumed run draws the interrupted epoch's order again),
    else the epoch set by :meth:`set_epoch` (DDP wrappers) or an internal count.
    """

    def _set_order(self, shuffle, seed, epoch_counter) -> None:
        self.shuffle = bool(shuffle)
        self.seed = int(seed or 0)
        self.epoch_counter = epoch_counter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next iteration's order (called by samplers wrapping this one)."""
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            yield from (list(b) for b in self.batches)
            return
        epoch = self.epoch if self.epoch_counter is None else int(self.epoch_counter.current)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.epoch_counter is None:
            self.epoch += 1
        for index in torch.randperm(len(self.batches), generator=generator).tolist():
            yield list(self.batches[index])

    def __len__(self) -> int:
        return len(self.batches)


class LengthBucketBatchSampler(_ShuffledFixedBatches):
    """s3prl's SUPERB ASR batching: fixed buckets of length-sorted utterances, shuffled order.

    As s3prl's ``downstream/asr/dataset.py``: utterances are sorted by decreasing duration and
    cut into consecutive buckets of ``batch_size``; a bucket whose longest utterance exceeds
    ``halve_above_seconds`` is split into two batches of ``batch_size // 2``; a last bucket of
    one utterance is dropped. The buckets are fixed; only their order is shuffled, per epoch.
    (s3prl's threshold is 2,000 *samples*, 0.125 s at 16 kHz, so every LibriSpeech bucket of 32
    is halved: the effective batch is 16.)

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        A dataset whose items have a ``duration`` (seconds).
    batch_size : int
        Utterances per bucket.
    halve_above_seconds : float, optional
        Buckets whose longest utterance is longer are halved (``None``: never).
    shuffle : bool
        Shuffle the order of the batches (seeded by ``seed`` and the epoch).
    seed : int
        Seed of the shuffling.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        Its ``current`` epoch seeds each epoch's order, so that a run resumed from a checkpoint
        draws the order of the interrupted epoch again; without it, :meth:`set_epoch` (DDP) or
        an internal count is used.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> durations = [1.0, 5.0, 3.0, 2.0, 4.0, 6.0, 0.1]
    >>> data = DynamicItemDataset({f"u{i}": {"duration": d} for i, d in enumerate(durations)})
    >>> sampler = LengthBucketBatchSampler(data, batch_size=4, halve_above_seconds=5.5,
    ...                                    shuffle=False)
    >>> [[durations[i] for i in batch] for batch in sampler]
    [[6.0, 5.0], [4.0, 3.0], [2.0, 1.0, 0.1]]
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        halve_above_seconds: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        epoch_counter=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        with dataset.output_keys_as(["duration"]):
            durations = [float(item["duration"]) for item in dataset]
        order = sorted(range(len(durations)), key=lambda i: -durations[i])
        self.batches = []
        for start in range(0, len(order), batch_size):
            bucket = order[start : start + batch_size]
            if len(bucket) == batch_size:
                longest = max(durations[i] for i in bucket)
                if batch_size >= 2 and halve_above_seconds is not None:
                    if longest > halve_above_seconds:
                        self.batches += [bucket[: batch_size // 2], bucket[batch_size // 2 :]]
                        continue
                self.batches.append(bucket)
            elif len(bucket) > 1 or not self.batches:
                self.batches.append(bucket)  # the last, partial bucket (s3prl: if > 1)
        self._set_order(shuffle, seed, epoch_counter)


class ShardedSampler(torch.utils.data.DistributedSampler):
    """This rank's share of another sampler's items (indices or whole batches), for DDP.

    SpeechBrain's ``DistributedSamplerWrapper`` does the same but returns
    ``iter(itemgetter(*positions)(items))``: when a rank's share is a single batch,
    ``itemgetter`` returns that batch itself, so the loader iterates over its indices and fails
    ("'int' object is not iterable"). :class:`lasersb.brains.base.DistributedBrain` puts this
    class in its place. Shares are equal (the last items are repeated, as ``DistributedSampler``
    does), so every rank runs the same number of steps.

    Example
    -------
    >>> batches = [[0, 1], [2, 3], [4]]
    >>> [list(ShardedSampler(batches, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    [[[0, 1], [4]], [[2, 3], [0, 1]]]
    >>> list(ShardedSampler([[0, 1], [2, 3]], num_replicas=2, rank=1, shuffle=False))
    [[2, 3]]
    """

    def __init__(self, sampler, **kwargs):
        super().__init__(sampler, **kwargs)  # DistributedSampler only takes len(sampler)
        self.sampler = sampler

    def __iter__(self):
        items = list(self.sampler)
        return iter([items[i] for i in super().__iter__()])

    def set_epoch(self, epoch):
        """Set the epoch of this shuffle and of the wrapped sampler."""
        super().set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class TotalLengthBatchSampler(_ShuffledFixedBatches):
    """Spin's batching: consecutive length-sorted utterances up to a total of audio per batch.

    As the Spin release's ``MaxLengthBatchSampler`` (``src/data/sampler.py``): utterances are
    sorted by decreasing duration; a batch takes consecutive utterances while the sum of
    ``min(duration, crop_seconds)`` stays within ``max_total_seconds`` (4,096,000 samples =
    256 s at 16 kHz); the last, partial batch is dropped (``drop_last``); the batch order is
    shuffled per epoch with ``seed + epoch``. The budget counts the unpadded (cropped) audio of
    one view; Spin's two views double what the upstream sees.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Items with a ``duration`` (seconds).
    max_total_seconds : float
        Budget per batch.
    crop_seconds : float, optional
        Utterances are counted as at most this long (they are cropped to it in training).
    shuffle, drop_last : bool
        As the release (both True for training).
    seed : int
        Seed of the order.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        Seeds each epoch's order with its ``current`` epoch (a resumed run draws the same order).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> durations = [1.0, 5.0, 3.0, 2.0, 4.0, 6.0]
    >>> data = DynamicItemDataset({f"u{i}": {"duration": d} for i, d in enumerate(durations)})
    >>> sampler = TotalLengthBatchSampler(data, 8.0, crop_seconds=4.5, shuffle=False)
    >>> [[durations[i] for i in batch] for batch in sampler]
    [[6.0], [5.0], [4.0, 3.0]]
    """

    def __init__(self, dataset, max_total_seconds: float, crop_seconds=None, shuffle=True,
                 drop_last=True, seed: int = 0, epoch_counter=None):  # fmt: skip
        with dataset.output_keys_as(["duration"]):
            durations = [float(item["duration"]) for item in dataset]
        order = sorted(range(len(durations)), key=lambda i: -durations[i])
        crop = float("inf") if crop_seconds is None else float(crop_seconds)
        self.batches, batch, total = [], [], 0.0
        for index in order:
            length = min(durations[index], crop)
            if batch and total + length > max_total_seconds:
                self.batches.append(batch)
                batch, total = [], 0.0
            batch.append(index)
            total += length
        if batch and (not drop_last or not self.batches):
            self.batches.append(batch)
        self._set_order(shuffle, seed, epoch_counter)


def dataloader_options(
    dataset,
    batch_size: int,
    dynamic_batching: bool = False,
    max_batch_length: float | None = None,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    num_buckets: int = 20,
    max_batch_ex: int | None = None,
    bucketing: bool = False,
    halve_above_seconds: float | None = None,
    epoch_counter=None,
) -> dict:
    """Keyword arguments for ``make_dataloader`` / ``Brain.fit(train_loader_kwargs=...)``.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        A dataset with a ``duration`` entry (seconds) when ``dynamic_batching``.
    batch_size : int
        Batch size of plain batching (not used by dynamic batching: see ``max_batch_ex``).
    dynamic_batching : bool
        Use SpeechBrain's ``DynamicBatchSampler``: utterances of similar duration are bucketed
        (``num_buckets``) and each batch holds at most ``max_batch_length`` seconds of padded
        audio (``utterances x longest duration``); a single utterance longer than that forms a
        batch of its own.
    max_batch_length : float, optional
        Budget in seconds per dynamic batch (required when ``dynamic_batching``).
    shuffle : bool
        Shuffle. Dynamic batches are reshuffled with ``seed`` (+ epoch when ``set_epoch`` is
        called); plain batching returns ``shuffle=True``, which ``Brain.fit`` turns into a
        ``ReproducibleRandomSampler`` seeded by ``SB_GLOBAL_SEED`` (set by
        ``speechbrain.utils.seed_everything``).
    num_workers : int
        DataLoader worker processes.
    seed : int
        Seed of the dynamic batch shuffling.
    num_buckets : int
        Number of duration buckets of the dynamic batching.
    max_batch_ex : int, optional
        Maximum utterances per dynamic batch (``None``: no cap).
    bucketing : bool
        Use :class:`LengthBucketBatchSampler` (s3prl's ASR batching: ``batch_size`` consecutive
        length-sorted utterances, halved above ``halve_above_seconds``, shuffled order seeded
        by ``seed`` and ``epoch_counter``). Exclusive with ``dynamic_batching``.
    halve_above_seconds : float, optional
        See ``bucketing``.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        See ``bucketing``.

    Returns
    -------
    dict
        ``{"batch_size", "shuffle", "num_workers"}`` or ``{"batch_sampler", "num_workers"}``,
        plus a ``generator`` of its own (:func:`loader_generator`, seeded with ``seed``).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = {f"u{i}": {"duration": 1.0 + i} for i in range(6)}
    >>> dataset = DynamicItemDataset(data)
    >>> sorted(dataloader_options(dataset, batch_size=4).items())[:3]
    [('batch_size', 4), ('generator', <torch._C.Generator object at ...>), ('num_workers', 0)]
    >>> options = dataloader_options(dataset, 4, dynamic_batching=True, max_batch_length=8.0)
    >>> batches = list(options["batch_sampler"])
    >>> all(len(b) * max(1.0 + i for i in b) <= 8.0 or len(b) == 1 for b in batches)
    True
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if bucketing and dynamic_batching:
        raise ValueError("Choose one of bucketing and dynamic_batching, not both.")
    if bucketing:
        sampler = LengthBucketBatchSampler(
            dataset,
            batch_size,
            halve_above_seconds=halve_above_seconds,
            shuffle=shuffle,
            seed=seed,
            epoch_counter=epoch_counter,
        )
        return {
            "batch_sampler": sampler,
            "num_workers": num_workers,
            "generator": loader_generator(seed),
        }
    if not dynamic_batching:
        return {
            "batch_size": int(batch_size),
            "shuffle": bool(shuffle),
            "num_workers": num_workers,
            "generator": loader_generator(seed),
        }
    if max_batch_length is None or max_batch_length <= 0:
        raise ValueError(
            "dynamic_batching=True needs max_batch_length (seconds of padded audio per batch), "
            f"got {max_batch_length!r}."
        )
    from speechbrain.dataio.sampler import DynamicBatchSampler

    num_buckets = max(1, min(int(num_buckets), len(dataset)))
    sampler = DynamicBatchSampler(
        dataset,
        max_batch_length=max_batch_length,
        num_buckets=num_buckets,
        length_func=lambda item: item["duration"],
        shuffle=bool(shuffle),
        batch_ordering="random" if shuffle else "ascending",
        max_batch_ex=max_batch_ex,
        seed=seed,
    )
    return {
        "batch_sampler": sampler,
        "num_workers": num_workers,
        "generator": loader_generator(seed),
    }


def add_ctc_targets(datasets, tokenizer, target_key: str, output_keys=None):
    """Add a ``tokens`` item (CTC targets) computed from ``target_key`` to each dataset.

    Arguments
    ---------
    datasets : list of speechbrain.dataio.dataset.DynamicItemDataset
        Datasets built by :func:`audio_dataset`.
    tokenizer : CharTokenizer, PhoneTokenizer or SentencePieceTokenizer
        Its ``encode`` maps the ``target_key`` field to token ids.
    target_key : str
        ``"wrd"`` (ASR) or ``"phn"`` (PR).
    output_keys : list of str, optional
        Output keys; default ``["id", "sig", "wav", "tokens", target_key]`` (``wav`` is the
        key of the feature cache, :class:`lasersb.data.feature_cache.FeatureCache`).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> from lasersb.data.tokenizers import CharTokenizer
    >>> ds = DynamicItemDataset({"u1": {"wrd": "HI THERE"}})
    >>> add_ctc_targets([ds], CharTokenizer(), "wrd", output_keys=["id", "tokens"])
    >>> ds[0]["tokens"].tolist()
    [9, 10, 1, 21, 9, 6, 19, 6]
    """
    import speechbrain as sb

    @sb.utils.data_pipeline.takes(target_key)
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(text):
        ids = tokenizer.encode(text)
        if not ids:
            raise ValueError(
                f"Empty {target_key!r} transcription: remove the utterance from the manifest"
            )
        return torch.LongTensor(ids)

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    if output_keys is None:
        output_keys = ["id", "sig", "wav", "tokens", target_key]
    sb.dataio.dataset.set_output_keys(datasets, output_keys)
