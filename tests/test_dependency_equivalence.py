"""Where lasersb uses a dependency's facility, or keeps its own, the two agree as stated.

Each test backs a comment in the library: scikit-learn's confusion matrix / accuracies are
used (bit-identical to what was written by hand before); SpeechBrain's ``length_to_mask``
replaces hand-written masks; SpeechBrain's greedy CTC decoder gives what ours gave;
our WER/PER/CER (SpeechBrain's edit distance) equal jiwer's; our EER/minDCF, F1, SI-SNR and
statistics pooling are kept for the reasons their docstrings give, measured here.
"""

import warnings
from itertools import groupby

import numpy as np
import pytest
import torch
from conftest import require_oracle
from sklearn import metrics as sk_metrics
from speechbrain.dataio.dataio import length_to_mask

from lasersb.alignment.frame_losses import frame_mse
from lasersb.data.tokenizers import CharTokenizer, PhoneTokenizer
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics import classification
from lasersb.metrics.enhancement import si_snr
from lasersb.metrics.error_rates import ErrorRateTracker, character_units
from lasersb.metrics.verification import compute_eer, compute_min_dcf
from lasersb.models.resnet import StatisticsPooling


def _random_labels(rng, count=300):
    for _ in range(count):
        n, k = int(rng.integers(1, 40)), int(rng.integers(2, 5))
        yield rng.integers(0, k, n), rng.integers(0, k, n), k


def test_classification_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    f1_gap = 0.0
    for targets, predictions, k in _random_labels(rng):
        # The pre-sklearn implementation of the confusion matrix, UA and WA.
        manual = np.zeros((k, k), dtype=np.int64)
        np.add.at(manual, (targets, predictions), 1)
        support = manual.sum(axis=1)
        present = support > 0
        ua = float((np.diag(manual)[present] / support[present]).mean())
        wa = float(np.trace(manual) / manual.sum())
        assert np.array_equal(classification.confusion_matrix(targets, predictions, k), manual)
        assert classification.unweighted_accuracy(targets, predictions) == ua
        assert classification.weighted_accuracy(targets, predictions) == wa
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = sk_metrics.precision_recall_fscore_support(
                targets, predictions, labels=[1], average=None, zero_division=0
            )
        ours = classification.precision_recall_f1(targets, predictions, 1)
        assert ours[:2] == (float(sk[0][0]), float(sk[1][0]))
        f1_gap = max(f1_gap, abs(ours[2] - float(sk[2][0])))
    assert f1_gap <= 1e-15


def test_eer_and_min_dcf_equal_speechbrain():
    from speechbrain.utils.metric_stats import EER, minDCF

    rng = np.random.default_rng(0)
    targets, nontargets = rng.normal(2, 1, 300), rng.normal(0, 1, 3000)
    scores = np.concatenate([targets, nontargets])
    labels = np.concatenate([np.ones(300), np.zeros(3000)]).astype(int)
    sb_eer = EER(torch.tensor(targets), torch.tensor(nontargets))[0]
    # SpeechBrain averages miss and false-alarm rates at its closest threshold; ours
    # interpolates the crossing: they agree within one target trial (1/300).
    assert abs(compute_eer(scores, labels)[0] - float(sb_eer)) <= 1 / 300
    for p in (0.01, 0.05):
        sb_dcf = minDCF(torch.tensor(targets), torch.tensor(nontargets), p_target=p)[0]
        ours = compute_min_dcf(scores, labels, p_target=p)[0]
        assert ours == pytest.approx(float(sb_dcf) / min(p, 1 - p), abs=1e-6)


def test_length_to_mask_equals_the_hand_written_masks():
    lens = torch.tensor([5, 2, 7, 1])
    manual = torch.arange(7)[None] < lens[:, None]
    assert torch.equal(length_to_mask(lens, max_len=7, dtype=torch.bool), manual)
    # frame_mse with the library mask gives the hand-masked value exactly.
    x, y = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    err = (x - y).pow(2).sum(-1)
    expected = (err * manual.to(x.dtype)).sum(1) / lens.to(x.dtype)
    assert torch.equal(frame_mse(x, y, lens), expected)


def test_si_snr_equals_speechbrain_without_padding_and_counts_only_valid_samples():
    from speechbrain.nnet.losses import cal_si_snr

    torch.manual_seed(0)
    clean = torch.randn(2, 16000)
    enhanced = clean + 0.1 * torch.randn(2, 16000)
    sb_value = -cal_si_snr(clean.T.unsqueeze(-1), enhanced.T.unsqueeze(-1)).view(-1)
    assert torch.allclose(si_snr(enhanced, clean), sb_value, atol=1e-4)
    # Item 1 is half as long; the enhancer writes (small) values into its padding.
    lens = torch.tensor([1.0, 0.5])
    clean_pad, enhanced_pad = clean.clone(), enhanced.clone()
    clean_pad[1, 8000:] = 0
    enhanced_pad[1, 8000:] = 0.05 * torch.randn(8000)
    unpadded = si_snr(enhanced[1:, :8000], clean[1:, :8000])
    ours = si_snr(enhanced_pad, clean_pad, lens)
    sb_padded = -cal_si_snr(clean_pad.T.unsqueeze(-1), enhanced_pad.T.unsqueeze(-1)).view(-1)
    assert ours[1] == pytest.approx(float(unpadded), abs=1e-4)
    assert float(unpadded - sb_padded[1]) > 0.5  # measured: 20.00 vs 19.02 dB


