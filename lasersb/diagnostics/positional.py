"""How much of a frame-wise MSE between SSL features is explained by position alone.

Position-invariant SE fine-tuning (Meghanani & Hain, ICASSP 2026) starts from the observation
that the frame-wise MSE between ``SSL(enhanced)`` and ``SSL(clean)`` can be lowered through the
SSL model's positional information (both inputs share positions) instead of content. This
module measures that on any upstream, with utterances cropped to one common length:

- ``position_share``: the fraction of the feature variance explained by the frame index
  (``var_t(E_utt[x_t]) / var(x)``). For two unrelated utterances, the expected aligned MSE is
  ``2 (1 - position_share) var(x)``: that share of the MSE disappears just because frame ``t``
  of both sits at position ``t``.
- ``unrelated_aligned`` vs ``unrelated_offset[k]``: the loss between unrelated utterances at the
  same positions vs offset by ``k`` frames (the ``k`` edge frames dropped). With MSE, aligned
  positions make unrelated speech look closer; ``1 - aligned / offset`` is the part of the MSE
  that position explains.
- ``self_shifted[k]``: the same utterance, zero-padded at the start by ``k`` frames (as the
  ``mse_zeropad`` remedy does to the clean reference), with its content frames compared to the
  original's: identical content at shifted positions. The MSE it costs is the positional
  component; it should be small against ``unrelated_aligned``.

Each quantity is given for the frame-wise MSE and for the soft-DTW loss of the SE recipe
(:func:`lasersb.alignment.frame_losses.soft_dtw_frame_loss`), which needs no frame correspondence.

Command line (markdown table on stdout, JSON with ``--out``)::

    python -m lasersb.diagnostics.positional --upstream facebook/hubert-base-ls960 \\
        --data_folder /data/LibriSpeech --split dev-clean --num_utterances 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import torch

__all__ = ["format_positional_report", "main", "positional_shortcut"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def _features(upstream, wavs: torch.Tensor, layer: int, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, wavs.shape[0], batch_size):
        states = upstream(wavs[start : start + batch_size]).hidden_states
        out.append(states[layer].float())
    return torch.cat(out)


def _mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).mean(dim=(1, 2))


def _softdtw(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    from lasersb.alignment import SoftDTWDivergence
    from lasersb.alignment.frame_losses import soft_dtw_frame_loss

    lens_x = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    lens_y = torch.full((y.shape[0],), y.shape[1], dtype=torch.long)
    with torch.enable_grad():  # the soft-DTW autograd function expects grad mode available
        value = soft_dtw_frame_loss(x, y, lens_x, lens_y, SoftDTWDivergence(gamma=gamma))
    return value.detach()


@torch.no_grad()
def positional_shortcut(
    upstream,
    wavs: torch.Tensor,
    layer: int = -1,
    shifts=(1, 2, 4),
    hop: int = 320,
    gamma: float = 0.1,
    max_pairs: int = 64,
    batch_size: int = 8,
) -> dict:
    """Measure the positional component of frame-wise losses between SSL features.

    Parameters
    ----------
    upstream : callable
        ``upstream(wavs) -> UpstreamOutput`` (e.g. a frozen
        :class:`~lasersb.models.upstream.SSLUpstream`).
    wavs : torch.Tensor
        ``(N, T)`` utterances of one common length (crop them first), ``N >= 2``.
    layer : int
        Index into ``hidden_states``.
    shifts : sequence of int
        Position offsets in frames.
    hop : int
        Samples per SSL frame.
    gamma : float
        Soft-DTW smoothing.
    max_pairs : int
        Unrelated pairs used (the first ones of all ``i < j`` pairs).
    batch_size : int
        Utterances per upstream call.

    Returns
    -------
    dict
        ``{"frames", "num_utterances", "layer", "position_share", "mse": {...},
        "softdtw": {...}}`` where each loss dict holds ``unrelated_aligned``,
        ``unrelated_offset`` ``{k: value}``, ``self_shifted`` ``{k: value}`` and
        ``position_explained`` ``{k: 1 - aligned / offset}``.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> up = SSLUpstream(build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "h"))
    >>> report = positional_shortcut(up, torch.randn(3, 4000), shifts=(1,), max_pairs=3)
    >>> report["frames"], sorted(report["mse"])
    (12, ['position_explained', 'self_shifted', 'unrelated_aligned', 'unrelated_offset'])
    """
    if wavs.dim() != 2 or wavs.shape[0] < 2:
        raise ValueError(
            f"positional_shortcut needs (N >= 2, T) waveforms, got {tuple(wavs.shape)}"
        )
    shifts = [int(k) for k in shifts]
    feats = _features(upstream, wavs, layer, batch_size)  # (N, F, H)
    num, frames, _ = feats.shape
    if max(shifts) >= frames:
        raise ValueError(f"Shifts {shifts} must be below the {frames} frames of the utterances.")
    centred = feats - feats.mean(dim=(0, 1), keepdim=True)
    total_var = centred.pow(2).mean()
    position_var = centred.mean(dim=0).pow(2).mean()
    pairs = list(itertools.islice(itertools.combinations(range(num), 2), max_pairs))
    first = torch.tensor([i for i, _ in pairs])
    second = torch.tensor([j for _, j in pairs])
    a, b = feats[first], feats[second]
    losses = {"mse": _mse, "softdtw": lambda x, y: _softdtw(x, y, gamma)}
    report = {
        "layer": int(layer),
        "frames": int(frames),
        "num_utterances": int(num),
        "num_pairs": len(pairs),
        "position_share": float(position_var / total_var.clamp_min(1e-12)),
    }
    shifted = {}
    for k in shifts:
        padded = torch.nn.functional.pad(wavs, (k * hop, 0))
        shifted[k] = _features(upstream, padded, layer, batch_size)[:, k : k + frames]
    for name, fn in losses.items():
        aligned = float(fn(a, b).mean())
        offset = {k: float(fn(a[:, k:], b[:, :-k]).mean()) for k in shifts}
        self_shift = {k: float(fn(feats, shifted[k]).mean()) for k in shifts}
        report[name] = {
            "unrelated_aligned": aligned,
            "unrelated_offset": offset,
            "self_shifted": self_shift,
            "position_explained": {
                k: 1.0 - aligned / v if v > 0 else 0.0 for k, v in offset.items()
            },
        }
    return report


def format_positional_report(report: dict) -> str:
    """Markdown table of a :func:`positional_shortcut` report.

    Example
    -------
    >>> r = {"layer": -1, "frames": 10, "num_utterances": 2, "num_pairs": 1,
    ...      "position_share": 0.25}
    >>> for loss in ("mse", "softdtw"):
    ...     r[loss] = {"unrelated_aligned": 1.0, "unrelated_offset": {1: 2.0},
    ...                "self_shifted": {1: 0.1}, "position_explained": {1: 0.5}}
    >>> print(format_positional_report(r).splitlines()[4])
    | unrelated utterances, same positions | 1 | 1 |
    """
    shifts = list(report["mse"]["unrelated_offset"])
    lines = [
        f"Positional shortcut, layer {report['layer']}: {report['num_utterances']} utterances of "
        f"{report['frames']} frames, {report['num_pairs']} unrelated pairs; variance explained "
        f"by the frame index: {100 * report['position_share']:.1f} %",
        "",
        "| comparison | frame-wise MSE | soft-DTW loss |",
        "|---|---|---|",
    ]

    def row(label, key, k=None):
        cells = []
        for loss in ("mse", "softdtw"):
            value = report[loss][key] if k is None else report[loss][key][k]
            cells.append(f"{value:.4g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("unrelated utterances, same positions", "unrelated_aligned")
    for k in shifts:
        row(f"unrelated utterances, positions offset by {k} frame(s)", "unrelated_offset", k)
    for k in shifts:
        row(f"same utterance, positions shifted by {k} frame(s)", "self_shifted", k)
    for k in shifts:
        row(
            f"share of the unrelated-pair loss explained by position ({k})", "position_explained", k
        )
    return "\n".join(lines) + "\n"


def _load_crops(data_folder, split: str, count: int, seconds: float, sample_rate: int):
    from lasersb.data.audio import read_audio

    root = Path(data_folder)
    folder = root / split if (root / split).is_dir() else root / "LibriSpeech" / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Split folder not found: {folder}. Pass --data_folder pointing to LibriSpeech (or "
            "its parent) and --split naming one of its splits."
        )
    length = int(seconds * sample_rate)
    crops = []
    for path in sorted(folder.rglob("*.flac")):
        wav = read_audio(path, sample_rate=sample_rate)
        if wav.shape[0] >= length:
            crops.append(wav[:length])
        if len(crops) == count:
            break
    if len(crops) < 2:
        raise ValueError(f"Fewer than 2 utterances of at least {seconds} s in {folder}.")
    return torch.stack(crops)


def main(argv=None) -> dict:
    """Command line; prints the Markdown table (see the module docstring)."""
    from lasersb.models.upstream import SSLUpstream

    parser = argparse.ArgumentParser(description="Positional component of SSL frame-wise losses")
    parser.add_argument("--upstream", required=True, help="hub id or local HF folder")
    parser.add_argument("--data_folder", required=True, help="LibriSpeech root (or its parent)")
    parser.add_argument("--split", default="dev-clean")
    parser.add_argument("--num_utterances", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0, help="common crop length")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--shifts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--max_pairs", type=int, default=64)
    parser.add_argument("--out", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    upstream = SSLUpstream(args.upstream, trainable_layers=0)
    wavs = _load_crops(args.data_folder, args.split, args.num_utterances, args.seconds, 16000)
    report = positional_shortcut(upstream, wavs, layer=args.layer, shifts=args.shifts,
                                 gamma=args.gamma, max_pairs=args.max_pairs)  # fmt: skip
    print(format_positional_report(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
