"""Query-by-example spoken term detection by DTW, as SUPERB's QbE task (s3prl ``quesst14_dtw``).

The protocol (s3prl ``downstream/quesst14_dtw/expert.py`` and ``config.yaml``), step by step:

1. :func:`standardise_features`: frame features of one layer, standardised per dimension with
   the mean and (unbiased) standard deviation over all frames of all queries and documents
   (``feature_normalization: True``; std clamped at 1e-9).
2. :func:`frame_distances`: ``cosine_exp`` = ``exp(cosine distance) - 1`` (the default;
   ``cosine``, ``euclidean``, ``cityblock`` and ``cosine_neg_log`` as options).
3. Each row (query frame) of the query x document matrix min-max normalised over the
   document's frames (``minmax_norm: True``; range clamped at 1e-9).
4. :func:`~lasersb.alignment.subsequence_dtw.subsequence_dtw` (asymmetric pattern, open begin
   and end); the score is ``-normalizedDistance``. Queries shorter than 5 frames get score 0
   against every document (as s3prl).
5. :func:`standardise_scores`: each query's scores standardised over all documents
   (population std, clamped at 1e-9); :func:`write_stdlist` marks YES above 2.0 and writes the
   STD list XML that QUESST's ``score-TWV-Cnxe.sh`` reads.

s3prl runs one dtw-python call per pair in a process pool; here the documents of one query are
batched (sorted by length, padded, a few million cells per call) through the numba or Triton
kernel, with the distance matrices computed by matrix products on the same device.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from lasersb.alignment.subsequence_dtw import subsequence_dtw

DISTANCES = ("cosine_exp", "cosine", "cosine_neg_log", "euclidean", "cityblock")
MIN_QUERY_FRAMES = 5
"""s3prl gives every document score 0 for queries shorter than this."""


def standardise_features(features):
    """Per-dimension standardisation over all frames of all sequences (s3prl's).

    Parameters
    ----------
    features : list of torch.Tensor
        ``(frames, dim)`` per query and document.

    Returns
    -------
    list of torch.Tensor
        The standardised sequences.

    Example
    -------
    >>> out = standardise_features([torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0]])])
    >>> [t.flatten().tolist() for t in out]
    [[-1.0, 0.0], [1.0]]
    """
    frames = torch.cat(list(features))
    mean = frames.mean(0)
    std = torch.clamp(frames.std(0), 1e-9)
    return [(f - mean) / std for f in features]


def frame_distances(query, docs, method="cosine_exp"):
    """Distances between the frames of one query and a batch of padded documents.

    Parameters
    ----------
    query : torch.Tensor
        ``(N, dim)``.
    docs : torch.Tensor
        ``(B, M, dim)`` padded documents.
    method : str
        One of :data:`DISTANCES` (scipy ``cdist`` definitions).

    Returns
    -------
    torch.Tensor
        ``(B, N, M)``.

    Example
    -------
    >>> q = torch.tensor([[1.0, 0.0]]); d = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> frame_distances(q, d, "cosine")
    tensor([[[0., 1.]]])
    """
    if method not in DISTANCES:
        raise ValueError(f"unknown QbE distance {method!r}; use one of {DISTANCES}")
    if method == "euclidean":
        return torch.cdist(query.unsqueeze(0).expand(docs.shape[0], -1, -1), docs)
    if method == "cityblock":
        return torch.cdist(query.unsqueeze(0).expand(docs.shape[0], -1, -1), docs, p=1.0)
    qn = query / query.norm(dim=-1, keepdim=True)
    dn = docs / docs.norm(dim=-1, keepdim=True)
    cosine = (1.0 - torch.einsum("nf,bmf->bnm", qn, dn)).clamp_min(0.0)
    if method == "cosine_exp":
        return torch.expm1(cosine)
    if method == "cosine_neg_log":
        return -torch.log1p(-cosine)
    return cosine


def minmax_rows(dist, doc_lens):
    """Min-max normalise each row over the first ``doc_lens[b]`` columns (padding ignored).

    Example
    -------
    >>> minmax_rows(torch.tensor([[[1.0, 3.0, 9.0]]]), torch.tensor([2]))[0, 0, :2]
    tensor([0., 1.])
    """
    cols = torch.arange(dist.shape[2], device=dist.device).view(1, 1, -1)
    pad = cols >= doc_lens.view(-1, 1, 1)
    lo = dist.masked_fill(pad, float("inf")).amin(dim=2, keepdim=True)
    hi = dist.masked_fill(pad, float("-inf")).amax(dim=2, keepdim=True)
    return (dist - lo) / (hi - lo).clamp_min(1e-9)


def _document_batches(lengths, max_cells, n_frames):
    """Index groups of documents sorted by length, each under ``max_cells`` padded cells."""
    order = np.argsort(lengths, kind="stable")
    batch, longest = [], 0
    for index in order:
        longest_if = max(longest, int(lengths[index]))
        if batch and longest_if * n_frames * (len(batch) + 1) > max_cells:
            yield batch
            batch, longest_if = [], int(lengths[index])
        batch.append(int(index))
        longest = longest_if
    if batch:
        yield batch


def qbe_scores(
    queries,
    docs,
    distance="cosine_exp",
    minmax_norm=True,
    backend="auto",
    device="cpu",
    dtype=torch.float64,
    max_cells=4_000_000,
    min_query_frames=MIN_QUERY_FRAMES,
    progress=None,
):
    """Raw matching scores ``-normalizedDistance`` of every query against every document.

    Parameters
    ----------
    queries, docs : list of torch.Tensor
        ``(frames, dim)`` features (already standardised if wanted).
    distance : str
        Frame distance, one of :data:`DISTANCES`.
    minmax_norm : bool
        Min-max normalise each row of each distance matrix.
    backend : str
        Subsequence-DTW backend (``"auto"``: numba on CPU, Triton on CUDA).
    device : str or torch.device
        Where distances and DTW run.
    dtype : torch.dtype
        Precision of distances and DP (float64 matches s3prl's scipy/dtw-python to 1e-6 and
        better; float32 is faster on a GPU).
    max_cells : int
        Padded cells (``N x M x B``) per DTW call.
    min_query_frames : int
        Queries shorter than this get score 0 against every document (s3prl: 5).
    progress : callable, optional
        Wraps the query iterator (e.g. ``tqdm``).

    Returns
    -------
    numpy.ndarray
        ``(len(queries), len(docs))`` float64.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> docs = [torch.randn(12, 4, generator=g) for _ in range(3)]
    >>> query = docs[1][3:9]
    >>> int(qbe_scores([query], docs).argmax())
    1
    """
    device = torch.device(device)
    lengths = np.array([len(d) for d in docs])
    scores = np.zeros((len(queries), len(docs)))
    iterator = range(len(queries)) if progress is None else progress(range(len(queries)))
    for qi in iterator:
        query = queries[qi].to(device=device, dtype=dtype)
        n = query.shape[0]
        if n < min_query_frames:
            continue
        for batch in _document_batches(lengths, max_cells, n):
            padded = torch.nn.utils.rnn.pad_sequence([docs[i] for i in batch], batch_first=True).to(
                device=device, dtype=dtype
            )
            doc_lens = torch.as_tensor(lengths[batch], device=device)
            dist = frame_distances(query, padded, distance)
            if minmax_norm:
                dist = minmax_rows(dist, doc_lens)
            out = subsequence_dtw(
                dist, torch.full_like(doc_lens, n), doc_lens, True, True, backend=backend
            )
            scores[qi, batch] = -out.normalized_distance.double().cpu().numpy()
    return scores


def standardise_scores(scores):
    """Per-query standardisation over the documents (population std clamped at 1e-9).

    Example
    -------
    >>> standardise_scores(np.array([[1.0, 3.0], [0.0, 0.0]]))
    array([[-1.,  1.],
           [ 0.,  0.]])
    """
    mean = scores.mean(axis=1, keepdims=True)
    std = np.clip(scores.std(axis=1, keepdims=True), 1e-9, np.inf)
    return (scores - mean) / std


def write_stdlist(path, query_names, doc_names, scores, threshold=2.0):
    """The STD list XML of s3prl's ``benchmark.stdlist.xml`` (decision YES above ``threshold``).

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "benchmark.stdlist.xml"
    >>> write_stdlist(p, ["q1"], ["d1", "d2"], np.array([[2.5, -1.0]]))
    >>> from lasersb.metrics.qbe import read_stdlist
    >>> read_stdlist(p)
    ({('q1', 'd1'): 2.5, ('q1', 'd2'): -1.0}, {('q1', 'd1')})
    """
    root = ET.Element(
        "stdlist",
        termlist_filename="benchmark.stdlist.xml",
        indexing_time="1.00",
        language="english",
        index_size="1",
        system_id="benchmark",
    )
    for qi, query in enumerate(query_names):
        termlist = ET.SubElement(
            root,
            "detected_termlist",
            termid=query,
            term_search_time="1.0",
            oov_term_count="1",
        )
        for di, doc in enumerate(doc_names):
            score = float(scores[qi, di])
            ET.SubElement(
                termlist,
                "term",
                file=doc,
                channel="1",
                tbeg="0.000",
                dur="0.00",
                score=f"{score:.4f}",
                decision="YES" if score > threshold else "NO",
            )
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(str(path), encoding="UTF-8", xml_declaration=True)


class FrameEncoder(torch.nn.Module):
    """Frame features of one layer of an upstream, or s3prl's ``fbank`` baseline features.

    Parameters
    ----------
    source : str
        Hub id or local Hugging Face folder (an SSFT ``upstream_hf`` too), loaded frozen with
        :class:`~lasersb.models.upstream.SSLUpstream`; or ``"fbank"``: s3prl's baseline upstream
        (Kaldi 80-bin log mel filterbank, 25 ms / 10 ms, deltas of order 2 with window 5,
        per-utterance mean and variance normalisation).
    layer : int or str
        Index into the upstream's ``L + 1`` hidden states (``-1``: the last layer, s3prl
        ``-l -1``), or ``"all"``: every hidden state, ``(L + 1, frames, dim)``, from the one
        forward pass (fbank: ``(1, frames, 240)``); ignored for ``"fbank"`` otherwise.

    Example
    -------
    >>> enc = FrameEncoder("fbank")
    >>> enc(torch.randn(16000)).shape
    torch.Size([98, 240])
    >>> FrameEncoder("fbank", layer="all")(torch.randn(16000)).shape
    torch.Size([1, 98, 240])
    """

    def __init__(self, source, layer=-1):
        super().__init__()
        self.source = str(source)
        if str(layer) != "all" and not str(layer).lstrip("-").isdigit():
            raise ValueError(f"layer must be an integer or 'all', got {layer!r}")
        self.layer = "all" if str(layer) == "all" else int(layer)
        self.upstream = None
        if self.source != "fbank":
            from lasersb.models.upstream import SSLUpstream

            self.upstream = SSLUpstream(self.source, trainable_layers=0)

    @property
    def sample_rate(self):
        """Sample rate the encoder expects (16 kHz)."""
        return 16000 if self.upstream is None else self.upstream.sample_rate

    @torch.no_grad()
    def forward(self, wav):
        """``(frames, dim)`` float32 features of one ``(T,)`` waveform (batch of one, as s3prl);
        ``(L + 1, frames, dim)`` with ``layer="all"``."""
        if self.upstream is None:
            feats = _fbank_features(wav)
            return feats.unsqueeze(0) if self.layer == "all" else feats
        out = self.upstream(wav.unsqueeze(0))
        if self.layer == "all":
            return torch.stack([h[0] for h in out.hidden_states]).float()
        return out.hidden_states[self.layer][0].float()


def _fbank_features(wav):
    import torchaudio

    feats = torchaudio.compliance.kaldi.fbank(
        wav.float().unsqueeze(0),
        num_mel_bins=80,
        frame_length=25.0,
        frame_shift=10.0,
        sample_frequency=16000,
    )
    d1 = torchaudio.functional.compute_deltas(feats.T, win_length=5)
    d2 = torchaudio.functional.compute_deltas(d1, win_length=5)
    feats = torch.cat([feats, d1.T, d2.T], dim=1)
    return (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-9)
