"""Speaker data of the DINO and x-vector recipes: training segments, labels, trials, cohorts.

- :func:`speaker_dataset`: a VoxCeleb-style manifest (``ID,duration,wav,spk_id``) as a
  SpeechBrain dataset whose ``sig`` is a random segment of each utterance (read from disk
  without loading the whole file, :func:`read_segment`), or of its speech only when the
  manifest has energy-VAD segments (``speech_only=True``, :func:`read_speech_segment`), with
  :func:`speaker_label_encoder` for supervised training and :func:`speaker_train_loader`
  (shuffled, seeded, full batches).
- :func:`read_trials`: a VoxCeleb trial list; :func:`cohort_from_manifest`: the utterances of
  a training manifest used for mean subtraction and AS-norm.

Scoring is in :mod:`lasersb.metrics.trial_scoring`.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import soundfile
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from lasersb.data.audio import AudioError, read_audio
from lasersb.data.pipelines import dataloader_options
from lasersb.data.vad import parse_segments
from lasersb.data.vad import speech_only as keep_speech

TARGET_WORDS = {"target": 1, "nontarget": 0, "1": 1, "0": 0, "tgt": 1, "imp": 0}


# ---------------------------------------------------------------------------- training data
def read_segment(path, num_samples=None, sample_rate=16000, generator=None) -> torch.Tensor:
    """Read a random segment of ``num_samples`` (the whole file when shorter or ``None``).

    Arguments
    ---------
    path : str or Path
        Mono audio file at ``sample_rate``.
    num_samples : int, optional
        Segment length; ``None`` reads everything (checked with
        :func:`lasersb.data.audio.read_audio`).
    sample_rate : int
        Expected sample rate.
    generator : random.Random, optional
        Source of the offset (Python's global one by default, seeded by the recipe).

    Returns
    -------
    torch.Tensor
        ``(T,)`` float32 waveform.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(p, np.arange(100, dtype="float32") / 100, 16000)
    >>> read_segment(p, 10, generator=random.Random(0)).shape
    torch.Size([10])
    >>> read_segment(p, 1000).shape
    torch.Size([100])
    """
    if num_samples is None:
        return read_audio(path, sample_rate=sample_rate)
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise AudioError(
            f"Cannot open {path} ({err}). Check the manifest paths (data_folder) or re-run the "
            "data preparation; VoxCeleb2 m4a files must be converted to wav first."
        ) from err
    if info.samplerate != sample_rate:
        raise AudioError(
            f"{path} has a sample rate of {info.samplerate} Hz but {sample_rate} Hz is expected. "
            "Resample the corpus first."
        )
    total = int(info.frames)
    if total <= num_samples:
        return read_audio(path, sample_rate=sample_rate, downmix=True)
    rng = generator if generator is not None else random
    start = rng.randint(0, total - num_samples)
    samples, _ = soundfile.read(
        str(path), start=start, stop=start + num_samples, dtype="float32", always_2d=True
    )
    return torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))


def read_speech_segment(
    path, segments, num_samples=None, sample_rate=16000, generator=None
) -> torch.Tensor:
    """Read a random segment of ``num_samples`` of the speech of a file (non-speech removed).

    The speech is the concatenation of ``segments`` (``[start, end)`` sample ranges, as
    :class:`lasersb.data.vad.EnergyVAD` finds them); the offset is drawn in that
    concatenation, as hyperion crops its VAD'ed training audio, and only the file span that
    covers the chosen speech is read. All the speech when it is shorter than ``num_samples``
    or ``num_samples`` is ``None``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(p, np.arange(100, dtype="float32") / 128, 16000)
    >>> (read_speech_segment(p, [[10, 20], [50, 60]]) * 128).tolist()[8:12]
    [18.0, 19.0, 50.0, 51.0]
    >>> seg = read_speech_segment(p, [[10, 20], [50, 60]], 5, generator=random.Random(3))
    >>> (seg * 128).tolist()
    [17.0, 18.0, 19.0, 50.0, 51.0]
    """
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    lengths = segments[:, 1] - segments[:, 0]
    total = int(lengths.sum())
    if total == 0:
        raise AudioError(
            f"{path}: the manifest lists no speech for this file (speech_segments is empty). "
            "Re-run the data preparation with a min_duration > 0 to leave such files out."
        )
    if num_samples is None or total <= num_samples:
        return keep_speech(read_segment(path, None, sample_rate), segments)
    rng = generator if generator is not None else random
    offset = rng.randint(0, total - num_samples)  # in the speech-only signal
    ends = np.cumsum(lengths)
    first = int(np.searchsorted(ends, offset, side="right"))
    last = int(np.searchsorted(ends, offset + num_samples - 1, side="right"))
    start = int(segments[first, 0] + offset - (ends[first] - lengths[first]))
    stop = int(segments[last, 0] + offset + num_samples - (ends[last] - lengths[last]))
    samples, _ = soundfile.read(str(path), start=start, stop=stop, dtype="float32",
                                always_2d=True)  # fmt: skip
    wav = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))
    span = np.clip(segments[first : last + 1], start, stop) - start
    return keep_speech(wav, span)


def speaker_dataset(
    csv_path,
    segment_seconds=None,
    sample_rate=16000,
    label_encoder=None,
    min_duration=None,
    replacements=None,
    speech_only=False,
):
    """Dataset of a speaker manifest with ``sig`` a random segment of each utterance.

    Arguments
    ---------
    csv_path : str or Path
        Manifest with columns ``ID,duration,wav,spk_id`` (``data_prep/voxceleb_prepare.py``).
    segment_seconds : float, optional
        Segment length read per utterance and epoch (``None``: whole utterances).
    sample_rate : int
        Sample rate of the corpus.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder, optional
        When given, ``spk_id_encoded`` (speaker index) is provided too.
    min_duration : float, optional
        Drop utterances shorter than this (seconds; of speech with ``speech_only``).
    replacements : dict, optional
        ``$key`` replacements in the CSV (e.g. ``{"data_root": ...}``).
    speech_only : bool
        Serve only the speech of each utterance: the manifest's ``speech_segments`` column
        (``data_prep/voxceleb_prepare.py`` with an energy VAD) is read, the non-speech samples
        removed before the segment is cut (:func:`read_speech_segment`), as hyperion trains on
        VAD'ed audio.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Yields ``id``, ``sig``, ``spk_id`` (and ``spk_id_encoded``).

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> soundfile.write(d / "a.wav", np.zeros(32000, dtype="float32"), 16000)
    >>> _ = (d / "m.csv").write_text(f"ID,duration,wav,spk_id\\nu1,2.0,{d / 'a.wav'},s1\\n")
    >>> ds = speaker_dataset(d / "m.csv", segment_seconds=0.5)
    >>> ds[0]["sig"].shape, ds[0]["spk_id"]
    (torch.Size([8000]), 's1')
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"Manifest not found: {csv_path}. Run data_prep/voxceleb_prepare.py (stage 1 of "
            "the recipe's run.sh) first."
        )
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
        str(csv_path), replacements=replacements or {}
    )
    if speech_only:
        first = next(iter(dataset.data.values()), {})
        if "speech_segments" not in first:
            raise ValueError(
                f"{csv_path} has no speech_segments column: it was prepared without the energy "
                "VAD. Delete the manifest folder and prepare again with the VAD on (the recipe's "
                "energy_vad: True), or set energy_vad: False to train on the raw audio."
            )
    if min_duration is not None:
        key = "speech_duration" if speech_only else "duration"
        dataset = dataset.filtered_sorted(key_min_value={key: float(min_duration)})
    num_samples = None if segment_seconds is None else int(round(segment_seconds * sample_rate))

    if speech_only:

        @sb.utils.data_pipeline.takes("wav", "speech_segments")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav, speech_segments):
            segments = parse_segments(speech_segments)
            return read_speech_segment(wav, segments, num_samples, sample_rate)

    else:

        @sb.utils.data_pipeline.takes("wav")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav):
            return read_segment(wav, num_samples, sample_rate)

    dataset.add_dynamic_item(audio_pipeline)
    keys = ["id", "sig", "spk_id"]
    if label_encoder is not None:

        @sb.utils.data_pipeline.takes("spk_id")
        @sb.utils.data_pipeline.provides("spk_id_encoded")
        def label_pipeline(spk_id):
            return torch.LongTensor([label_encoder.encode_label(spk_id)])

        dataset.add_dynamic_item(label_pipeline)
        keys.append("spk_id_encoded")
    dataset.set_output_keys(keys)
    return dataset