def test_statistics_pooling_differs_from_speechbrain_as_documented():
    from speechbrain.nnet.pooling import StatisticsPooling as SpeechBrainPooling

    torch.manual_seed(0)
    x = torch.randn(2, 4, 50)
    ours = StatisticsPooling()(x, torch.tensor([50, 30]))
    state = torch.get_rng_state()
    theirs = SpeechBrainPooling()(x.transpose(1, 2), torch.tensor([1.0, 0.6])).squeeze(1)
    assert not torch.equal(state, torch.get_rng_state())  # it draws from the global RNG
    mean_gap = (ours[:, :4] - theirs[:, :4]).abs().max()
    assert 0 < mean_gap < 1e-4  # random noise on the mean
    assert (ours[:, 4:] - theirs[:, 4:]).abs().max() > 1e-3  # unbiased std
    valid = x[1, :, :30]
    expected = torch.cat([valid.mean(-1), valid.var(-1, unbiased=False).sqrt()])
    assert torch.allclose(ours[1], expected, atol=1e-6)


def _hand_written_greedy_decode(log_probs, frame_lens, blank_index):
    # lasersb's greedy CTC decoder before it delegated to SpeechBrain's (commit ef44014).
    best = log_probs.argmax(dim=-1).cpu()
    lens = torch.as_tensor(frame_lens).clamp(max=log_probs.shape[1]).tolist()
    hyps = []
    for row, length in zip(best.tolist(), lens):
        collapsed = [token for token, _ in groupby(row[: int(length)])]
        hyps.append([token for token in collapsed if token != blank_index])
    return hyps


def test_greedy_ctc_decode_equals_the_hand_written_decoder():
    # Integer counts become float64 relative lengths; SpeechBrain's round(rel * max_len)
    # gives every count back exactly.
    for max_len in range(1, 4097):
        counts = torch.arange(max_len + 1, dtype=torch.float64)
        assert torch.equal(torch.round(counts / max_len * max_len), counts)
    rng = np.random.default_rng(0)
    ties = 0
    for _ in range(300):
        batch, max_len, vocab = (int(v) for v in rng.integers(1, [9, 60, 12], endpoint=True))
        if rng.random() < 0.5:  # few distinct values: ties in the argmax are common
            logits = torch.tensor(rng.integers(0, 3, (batch, max_len, vocab)), dtype=torch.float32)
        else:
            logits = torch.log_softmax(torch.tensor(rng.normal(size=(batch, max_len, vocab))), -1)
        top = logits.max(-1, keepdim=True).values
        ties += int(((logits == top).sum(-1) > 1).sum())
        lens = torch.tensor(rng.integers(0, max_len, batch, endpoint=True))
        lens[0], lens[-1] = 0, max_len  # an empty and a full-length utterance in every batch
        if rng.random() < 0.2:
            lens[-1] = max_len + 3  # counts beyond the padded length are clamped
        blank = int(rng.integers(0, vocab))
        expected = _hand_written_greedy_decode(logits, lens, blank)
        assert ctc_greedy_decode(logits, lens, blank) == expected
        assert ctc_greedy_decode(logits, lens.tolist(), blank) == expected
        full = _hand_written_greedy_decode(logits, [max_len] * batch, blank)
        assert ctc_greedy_decode(logits, blank_index=blank) == full
    assert ties > 1000  # the tie-breaking (first maximum) was exercised
    with pytest.raises(TypeError, match="integer frame counts"):
        ctc_greedy_decode(torch.zeros(1, 3, 2), torch.tensor([1.0]))


def _noisy_copy(rng, units, vocab, rate):
    # A hypothesis as a recogniser gets it wrong: deletions, substitutions, insertions.
    out = []
    for unit in units:
        u = rng.random()
        if u >= rate / 3:
            out.append(str(rng.choice(vocab)) if u < 2 * rate / 3 else unit)
        if rng.random() < rate / 3:
            out.append(str(rng.choice(vocab)))
    return out


def _replays_to_hypothesis(detail):
    # SpeechBrain's alignment turns the reference into the hypothesis with its counted edits.
    ref, hyp, built = detail["ref_tokens"], detail["hyp_tokens"], []
    ops = {"S": 0, "D": 0, "I": 0}
    for op, i, j in detail["alignment"]:
        if op == "=":
            assert ref[i] == hyp[j]
        else:
            ops[op] += 1
        if op != "D":
            built.append(hyp[j])
    counts = (detail["substitutions"], detail["deletions"], detail["insertions"])
    return built == hyp and (ops["S"], ops["D"], ops["I"]) == counts


