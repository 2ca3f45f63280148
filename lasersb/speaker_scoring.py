"""Speaker data and verification scoring shared by the DINO and x-vector recipes.

- :func:`speaker_dataset`: a VoxCeleb-style manifest (``ID,duration,wav,spk_id``) as a
  SpeechBrain dataset whose ``sig`` is a random segment of each utterance (read from disk
  without loading the whole file), for training.
- :func:`read_trials`, :func:`extract_embeddings`, :func:`score_trials` and
  :func:`evaluate_verification`: embeddings of every utterance of a trial list (full length),
  cosine scoring with optional mean subtraction and adaptive s-norm against a cohort, EER and
  normalised minDCF, score file, ``results.json``/``results.md`` and a DET plot.
- :func:`prepare_speaker_manifests`, :func:`speaker_train_loader` and
  :func:`score_trial_lists`: the steps the DINO and x-vector ``train.py`` share.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import soundfile
import speechbrain as sb
import torch

from lasersb.data.audio import AudioError, read_audio
from lasersb.metrics.verification import (
    adaptive_snorm,
    cosine_scores,
    plot_det,
    verification_metrics,
)

logger = logging.getLogger(__name__)

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


def speaker_dataset(
    csv_path,
    segment_seconds=None,
    sample_rate=16000,
    label_encoder=None,
    min_duration=None,
    replacements=None,
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
        Drop utterances shorter than this (seconds).
    replacements : dict, optional
        ``$key`` replacements in the CSV (e.g. ``{"data_root": ...}``).

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
    if min_duration is not None:
        dataset = dataset.filtered_sorted(key_min_value={"duration": float(min_duration)})
    num_samples = None if segment_seconds is None else int(round(segment_seconds * sample_rate))

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
    import csv

    from speechbrain.dataio.encoder import CategoricalEncoder

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


# ---------------------------------------------------------------------------- trials
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


@torch.no_grad()
def extract_embeddings(
    model,
    wav_paths: dict,
    device="cpu",
    batch_size: int = 8,
    max_seconds=None,
    sample_rate: int = 16000,
    progress: bool = False,
) -> dict:
    """Embeddings of whole utterances, batched by similar length.

    Arguments
    ---------
    model : torch.nn.Module
        ``model(wavs (B, T), rel_lens (B,)) -> (B, D)`` (put in eval mode here).
    wav_paths : dict
        ``{utterance id: audio path}``.
    device : str or torch.device
        Device of the model.
    batch_size : int
        Utterances per forward pass (sorted by length to limit padding).
    max_seconds : float, optional
        Keep only the first ``max_seconds`` of longer utterances.
    sample_rate : int
        Expected sample rate.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``{utterance id: (D,) float32 CPU tensor}``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for n in (800, 1600):
    ...     soundfile.write(d / f"{n}.wav", np.random.randn(n).astype("float32"), 16000)
    >>> net = lambda w, l: torch.stack([w.sum(1), l], 1)
    >>> out = extract_embeddings(net, {"a": d / "800.wav", "b": d / "1600.wav"})
    >>> out["a"][1].item(), out["b"][1].item()
    (0.5, 1.0)
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    lengths = {}
    for utt, path in wav_paths.items():
        lengths[utt] = soundfile.info(str(path)).frames if Path(path).is_file() else 0
    order = sorted(wav_paths, key=lambda u: lengths[u])
    max_samples = None if max_seconds is None else int(max_seconds * sample_rate)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="embeddings", dynamic_ncols=True)
    embeddings = {}
    for ids in batches:
        wavs = [read_audio(wav_paths[u], sample_rate=sample_rate) for u in ids]
        if max_samples is not None:
            wavs = [w[:max_samples] for w in wavs]
        longest = max(w.numel() for w in wavs)
        batch = torch.zeros(len(wavs), longest)
        for row, wav in enumerate(wavs):
            batch[row, : wav.numel()] = wav
        rel = torch.tensor([w.numel() / longest for w in wavs])
        emb = model(batch.to(device), rel.to(device)).float().cpu()
        for row, utt in enumerate(ids):
            embeddings[utt] = emb[row]
    if was_training and hasattr(model, "train"):
        model.train()
    return embeddings


def score_trials(trials, embeddings: dict, mean=None, cohort=None, top_n: int = 300):
    """Cosine scores of the trials, optionally centred and adaptively s-normalised.

    Arguments
    ---------
    trials : list of (int, str, str)
        From :func:`read_trials`.
    embeddings : dict
        ``{utterance id: (D,) tensor}`` covering every trial side.
    mean : torch.Tensor, optional
        ``(D,)`` subtracted before scoring (the cohort/training mean).
    cohort : torch.Tensor, optional
        ``(C, D)`` embeddings for adaptive s-norm (skipped when ``None``).
    top_n : int
        Adaptive cohort size.

    Returns
    -------
    scores, labels : np.ndarray

    Example
    -------
    >>> emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 0.1]),
    ...        "c": torch.tensor([0.0, 1.0])}
    >>> s, l = score_trials([(1, "a", "b"), (0, "a", "c")], emb)
    >>> (s > 0.9).tolist(), l.tolist()
    ([True, False], [1, 0])
    """
    missing = sorted({u for _, e, t in trials for u in (e, t) if u not in embeddings})
    if missing:
        raise KeyError(f"No embedding for {len(missing)} trial utterance(s), e.g. {missing[:3]}")
    enroll = torch.stack([embeddings[e] for _, e, _ in trials])
    test = torch.stack([embeddings[t] for _, _, t in trials])
    scores = cosine_scores(enroll, test, mean)
    if cohort is not None:
        scores = adaptive_snorm(scores, enroll, test, cohort, top_n=top_n, mean=mean)
    labels = np.array([label for label, _, _ in trials], dtype=np.int64)
    return scores.numpy().astype(np.float64), labels


