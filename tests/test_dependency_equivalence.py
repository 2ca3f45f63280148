"""Where lasersb uses a dependency's facility, or keeps its own, the two agree as stated.

Each test backs a comment in the library: scikit-learn's confusion matrix / accuracies are
used (bit-identical to what was written by hand before); SpeechBrain's ``length_to_mask``
replaces hand-written masks; SpeechBrain's greedy CTC decoder gives what ours gave;
our EER/minDCF, F1, SI-SNR and statistics pooling are kept for
the reasons their docstrings give, measured here.
"""

import warnings
from itertools import groupby

import numpy as np
import pytest
import torch
from sklearn import metrics as sk_metrics
from speechbrain.dataio.dataio import length_to_mask

from lasersb.alignment.frame_losses import frame_mse
from lasersb.decoding import ctc_greedy_decode
from lasersb.metrics import classification
from lasersb.metrics.enhancement import si_snr
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
