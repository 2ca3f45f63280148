"""HuBERT's first-iteration targets: k-means cluster ids of MFCC frames (Hsu et al., 2021).

The steps of fairseq's ``examples/hubert/simple_kmeans`` recipe, which the HuBERT paper's first
iteration used:

- :func:`mfcc_features`: 13 Kaldi MFCCs without energy (25 ms windows every 10 ms) with their
  first and second deltas, 39 values per frame (``dump_mfcc_feature.py``);
- :func:`learn_kmeans`: scikit-learn's ``MiniBatchKMeans`` with the recipe's settings (100
  clusters, k-means++ initialisation, batches of 10,000 frames, 20 initialisations, no early
  stopping on the inertia's tolerance) on a random share of the frames (``learn_kmeans.py``);
- :func:`frame_targets`: every frame's nearest centroid at the *upstream's* frame rate. MFCC frame
  ``2 i`` spans samples ``[320 i, 320 i + 400)``, exactly the receptive field of the HuBERT conv
  encoder's frame ``i`` (stride 320, field 400), so the 100 Hz labels are taken every second
  frame, as fairseq's ``feat2tar_ratio`` does for ``label_rate: 100``.

:func:`write_targets` / :func:`read_targets` keep the labels of a manifest in one ``.npz`` file
(one int16 array per utterance id), the artefact that the pretraining stage reads back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FRAMES_PER_UPSTREAM_FRAME",
    "frame_targets",
    "learn_kmeans",
    "mfcc_features",
    "read_targets",
    "write_targets",
]

#: MFCC frames (10 ms shift) per upstream frame (320 samples = 20 ms at 16 kHz).
FRAMES_PER_UPSTREAM_FRAME = 2


def mfcc_features(wav: torch.Tensor, sample_rate: int = 16000) -> np.ndarray:
    """MFCCs with deltas and delta-deltas of one waveform, as fairseq's HuBERT recipe.

    Arguments
    ---------
    wav : torch.Tensor
        ``(T,)`` waveform in [-1, 1].
    sample_rate : int
        Its sample rate.

    Returns
    -------
    numpy.ndarray
        ``(frames, 39)`` float32, ``frames = 1 + (T - 400) // 160`` at 16 kHz.

    Example
    -------
    >>> mfcc_features(torch.randn(16000) * 0.1).shape
    (98, 39)
    """
    import torchaudio

    x = wav.detach().float().reshape(1, -1)
    with torch.no_grad():
        mfccs = torchaudio.compliance.kaldi.mfcc(
            waveform=x, sample_frequency=sample_rate, use_energy=False
        ).transpose(0, 1)  # (13, frames)
        deltas = torchaudio.functional.compute_deltas(mfccs)
        ddeltas = torchaudio.functional.compute_deltas(deltas)
        feats = torch.cat([mfccs, deltas, ddeltas], dim=0).transpose(0, 1)
    return feats.contiguous().numpy().astype(np.float32)


def learn_kmeans(
    features: list[np.ndarray],
    n_clusters: int = 100,
    percent: float = 0.1,
    seed: int = 0,
    batch_size: int = 10000,
    n_init: int = 20,
    max_iter: int = 100,
):
    """Fit fairseq's HuBERT k-means on a random share of the frames.

    Arguments
    ---------
    features : list of numpy.ndarray
        ``(frames, dim)`` features of each utterance.
    n_clusters : int
        Clusters (100 in the HuBERT paper's first iteration).
    percent : float
        Share of the utterances used (fairseq's ``--percent``, 0.1 for LibriSpeech 960 h;
        ``1.0`` uses all).
    seed : int
        Seeds the utterance draw and ``MiniBatchKMeans``.
    batch_size, n_init, max_iter : int
        ``MiniBatchKMeans`` settings (fairseq's defaults).

    Returns
    -------
    sklearn.cluster.MiniBatchKMeans

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> feats = [rng.normal(size=(50, 3)).astype("float32") + c for c in (0, 10)]
    >>> km = learn_kmeans(feats, n_clusters=2, percent=1.0, n_init=2)
    >>> sorted(np.round(km.cluster_centers_[:, 0]).astype(int).tolist())
    [0, 10]
    """
    from sklearn.cluster import MiniBatchKMeans

    if not features:
        raise ValueError("learn_kmeans needs at least one utterance's features.")
    rng = np.random.default_rng(seed)
    count = len(features)
    keep = max(1, int(round(count * percent))) if percent < 1.0 else count
    chosen = sorted(rng.choice(count, size=keep, replace=False).tolist())
    frames = np.concatenate([features[i] for i in chosen], axis=0)
    if len(frames) < n_clusters:
        raise ValueError(
            f"k-means with {n_clusters} clusters needs at least as many frames; got "
            f"{len(frames)} from {keep} utterances (raise percent or lower n_clusters)."
        )
    kmeans = MiniBatchKMeans(
        n_clusters=n_clusters,
        init="k-means++",
        max_iter=max_iter,
        batch_size=batch_size,
        verbose=0,
        compute_labels=False,
        tol=0.0,
        max_no_improvement=100,
        init_size=None,
        n_init=n_init,
        reassignment_ratio=0.0,
        random_state=seed,
    )
    kmeans.fit(frames)
    return kmeans


def frame_targets(kmeans, features: np.ndarray) -> np.ndarray:
    """Cluster ids of one utterance at the upstream's frame rate (every second MFCC frame).

    Arguments
    ---------
    kmeans : sklearn.cluster.MiniBatchKMeans
        From :func:`learn_kmeans`.
    features : numpy.ndarray
        ``(frames, dim)`` MFCC features of the utterance (:func:`mfcc_features`).

    Returns
    -------
    numpy.ndarray
        int16 ``(ceil(frames / 2),)``: the label of upstream frame ``i`` is that of MFCC frame
        ``2 i`` (same 400 samples). For ``T`` samples the upstream has
        ``(T - 400) // 320 + 1`` frames, which is exactly this length.

    Example
    -------
    >>> km = learn_kmeans([np.arange(20, dtype="float32").reshape(10, 2)], 2, 1.0, n_init=1)
    >>> frame_targets(km, np.zeros((9, 2), dtype="float32")).shape
    (5,)
    """
    labels = kmeans.predict(features[::FRAMES_PER_UPSTREAM_FRAME].astype(np.float32))
    return labels.astype(np.int16)


def write_targets(path, targets: dict, n_clusters: int) -> Path:
    """Write ``{utterance id: int16 labels}`` to one ``.npz`` file (atomically).

    Example
    -------
    >>> import tempfile
    >>> out = write_targets(Path(tempfile.mkdtemp()) / "t.npz", {"u1": np.arange(3)}, 100)
    >>> labels, n = read_targets(out)
    >>> labels["u1"].tolist(), n
    ([0, 1, 2], 100)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"utt:{uid}": np.asarray(labels, dtype=np.int16) for uid, labels in targets.items()}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
    np.savez(tmp, n_clusters=np.int64(n_clusters), **arrays)
    os.replace(tmp, path)
    return path


def read_targets(path) -> tuple[dict, int]:
    """Read what :func:`write_targets` wrote: ``({utterance id: int16 labels}, n_clusters)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"HuBERT targets not found: {path}. Run the recipe's target stage first (train.py "
            "computes them when the file is missing)."
        )
    with np.load(path, allow_pickle=False) as data:
        n_clusters = int(data["n_clusters"])
        targets = {key[4:]: data[key] for key in data.files if key.startswith("utt:")}
    return targets, n_clusters