def _markdown_table(rows: dict) -> str:
    header = "| scoring | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) | trials |"
    lines = [header, "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['EER']:.2f} | {m['minDCF@0.01']:.4f} | {m['minDCF@0.05']:.4f} "
            f"| {m['trials']} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_verification(
    model,
    trials_file,
    wav_folder,
    output_folder,
    cohort_paths=None,
    device="cpu",
    mean_subtraction: bool = True,
    snorm: bool = True,
    snorm_top_n: int = 300,
    batch_size: int = 8,
    max_seconds=None,
    sample_rate: int = 16000,
    name: str = "system",
) -> dict:
    """Embed, score and evaluate a trial list; write scores, results and a DET plot.

    Arguments
    ---------
    model : torch.nn.Module
        Embedding model ``(wavs, rel_lens) -> (B, D)`` (the DINO teacher or the x-vector).
    trials_file : str or Path
        VoxCeleb trial list (``veri_test2.txt``...).
    wav_folder : str or Path
        Folder the trial paths are relative to (``VoxCeleb1/wav``).
    output_folder : str or Path
        Where ``scores_<variant>.txt``, ``results.json``, ``results.md`` and ``det.png`` go.
    cohort_paths : dict, optional
        ``{id: path}`` of training utterances: their mean embedding is subtracted
        (``mean_subtraction``) and they form the AS-norm cohort (``snorm``).
    device : str
        Model device.
    mean_subtraction, snorm : bool
        Scoring variants to add to the plain cosine (need ``cohort_paths``).
    snorm_top_n : int
        AS-norm adaptive cohort size.
    batch_size, max_seconds, sample_rate :
        Embedding extraction options (:func:`extract_embeddings`).
    name : str
        System name in the plot and the tables.

    Returns
    -------
    dict
        ``{variant: metrics}`` with variants ``cosine`` (+ ``cosine+mean``, ``cosine+mean+asnorm``).
    """
    trials = read_trials(trials_file)
    wav_folder = Path(wav_folder)
    utts = sorted({u for _, e, t in trials for u in (e, t)})
    paths = {u: wav_folder / u for u in utts}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} trial file(s) missing under {wav_folder}, e.g. {missing[0]}. "
            "Point the trials' wav folder (VoxCeleb1/wav) at the extracted test set."
        )
    embeddings = extract_embeddings(
        model, paths, device, batch_size, max_seconds, sample_rate, progress=len(paths) > 100
    )
    variants = {"cosine": {}}
    if cohort_paths:
        cohort_emb = extract_embeddings(
            model, cohort_paths, device, batch_size, max_seconds, sample_rate
        )
        cohort = torch.stack(list(cohort_emb.values()))
        mean = cohort.mean(dim=0)
        if mean_subtraction:
            variants["cosine+mean"] = {"mean": mean}
        if snorm:
            variants["cosine+mean+asnorm" if mean_subtraction else "cosine+asnorm"] = {
                "mean": mean if mean_subtraction else None,
                "cohort": cohort,
                "top_n": snorm_top_n,
            }
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for variant, options in variants.items():
        scores, labels = score_trials(trials, embeddings, **options)
        results[variant] = verification_metrics(scores, labels)
        curves[f"{name} {variant}"] = (scores, labels)
        score_file = output_folder / f"scores_{variant.replace('+', '_')}.txt"
        with open(score_file, "w", encoding="utf-8") as handle:
            for (label, enroll, test), score in zip(trials, scores):
                handle.write(f"{enroll} {test} {score:.6f} {'target' if label else 'nontarget'}\n")
    plot_det(curves, output_folder / "det.png", title=f"DET: {Path(trials_file).name}")
    (output_folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    table = _markdown_table(results)
    (output_folder / "results.md").write_text(
        f"# Speaker verification: {name} on {Path(trials_file).name}\n\n{table}", encoding="utf-8"
    )
    logger.info("Verification results (%s):\n%s", name, table)
    return results


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
    import csv

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


# ---------------------------------------------------------------------------- recipe steps


def prepare_speaker_manifests(hparams: dict) -> dict:
    """Write a VoxCeleb recipe's manifests and trial lists (main process only); return paths.

    Calls ``data_prep.voxceleb_prepare.prepare_voxceleb`` with the recipe's hparams (keys
    ``data_folder``, ``manifest_folder``, ``vox2_folder``, ``trial_lists``, ``meta_file``,
    ``use_vox1_dev``, ``dev_fraction``, ``min_duration``, ``convert_m4a``, ``skip_bad_files``,
    ``prep_num_workers``)
    under ``run_on_main``, then again on every process to read the (idempotent) result.

    Example
    -------
    >>> manifests = prepare_speaker_manifests(hparams)  # doctest: +SKIP
    >>> sorted(manifests)  # doctest: +SKIP
    ['dev', 'train', 'trials']
    """
    from speechbrain.utils.distributed import run_on_main

    from data_prep.voxceleb_prepare import prepare_voxceleb

    kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["manifest_folder"],
        "vox2_folder": hparams["vox2_folder"],
        "trial_lists": hparams["trial_lists"],
        "meta_file": hparams["meta_file"],
        "use_vox1_dev": hparams["use_vox1_dev"],
        "dev_fraction": hparams["dev_fraction"],
        "min_duration": hparams["min_duration"],
        "convert_m4a": hparams["convert_m4a"],
        "skip_bad_files": hparams["skip_bad_files"],
        "num_workers": hparams["prep_num_workers"],
    }
    run_on_main(prepare_voxceleb, kwargs=kwargs)
    return prepare_voxceleb(**kwargs)


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
    from lasersb.data.pipelines import dataloader_options

    options = dataloader_options(
        dataset,
        batch_size=hparams["batch_size"],
        shuffle=True,
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
    )
    options["drop_last"] = len(dataset) > hparams["batch_size"]
    return options