def _jiwer_counts(alignment):
    counts = {"substitute": 0, "delete": 0, "insert": 0}
    for chunk in alignment:
        if chunk.type in ("substitute", "delete"):
            counts[chunk.type] += chunk.ref_end_idx - chunk.ref_start_idx
        elif chunk.type == "insert":
            counts[chunk.type] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return counts["substitute"], counts["delete"], counts["insert"]


def _score_like_the_recipes(jiwer, rng, count=300):
    """Our trackers and jiwer's outputs, hypotheses/references built as our Brains build them."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
    words = sorted({"".join(rng.choice(letters, rng.integers(1, 9))) for _ in range(400)})
    chars, phones = CharTokenizer(), PhoneTokenizer(keep_stress=False)
    phone_set = [p for i, p in enumerate(phones.labels) if i != phones.blank_index]
    trackers = {metric: ErrorRateTracker(metric) for metric in ("WER", "CER", "PER")}
    texts = {metric: ([], []) for metric in trackers}
    for n in range(count):
        rate = float(rng.choice([0.0, 0.05, 0.2, 0.5, 1.0]))
        ref_text = " ".join(rng.choice(words, rng.integers(1, 25)))
        hyp_text = " ".join(_noisy_copy(rng, ref_text.split(), words, rate))
        ref_phones = [str(p) for p in rng.choice(phone_set, rng.integers(1, 40))]
        hyp_phones = _noisy_copy(rng, ref_phones, phone_set, rate)
        if n % 10 == 0:  # the recogniser emitted only blanks
            hyp_text, hyp_phones = "", []
        key = [f"utt{n}"]
        hyp_char_ids, hyp_phone_ids = chars.encode(hyp_text), phones.encode(hyp_phones)
        decoded = chars.decode(hyp_char_ids)
        # ASR (brains/superb.py, brains/adapter_ctc.py): words of the decoded CTC ids.
        trackers["WER"].append(key, [chars.units(ref_text)], [chars.decode_units(hyp_char_ids)])
        # CER (brains/adapter_ctc.py): characters of the decoded text, spaces as "|".
        trackers["CER"].append(key, [character_units(ref_text)], [character_units(decoded)])
        # PR (brains/superb.py): phones of the decoded CTC ids.
        trackers["PER"].append(
            key, [phones.units(ref_phones)], [phones.decode_units(hyp_phone_ids)]
        )
        for metric, ref, hyp in (
            ("WER", ref_text, decoded),
            ("CER", ref_text, decoded),
            ("PER", " ".join(ref_phones), " ".join(hyp_phones)),
        ):
            texts[metric][0].append(ref)
            texts[metric][1].append(hyp)
    theirs = {
        "WER": jiwer.process_words(*texts["WER"]),
        "CER": jiwer.process_characters(*texts["CER"]),
        "PER": jiwer.process_words(*texts["PER"]),
    }
    return trackers, theirs


def test_error_rates_equal_jiwer():
    jiwer = require_oracle("jiwer")  # the reference (requirements-dev.txt)
    trackers, theirs = _score_like_the_recipes(jiwer, np.random.default_rng(0))
    split_otherwise = {}
    for metric, tracker in trackers.items():
        ours, jw = tracker.summarize(), theirs[metric]
        rate = jw.cer if metric == "CER" else jw.wer
        assert ours["error_rate"] == pytest.approx(100 * rate, rel=1e-12)
        assert ours["num_ref_tokens"] == jw.hits + jw.substitutions + jw.deletions
        assert ours["num_edits"] == jw.substitutions + jw.deletions + jw.insertions
        assert ours["num_utterances"] == 300
        differ = 0
        for detail, alignment in zip(tracker.details(compute_alignments=True), jw.alignments):
            jiwer_counts = _jiwer_counts(alignment)
            ours_counts = (detail["substitutions"], detail["deletions"], detail["insertions"])
            # The same minimal number of edits per utterance, and our alignment is a real one.
            assert sum(ours_counts) == sum(jiwer_counts) == detail["num_edits"]
            assert _replays_to_hypothesis(detail)
            if sum(ours_counts) <= 1:  # no edit or a single one: one way to align only
                assert ours_counts == jiwer_counts
            differ += ours_counts != jiwer_counts
        split_otherwise[metric] = differ
    # Where several minimal alignments exist ("A B" -> "B C": two substitutions, or a
    # deletion, a hit and an insertion) SpeechBrain and jiwer break the tie differently, so
    # the S/D/I split (not the rate, which SUPERB reports) differs on some utterances. Measured
    # here: 22 (WER), 54 (CER), 30 (PER) of 300; corpus WER S/D/I 572/589/215, jiwer's
    # 626/562/188. SpeechBrain keeps the hit in "A B" -> "B C" (sclite's 4/3/3 weights would).
    assert all(0 < n < 150 for n in split_otherwise.values()), split_otherwise
