"""CTC decoding for the SUPERB downstream tasks: greedy decoding and beam search.

:func:`ctc_greedy_decode` takes the best class per frame, collapses repeats and drops blanks,
using integer valid-frame counts so padding never produces tokens; it hands the work to
:func:`speechbrain.decoders.ctc.ctc_greedy_decode`. :class:`CTCBeamDecoder` wraps SpeechBrain's
:class:`speechbrain.decoders.ctc.CTCBeamSearcher` (a pyctcdecode-style beam search) for a
character tokenizer, optionally with shallow fusion of a KenLM n-gram model
(``kenlm_model_path``; the ``kenlm`` Python package is then required). SUPERB reports ASR WER
without a language model, i.e. greedy decoding.
"""

from __future__ import annotations

from pathlib import Path

import torch
from speechbrain.decoders.ctc import CTCBeamSearcher
from speechbrain.decoders.ctc import ctc_greedy_decode as speechbrain_greedy_decode


def ctc_greedy_decode(log_probs: torch.Tensor, frame_lens=None, blank_index: int = 0):
    """Greedy CTC decoding of a batch: argmax per frame, collapse repeats, drop blanks.

    A thin adapter over :func:`speechbrain.decoders.ctc.ctc_greedy_decode`, which takes
    relative lengths and rounds ``rel * max_len``: integer counts are turned into float64
    relative lengths, for which that rounding gives the count back exactly (checked for every
    count up to 4096 frames in ``tests/test_dependency_equivalence.py``, which also holds the
    output equal to the hand-written decoder this replaced).

    Arguments
    ---------
    log_probs : torch.Tensor
        ``(B, F, V)`` log-probabilities (or logits: only the argmax is used).
    frame_lens : torch.Tensor or Sequence[int], optional
        Integer valid-frame counts ``(B,)``, clamped to ``F``; all frames are used when omitted.
    blank_index : int
        Index of the CTC blank (a negative index counts from the end, as in SpeechBrain).

    Returns
    -------
    list of list of int
        One token-id sequence per utterance.

    Example
    -------
    >>> logits = torch.tensor([[[0.0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    >>> ctc_greedy_decode(logits)
    [[1, 1, 2]]
    >>> ctc_greedy_decode(logits, frame_lens=torch.tensor([2]))
    [[1]]
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, F, V), got shape {tuple(log_probs.shape)}")
    batch, max_len, _ = log_probs.shape
    if frame_lens is None:
        counts = torch.full((batch,), max_len, dtype=torch.float64)
    else:
        frame_lens = torch.as_tensor(frame_lens)
        if frame_lens.is_floating_point():
            raise TypeError(
                "frame_lens must hold integer frame counts, not relative lengths; convert "
                "with (rel_lens * num_frames).round().long()"
            )
        if frame_lens.numel() and int(frame_lens.min()) < 0:
            raise ValueError(f"frame_lens must be >= 0, got {frame_lens.tolist()}")
        counts = frame_lens.to("cpu", torch.float64).clamp(max=max_len)
    if max_len == 0:
        return [[] for _ in range(batch)]
    return speechbrain_greedy_decode(log_probs.detach(), counts / max_len, int(blank_index))


class CTCBeamDecoder:
    """CTC beam search over a character vocabulary, with an optional KenLM language model.

    Arguments
    ---------
    labels : Sequence[str]
        The tokenizer's labels (index -> symbol), blank included (``tokenizer.labels``).
    blank_index : int
        Index of the blank.
    word_boundary : str
        The label that separates words (``"|"`` for the ``CharTokenizer``);
        it is given to the searcher as a space.
    beam_size : int
        Beam width.
    kenlm_model_path : str or Path, optional
        ARPA or binary KenLM model over upper-case words (LibriSpeech's ``4-gram.arpa``).
    alpha, beta : float
        LM weight and word insertion bonus of the shallow fusion.
    **searcher_kwargs
        Passed to :class:`speechbrain.decoders.ctc.CTCBeamSearcher` (pruning thresholds...).

    Example
    -------
    >>> decoder = CTCBeamDecoder(["<blank>", "|", "A", "B"], beam_size=4)
    >>> probs = torch.tensor([[[0.1, 0.0, 0.9, 0.0], [0.9, 0.0, 0.1, 0.0], [0.1, 0, 0, 0.9]]])
    >>> decoder.decode_texts(probs.clamp(min=1e-6).log(), torch.tensor([3]))
    ['AB']
    """

    def __init__(
        self,
        labels,
        blank_index: int = 0,
        word_boundary: str = "|",
        beam_size: int = 100,
        kenlm_model_path=None,
        alpha: float = 0.5,
        beta: float = 1.5,
        **searcher_kwargs,
    ):
        if kenlm_model_path is not None:
            kenlm_model_path = Path(kenlm_model_path)
            if not kenlm_model_path.is_file():
                raise FileNotFoundError(
                    f"KenLM model {kenlm_model_path} not found: give the path of an .arpa or "
                    ".bin n-gram model (or leave kenlm_model_path empty for no LM)."
                )
            try:
                import kenlm  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "Beam search with a KenLM model needs the kenlm package "
                    "(pip install kenlm); or decode without a language model."
                ) from err
            kenlm_model_path = str(kenlm_model_path)
        self.labels = list(labels)
        self.blank_index = int(blank_index)
        vocab = [" " if label == word_boundary else label for label in self.labels]
        self.searcher = CTCBeamSearcher(
            blank_index=self.blank_index,
            vocab_list=vocab,
            space_token=" ",
            kenlm_model_path=kenlm_model_path,
            alpha=alpha,
            beta=beta,
            beam_size=beam_size,
            **searcher_kwargs,
        )

    def decode_texts(self, log_probs: torch.Tensor, frame_lens=None) -> list[str]:
        """Best hypothesis text of each utterance.

        Arguments
        ---------
        log_probs : torch.Tensor
            ``(B, F, V)`` log-probabilities.
        frame_lens : torch.Tensor, optional
            Integer valid-frame counts ``(B,)``.

        Returns
        -------
        list of str
        """
        batch, max_len, _ = log_probs.shape
        if frame_lens is None:
            rel = torch.ones(batch)
        else:
            rel = torch.as_tensor(frame_lens).float().cpu() / max_len
        # The searcher turns relative lengths back into frames with int(); a small epsilon
        # keeps exact frame counts from being floored one frame short.
        hyps = self.searcher(log_probs.detach().float().cpu(), (rel + 1e-6 / max_len).clamp(max=1))
        return [" ".join(h[0].text.split()) if h else "" for h in hyps]