def speaker_label_encoder(csv_path, save_path=None):
    """Categorical encoder of the ``spk_id`` column (saved/loaded at ``save_path``).

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.csv").write_text("ID,duration,wav,spk_id\\na,1,x,s2\\nb,1,y,s1\\n")
    >>> len(speaker_label_encoder(d / "m.csv"))
    2
    """
    encoder = CategoricalEncoder()
    if save_path is not None and Path(save_path).is_file():
        encoder.load(save_path)
        return encoder
    with open(csv_path, newline="", encoding="utf-8") as handle:
        speakers = sorted({row["spk_id"] for row in csv.DictReader(handle)})
    if not speakers:
        raise ValueError(f"No speakers in {csv_path}: the manifest is empty.")
    encoder.update_from_iterable(speakers)
    if save_path is not None:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        encoder.save(save_path)
    return encoder


def speaker_train_loader(dataset, hparams: dict) -> dict:
    """Training loader options of a speaker recipe: shuffled, seeded, full batches only.

    ``batch_size``, ``num_workers`` and ``seed`` come from ``hparams``; the last incomplete
    batch is dropped unless the dataset holds no more than one batch.

    Example
    -------
    >>> opts = speaker_train_loader(list(range(10)), {"batch_size": 4, "num_workers": 0,
    ...                                               "seed": 0})
    >>> opts["batch_size"], opts["shuffle"], opts["drop_last"]
    (4, True, True)
    """
    options = dataloader_options(
        dataset,
        batch_size=hparams["batch_size"],
        shuffle=True,
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
    )
    options["drop_last"] = len(dataset) > hparams["batch_size"]
    return options


