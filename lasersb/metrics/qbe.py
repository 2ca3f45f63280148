"""QUESST 2014 query-by-example metrics: ATWV/MTWV and actual/minimum Cnxe, from the ground truth.

The QUESST ground truth comes in the NIST STD 2006 files the official ``score-TWV-Cnxe.sh``
reads (one folder, e.g. ``scoring/groundtruth_quesst14_dev/``):

* ``*.ecf.xml``: ``<excerpt audio_filename="..."/>`` per document (the trial documents);
* ``*.tlist.xml``: ``<term termid="..."><termtext>...</termtext></term>`` per query;
* ``*.rttm``: ``LEXEME <file> <chnl> <tbeg> <dur> <term> ...`` per occurrence of a query in a
  document (the 6th field names the term by its termid or its termtext).

A system output is the STD list (``*.stdlist.xml``): per query a ``detected_termlist`` with one
``term`` per document (``file``, ``score``, ``decision``). QUESST 2014 scores documents, not
time spans: every (query, document) pair is a trial, a target when the RTTM has an occurrence.

Definitions (as the QUESST scoring tool computes them; constants from the task's
``score-TWV-Cnxe.sh``: ``P_target = 0.0008``, ``C_miss = 100``, ``C_fa = 1``):

* ``TWV(t) = 1 - mean_q [P_miss(q, t) + beta * P_fa(q, t)]`` over the queries with at least one
  occurrence, ``P_miss = 1 - hits / N_true(q)``, ``P_fa = false alarms / (N_docs - N_true(q))``,
  ``beta = C_fa (1 - P_target) / (C_miss P_target) = 12.49``; ATWV uses the system's YES
  decisions, MTWV the best threshold on the scores (the tool's ``maxTWV``).
* Scores are log-likelihood ratios; with the effective prior
  ``P_eff = C_miss P / (C_miss P + C_fa (1 - P)) = 0.0741``,
  ``C_xe = [P_eff mean_tar log2(1 + e^-(s + logit P_eff))
  + (1 - P_eff) mean_non log2(1 + e^(s + logit P_eff))]`` over all trials, and
  ``Cnxe = C_xe / H(P_eff)`` (1 for an uninformative system that outputs ``s = 0``).
  ``minCnxe`` is ``Cnxe`` after the optimal monotonic calibration of the pooled scores
  (pool-adjacent-violators, as BOSARIS's min C_llr).
* Trials the system did not score get ``default_score`` (the scoring script's third argument,
  ``-10`` in SUPERB's instructions) and a NO decision.

Example
-------
>>> truth = QbEGroundTruth(["q1"], ["d1", "d2", "d3"], {("q1", "d2")})
>>> scores = {("q1", "d1"): -1.0, ("q1", "d2"): 3.0, ("q1", "d3"): 0.5}
>>> res = qbe_metrics(scores, truth, decisions={("q1", "d2")})
>>> res["atwv"], res["mtwv"]
(1.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

P_TARGET = 0.0008
C_MISS = 100.0
C_FA = 1.0


def twv_beta(p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    """``beta = C_fa (1 - P_target) / (C_miss P_target)`` of the term-weighted value.

    Example
    -------
    >>> round(twv_beta(), 4)
    12.49
    """
    return c_fa * (1.0 - p_target) / (c_miss * p_target)


def effective_prior(p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    """The prior the scoring script passes to the QUESST tool for Cnxe (``EFFPRIOR``).

    The script computes it with ``bc`` at 7 decimals (``0.0741289``); this is the exact value.

    Example
    -------
    >>> round(effective_prior(), 8)
    0.07412898
    """
    return c_miss * p_target / (c_miss * p_target + c_fa * (1.0 - p_target))


def audio_id(name):
    """A document or query id from a file name: no folder, no audio extension.

    Example
    -------
    >>> audio_id("Audio/quesst14_00001.wav")
    'quesst14_00001'
    """
    base = re.split(r"[\\/]", str(name))[-1]
    return re.sub(r"\.(wav|flac|sph|mp3)$", "", base, flags=re.IGNORECASE)


@dataclasses.dataclass
class QbEGroundTruth:
    """Queries, documents (trials are all their pairs) and the target pairs.

    Parameters
    ----------
    queries : list of str
        Query ids (the TLIST's termids).
    documents : list of str
        Document ids (the ECF's excerpts, without folder and extension).
    targets : set of (str, str)
        ``(query, document)`` pairs where the query occurs.
    """

    queries: list
    documents: list
    targets: set

    @classmethod
    def from_folder(cls, folder):
        """Read ``*.ecf.xml``, ``*.tlist.xml`` and ``*.rttm`` of one ground-truth folder.

        Example
        -------
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "a.ecf.xml").write_text('<ecf><excerpt audio_filename="Audio/d1.wav"/></ecf>')
        >>> _ = (d / "a.tlist.xml").write_text('<termlist><term termid="q1"/></termlist>')
        >>> _ = (d / "a.rttm").write_text("LEXEME d1 1 0.5 0.4 q1 lex q1 1\\n")
        >>> QbEGroundTruth.from_folder(d).targets
        {('q1', 'd1')}
        """
        folder = Path(folder)
        found = {}
        for pattern in ("*.ecf.xml", "*.tlist.xml", "*.rttm"):
            files = sorted(folder.glob(pattern))
            if len(files) != 1:
                raise FileNotFoundError(
                    f"{folder}: expected exactly one {pattern} file (the QUESST ground truth, "
                    f"e.g. scoring/groundtruth_quesst14_dev/), found {len(files)}; pass the "
                    "ground-truth folder of one split."
                )
            found[pattern] = files[0]
        documents = read_ecf(found["*.ecf.xml"])
        queries, by_text = read_tlist(found["*.tlist.xml"])
        targets = read_rttm(found["*.rttm"], by_text)
        known_q, known_d = set(queries), set(documents)
        targets = {(q, d) for q, d in targets if q in known_q and d in known_d}
        return cls(queries, documents, targets)


def _parse_xml(path):
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"{path}: not well-formed XML ({error}); re-extract the file.") from None


def read_ecf(path):
    """Document ids of an ECF file (order kept, duplicates dropped).

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.ecf.xml"
    >>> _ = p.write_text('<ecf><excerpt audio_filename="A/d1.wav"/>'
    ...                  '<excerpt audio_filename="d2"/></ecf>')
    >>> read_ecf(p)
    ['d1', 'd2']
    """
    root = _parse_xml(path)
    docs = [audio_id(e.get("audio_filename", "")) for e in root.iter("excerpt")]
    if not docs or "" in docs:
        raise ValueError(f"{path}: no <excerpt audio_filename=...> elements; is this an ECF file?")
    return list(dict.fromkeys(docs))


def read_tlist(path):
    """Query ids of a TLIST file and a ``termtext -> termid`` map.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.tlist.xml"
    >>> _ = p.write_text('<termlist><term termid="q1"><termtext>hello</termtext></term></termlist>')
    >>> read_tlist(p)
    (['q1'], {'hello': 'q1', 'q1': 'q1'})
    """
    root = _parse_xml(path)
    queries, by_text = [], {}
    for term in root.iter("term"):
        termid = term.get("termid")
        if not termid:
            raise ValueError(f"{path}: a <term> without termid; is this a TLIST file?")
        queries.append(termid)
        text = term.findtext("termtext")
        if text:
            by_text[text.strip()] = termid
        by_text[termid] = termid
    if not queries:
        raise ValueError(f"{path}: no <term termid=...> elements; is this a TLIST file?")
    return queries, by_text


def read_rttm(path, term_ids=None):
    """``(query, document)`` pairs of the LEXEME lines of an RTTM file.

    Parameters
    ----------
    path : str or Path
        The RTTM file.
    term_ids : dict, optional
        ``termtext or termid -> termid`` (from :func:`read_tlist`); unknown terms are kept as is.

    Returns
    -------
    set of (str, str)

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.rttm"
    >>> _ = p.write_text("LEXEME d1 1 0.50 0.40 hello lex <NA> <NA>\\nSPEAKER d1 1 0 1 <NA>\\n")
    >>> read_rttm(p, {"hello": "q1"})
    {('q1', 'd1')}
    """
    term_ids = term_ids or {}
    pairs = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0].startswith(";") or fields[0] != "LEXEME":
                continue
            if len(fields) < 6:
                raise ValueError(
                    f"{path}:{number}: a LEXEME line needs at least 6 fields (LEXEME file chnl "
                    f"tbeg dur term ...), got {line.strip()!r}"
                )
            pairs.add((term_ids.get(fields[5], fields[5]), audio_id(fields[1])))
    return pairs


def read_stdlist(path):
    """Scores and YES decisions of an STD list XML.

    Returns
    -------
    scores : dict
        ``(query, document) -> score``.
    decisions : set
        Pairs marked ``decision="YES"``.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "s.stdlist.xml"
    >>> _ = p.write_text('<stdlist><detected_termlist termid="q1"><term file="d1" score="2.5" '
    ...                  'decision="YES"/></detected_termlist></stdlist>')
    >>> read_stdlist(p)
    ({('q1', 'd1'): 2.5}, {('q1', 'd1')})
    """
    root = _parse_xml(path)
    scores, decisions = {}, set()
    for termlist in root.iter("detected_termlist"):
        query = termlist.get("termid")
        for term in termlist.iter("term"):
            key = (query, audio_id(term.get("file")))
            scores[key] = float(term.get("score"))
            if term.get("decision", "NO").upper() == "YES":
                decisions.add(key)
    return scores, decisions


def _trial_arrays(scores, truth, default_score, decisions):
    """Scores, target labels, query index and decisions of every trial of the scored queries."""
    n_true = {q: 0 for q in truth.queries}
    for q, _ in truth.targets:
        n_true[q] += 1
    queries = [q for q in truth.queries if n_true[q] > 0]  # the tool drops unseen queries
    s, y, qi, dec, given = [], [], [], [], 0
    for k, q in enumerate(queries):
        for d in truth.documents:
            score = scores.get((q, d))
            given += score is not None
            s.append(default_score if score is None else score)
            y.append((q, d) in truth.targets)
            qi.append(k)
            dec.append(decisions is not None and (q, d) in decisions)
    n_true_arr = np.array([n_true[q] for q in queries], dtype=np.float64)
    arrays = np.array(s, dtype=np.float64), np.array(y, dtype=bool), np.array(qi), np.array(dec)
    return (*arrays, n_true_arr, given)


def _twv_weights(y, qi, n_true, n_docs, beta):
    """Per-trial change of TWV when the trial is declared YES (hit: +, false alarm: -)."""
    n_queries = len(n_true)
    w_hit = 1.0 / (n_queries * n_true[qi])
    w_fa = -beta / (n_queries * (n_docs - n_true[qi]))
    return np.where(y, w_hit, w_fa)


def maximum_twv(s, y, qi, n_true, n_docs, beta):
    """MTWV and its threshold (decisions ``score >= threshold``) of pooled trials.

    Example
    -------
    >>> s = np.array([3.0, 1.0, 2.0, 0.0]); y = np.array([True, False, True, False])
    >>> maximum_twv(s, y, np.zeros(4, int), np.array([2.0]), 4, 0.5)
    (1.0, 2.0)
    """
    w = _twv_weights(y, qi, n_true, n_docs, beta)
    order = np.argsort(-s, kind="stable")
    s_sorted, cum = s[order], np.cumsum(w[order])
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    candidates, thresholds = cum[last_of_tie], s_sorted[last_of_tie]
    best = int(np.argmax(candidates))
    if candidates[best] <= 0.0:  # no YES at all: TWV = 0
        return 0.0, float("inf")
    return float(candidates[best]), float(thresholds[best])


def _pav(y_sorted):
    """Pool-adjacent-violators on labels sorted by increasing score: monotone posteriors."""
    values, weights, counts = [], [], []
    for v in y_sorted.astype(np.float64):
        values.append(v)
        weights.append(1.0)
        counts.append(1)
        while len(values) > 1 and values[-2] >= values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            c = counts[-2] + counts[-1]
            del values[-1], weights[-1], counts[-1]
            values[-1], weights[-1], counts[-1] = v, w, c
    return np.repeat(values, counts)


def cnxe(s, y, p_eff):
    """Normalised cross-entropy of log-likelihood-ratio scores ``s`` with labels ``y``.

    Example
    -------
    >>> y = np.array([True, False, False])
    >>> round(cnxe(np.zeros(3), y, 0.07), 6)  # an uninformative system
    1.0
    """
    a = np.log(p_eff) - np.log1p(-p_eff)
    tar = np.logaddexp(0.0, -(s[y] + a)).mean() / np.log(2)
    non = np.logaddexp(0.0, s[~y] + a).mean() / np.log(2)
    prior_entropy = -(p_eff * np.log2(p_eff) + (1 - p_eff) * np.log2(1 - p_eff))
    return float((p_eff * tar + (1 - p_eff) * non) / prior_entropy)


def min_cnxe(s, y, p_eff):
    """Cnxe after the optimal monotonic (PAV) calibration of the pooled scores.

    Example
    -------
    >>> s = np.array([5.0, -1.0, 0.0, -3.0]); y = np.array([True, False, False, False])
    >>> min_cnxe(s, y, 0.07)
    0.0
    """
    order = np.argsort(s, kind="stable")
    with np.errstate(divide="ignore"):
        posterior = _pav(y[order])
        prior = y.mean()
        llr = np.log(posterior) - np.log1p(-posterior) - (np.log(prior) - np.log1p(-prior))
    calibrated = np.empty_like(llr)
    calibrated[order] = llr
    return cnxe(calibrated, y, p_eff)


def qbe_metrics(
    scores,
    truth,
    decisions=None,
    default_score=-10.0,
    p_target=P_TARGET,
    c_miss=C_MISS,
    c_fa=C_FA,
):
    """ATWV, MTWV (and threshold), actual and minimum Cnxe of a QbE system.

    Parameters
    ----------
    scores : dict
        ``(query, document) -> score``; missing trials get ``default_score``.
    truth : QbEGroundTruth
        The ground truth.
    decisions : set, optional
        Pairs decided YES (for ATWV); ``None`` leaves ``atwv`` out.
    default_score : float
        Score of unscored trials (always a NO decision).
    p_target, c_miss, c_fa : float
        Cost parameters (QUESST 2014's by default).

    Returns
    -------
    dict
        ``atwv`` (if decisions), ``mtwv``, ``mtwv_threshold``, ``act_cnxe``, ``min_cnxe``,
        ``queries`` (scored queries), ``documents``, ``trials``, ``targets``, ``scored_trials``.

    Example
    -------
    >>> truth = QbEGroundTruth(["q1", "q2"], ["d1", "d2"], {("q1", "d1")})
    >>> qbe_metrics({("q1", "d1"): 1.0, ("q1", "d2"): -1.0}, truth)["mtwv"]
    1.0
    """
    beta = twv_beta(p_target, c_miss, c_fa)
    s, y, qi, dec, n_true, given = _trial_arrays(scores, truth, default_score, decisions)
    if not y.any():
        raise ValueError(
            "qbe_metrics: no target trial (no query of the ground truth occurs in its "
            "documents); check that the RTTM's file and term fields match the ECF and TLIST."
        )
    n_docs = len(truth.documents)
    mtwv, threshold = maximum_twv(s, y, qi, n_true, n_docs, beta)
    p_eff = effective_prior(p_target, c_miss, c_fa)
    result = {
        "mtwv": mtwv,
        "mtwv_threshold": threshold,
        "act_cnxe": cnxe(s, y, p_eff),
        "min_cnxe": min_cnxe(s, y, p_eff),
        "queries": len(n_true),
        "documents": n_docs,
        "trials": int(s.size),
        "targets": int(y.sum()),
        "scored_trials": int(given),
    }
    if decisions is not None:
        w = _twv_weights(y, qi, n_true, n_docs, beta)
        result["atwv"] = float(w[dec].sum())
    return result


def score_stdlist(stdlist, groundtruth_folder, default_score=-10.0):
    """Score an STD list XML against a ground-truth folder (``score-TWV-Cnxe.sh``'s job).

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.ecf.xml").write_text('<ecf><excerpt audio_filename="d1"/>'
    ...                                  '<excerpt audio_filename="d2"/></ecf>')
    >>> _ = (d / "a.tlist.xml").write_text('<termlist><term termid="q1"/></termlist>')
    >>> _ = (d / "a.rttm").write_text("LEXEME d2 1 0.5 0.4 q1 lex q1 1\\n")
    >>> _ = (d / "s.stdlist.xml").write_text('<stdlist><detected_termlist termid="q1">'
    ...     '<term file="d2" score="2.0" decision="YES"/></detected_termlist></stdlist>')
    >>> score_stdlist(d / "s.stdlist.xml", d)["atwv"]
    1.0
    """
    scores, decisions = read_stdlist(stdlist)
    truth = QbEGroundTruth.from_folder(groundtruth_folder)
    return qbe_metrics(scores, truth, decisions, default_score)
