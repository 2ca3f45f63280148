"""Speaker-verification scoring of a trial list with an utterance-embedding model.

:func:`extract_embeddings` (whole utterances, batched by length), :func:`score_trials` (cosine,
optionally mean-subtracted and adaptively s-normalised against a cohort) and
:func:`evaluate_verification` (EER and normalised minDCF, score files, ``results.json`` /
``results.md`` and a DET plot); :func:`score_trial_lists` scores every trial list of a VoxCeleb
recipe, as the DINO and x-vector ``train.py`` do. Command line (a saved
``embedding_model.ckpt``)::

    python -m lasersb.metrics.trial_scoring --model RUN_FOLDER --trials veri_test2.txt \\
        --wav-folder VoxCeleb1/wav --output RUN_FOLDER/eval [--cohort-csv train.csv]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import soundfile
import torch

from lasersb.data.audio import read_audio
from lasersb.data.speakers import cohort_from_manifest, read_trials
from lasersb.metrics.verification import (
    adaptive_snorm,
    cosine_scores,
    plot_det,
    verification_metrics,
)
from lasersb.models.dino import load_embedding_model

logger = logging.getLogger(__name__)


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


def score_embedding_export(hparams: dict, manifests: dict, device="cpu", name="system") -> dict:
    """:func:`score_trial_lists` with the model a recipe exported to its output folder.

    The ``score_only`` stage of the VoxCeleb recipes (``run.sh`` stage 3): loads
    ``<output_folder>/embedding_model.ckpt`` (:func:`lasersb.models.dino.load_embedding_model`)
    and scores with the same ``hparams`` (cohort, AS-norm, batch) as ``score_after_training``.

    Example
    -------
    >>> score_embedding_export(hparams, manifests, device="cuda:0", name="DINO")  # doctest: +SKIP
    """
    checkpoint = Path(hparams["output_folder"]) / "embedding_model.ckpt"
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{checkpoint} does not exist: train first (run.sh stage 2, or train.py without "
            "--score_only=True), or give the --output_folder of a finished run."
        )
    model = load_embedding_model(checkpoint, device=device)
    return score_trial_lists(model, hparams, manifests, device=device, name=name)


def main(argv=None) -> int:
    """Score a trial list with a saved embedding model (``embedding_model.ckpt``).

    ``python -m lasersb.metrics.trial_scoring --model RUN_FOLDER --trials veri_test2.txt
    --wav-folder VoxCeleb1/wav --output RUN_FOLDER/eval [--cohort-csv train.csv]``
    """
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