# ---------------------------------------------------------------------------- trials and cohorts
def read_trials(path) -> list:
    """Read a VoxCeleb trial list: ``<1|0> enroll.wav test.wav`` (or ``enroll test target``).

    Returns
    -------
    list of (int, str, str)
        ``(label, enroll_id, test_id)`` with ids relative to the corpus ``wav`` folder.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("1 id1/a/1.wav id1/b/2.wav\\nid1/a/1.wav id2/c/3.wav nontarget\\n")
    >>> read_trials(p)
    [(1, 'id1/a/1.wav', 'id1/b/2.wav'), (0, 'id1/a/1.wav', 'id2/c/3.wav')]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Trial list not found: {path}. Download veri_test2.txt (VoxCeleb1-O cleaned) into "
            "the VoxCeleb1 folder or point trials_file at it."
        )
    trials = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 3 and parts[0] in ("0", "1"):
            trials.append((int(parts[0]), parts[1], parts[2]))
        elif len(parts) == 3 and parts[2].lower() in TARGET_WORDS:
            trials.append((TARGET_WORDS[parts[2].lower()], parts[0], parts[1]))
        else:
            raise ValueError(
                f"{path}:{lineno}: expected '<1|0> enroll test' or 'enroll test <target|"
                f"nontarget>', got {line!r}"
            )
    if not trials:
        raise ValueError(f"Trial list {path} is empty.")
    return trials


def cohort_from_manifest(
    csv_path, size: int = 1000, seed: int = 0, selection: str = "per_speaker"
) -> dict:
    """``{id: wav}`` of ``size`` utterances of a manifest, for mean subtraction and AS-norm.

    ``selection="per_speaker"``: round-robin over the speakers (in a seeded random order), so
    the cohort covers as many training speakers as possible; this reads the speaker labels
    (fine for a supervised x-vector). ``"random"``: a seeded random sample of utterances that
    never reads a label, for label-free methods such as DINO.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.csv").write_text("ID,duration,wav,spk_id\\na,1,x,s1\\nb,1,y,s1\\nc,1,z,s2\\n")
    >>> sorted(cohort_from_manifest(d / "m.csv", size=2).values())
    ['x', 'z']
    >>> len(cohort_from_manifest(d / "m.csv", size=2, selection="random"))
    2
    """
    if selection not in ("per_speaker", "random"):
        raise ValueError(f"cohort selection must be per_speaker or random, got {selection!r}")
    if selection == "random":
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = [(row["ID"], row["wav"]) for row in csv.DictReader(handle)]
        rows = random.Random(seed).sample(rows, min(int(size), len(rows)))
        return dict(rows)
    by_speaker = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_speaker.setdefault(row["spk_id"], []).append((row["ID"], row["wav"]))
    rng = random.Random(seed)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    for spk in speakers:
        rng.shuffle(by_speaker[spk])
    cohort, depth = {}, 0
    while len(cohort) < size and any(len(v) > depth for v in by_speaker.values()):
        for spk in speakers:
            if len(cohort) >= size:
                break
            if depth < len(by_speaker[spk]):
                utt, wav = by_speaker[spk][depth]
                cohort[utt] = wav
        depth += 1
    return cohort