def score_trial_lists(model, hparams: dict, manifests: dict, device="cpu", name="system") -> dict:
    """Score every trial list of ``manifests`` with ``model``: ``{trials name: results}``.

    The cohort (mean subtraction and AS-norm) is ``cohort_size`` utterances of the training
    manifest, chosen as ``cohort_selection`` says (:func:`cohort_from_manifest`: ``random``
    for label-free DINO, ``per_speaker`` for the x-vector); each list is evaluated by
    :func:`evaluate_verification` into ``<eval_folder>/<trials name>/``, with ``snorm_top_n``,
    ``eval_batch_size``, ``eval_max_seconds`` and ``sample_rate`` from ``hparams``.

    Example
    -------
    >>> score_trial_lists(brain.embedding_model(), hparams, manifests,
    ...                   device=brain.device, name="DINO")  # doctest: +SKIP
    """
    cohort = cohort_from_manifest(
        manifests["train"],
        hparams["cohort_size"],
        hparams["seed"],
        selection=hparams["cohort_selection"],
    )
    results = {}
    for trials_name, trials in manifests["trials"].items():
        results[trials_name] = evaluate_verification(
            model,
            trials,
            Path(hparams["data_folder"]) / "wav",
            Path(hparams["eval_folder"]) / trials_name,
            cohort_paths=cohort,
            device=device,
            snorm_top_n=hparams["snorm_top_n"],
            batch_size=hparams["eval_batch_size"],
            max_seconds=hparams["eval_max_seconds"],
            sample_rate=hparams["sample_rate"],
            name=name,
        )
    return results


def main(argv=None) -> int:
    """Score a trial list with a saved embedding model (``embedding_model.ckpt``).

    ``python -m lasersb.speaker_scoring --model RUN_FOLDER --trials veri_test2.txt
    --wav-folder VoxCeleb1/wav --output RUN_FOLDER/eval [--cohort-csv train.csv]``
    """
    import argparse

    from lasersb.models.dino import load_embedding_model

    parser = argparse.ArgumentParser(description="Speaker verification scoring (cosine, AS-norm)")
    parser.add_argument("--model", required=True, help="embedding_model.ckpt or its folder")
    parser.add_argument("--trials", required=True, help="trial list (veri_test2.txt format)")
    parser.add_argument("--wav-folder", required=True, help="folder the trial paths start in")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--cohort-csv", default=None, help="training manifest for mean/AS-norm")
    parser.add_argument("--cohort-size", type=int, default=1000)
    parser.add_argument(
        "--cohort-selection",
        choices=("random", "per_speaker"),
        default="random",
        help="random: label-free (DINO); per_speaker: round-robin over speaker labels",
    )
    parser.add_argument("--top-n", type=int, default=300, help="AS-norm adaptive cohort size")
    parser.add_argument("--no-snorm", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    model = load_embedding_model(args.model, device=args.device)
    cohort = None
    if args.cohort_csv:
        cohort = cohort_from_manifest(
            args.cohort_csv, args.cohort_size, selection=args.cohort_selection
        )
    name = args.name or model.checkpoint_meta.get("source", "system")
    evaluate_verification(
        model,
        args.trials,
        args.wav_folder,
        args.output,
        cohort_paths=cohort,
        device=args.device,
        snorm=not args.no_snorm,
        snorm_top_n=args.top_n,
        batch_size=args.batch_size,
        max_seconds=args.max_seconds,
        name=name,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
