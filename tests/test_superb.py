"""Unit tests of the SUPERB downstream pieces: featuriser, heads, decoding, metrics, Brain."""

import json

import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch

from lasersb.brains.superb import SuperbCTCBrain
from lasersb.data.feature_cache import FeatureCache, module_checksum, pad_hidden_states
from lasersb.data.pipelines import add_ctc_targets
from lasersb.data.tokenizers import CharTokenizer, PhoneTokenizer
from lasersb.decoding import CTCBeamDecoder, ctc_greedy_decode
from lasersb.metrics.error_rates import ErrorRateTracker, compute_error_rate
from lasersb.models.featuriser import FeatureSpecAugment, WeightedLayerSum
from lasersb.models.heads import BiLSTMCTCHead, LinearCTCHead


def test_weighted_layer_sum_is_a_distribution_with_gradients():
    torch.manual_seed(0)
    featuriser = WeightedLayerSum(num_layers=4)
    assert torch.allclose(featuriser.layer_weights, torch.full((4,), 0.25))
    hidden = [torch.randn(2, 6, 3) for _ in range(4)]
    out = featuriser(hidden, frame_lens=torch.tensor([6, 4]))
    assert torch.allclose(out[0], sum(hidden)[0] / 4, atol=1e-6)
    out.pow(2).sum().backward()
    grad = featuriser.layer_logits.grad
    assert grad is not None and grad.abs().sum() > 0
    with torch.no_grad():
        featuriser.layer_logits.add_(torch.tensor([3.0, -1.0, 0.5, 2.0]))
    weights = featuriser.layer_weights
    assert torch.all(weights > 0) and abs(float(weights.sum()) - 1.0) < 1e-6


def test_weighted_layer_sum_honours_padding():
    featuriser = WeightedLayerSum(num_layers=2)
    hidden = torch.randn(2, 2, 5, 4)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    out = featuriser(hidden, padding_mask=mask)
    assert torch.equal(out[1, 2:], torch.zeros(3, 4))
    assert torch.equal(out, featuriser(hidden, frame_lens=torch.tensor([5, 2])))
    with pytest.raises(ValueError, match="num_layers to the upstream"):
        WeightedLayerSum(num_layers=3)(hidden)
    with pytest.raises(TypeError, match="integer frame counts"):
        featuriser(hidden, frame_lens=torch.tensor([1.0, 0.4]))


def test_spec_augment_only_touches_valid_frames():
    torch.manual_seed(0)
    aug = FeatureSpecAugment(time_warp_window=2, time_mask_width_range=(1, 4))
    feats = torch.randn(3, 30, 16)
    out = aug(feats, frame_lens=torch.tensor([30, 20, 12]))
    assert torch.equal(out[1, 20:], feats[1, 20:]) and torch.equal(out[2, 12:], feats[2, 12:])
    assert not torch.equal(out, feats)


def test_bilstm_head_is_padding_invariant():
    torch.manual_seed(0)
    head = BiLSTMCTCHead(6, vocab_size=5, project_dim=8, hidden_size=4, num_layers=2).eval()
    feats = torch.randn(2, 9, 6)
    batch = head(feats, torch.tensor([9, 5]))
    alone = head(feats[1:, :5], torch.tensor([5]))
    assert torch.allclose(batch[1, :5], alone[0], atol=1e-5)
    assert LinearCTCHead(6, 5, project_dim=3)(feats).shape == (2, 9, 5)


def test_greedy_and_beam_decoding_agree_on_peaky_outputs():
    tok = CharTokenizer()
    target = tok.encode("AB BA")
    frames = []
    for token in target:
        frames += [token, token, tok.blank_index]
    log_probs = torch.full((1, len(frames) + 4, tok.vocab_size), -12.0)
    for t, token in enumerate(frames):
        log_probs[0, t, token] = 0.0
    log_probs[0, len(frames) :, tok.word_boundary_index] = 0.0  # beyond the valid frames
    lens = torch.tensor([len(frames)])
    greedy = ctc_greedy_decode(log_probs, lens)
    assert tok.decode(greedy[0]) == "AB BA"
    beam = CTCBeamDecoder(tok.labels, beam_size=5)
    assert beam.decode_texts(log_probs, lens) == ["AB BA"]
    with pytest.raises(FileNotFoundError, match="KenLM model"):
        CTCBeamDecoder(tok.labels, kenlm_model_path="/no/such/lm.arpa")


def test_error_rates_and_files(tmp_path):
    summary = compute_error_rate(
        {"a": ["A", "B", "C", "D"], "b": ["E"]}, {"a": ["A", "X", "C"], "b": ["E", "F"]}, "WER"
    )
    assert (summary["substitutions"], summary["deletions"], summary["insertions"]) == (1, 1, 1)
    assert summary["num_ref_tokens"] == 5 and summary["error_rate"] == pytest.approx(60.0)
    tracker = ErrorRateTracker("PER")
    tracker.append(["u1"], [["K", "AE", "T"]], [["K", "T"]])
    paths = tracker.write(tmp_path, "test-clean")
    assert json.loads(paths["summary"].read_text())["deletions"] == 1
    assert paths["hypotheses"].read_text() == "u1\tK T\n"
    assert "u1" in paths["alignments"].read_text()


def test_feature_cache_keys(tmp_path):
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    assert module_checksum(a) != module_checksum(b)
    assert module_checksum(a) != module_checksum(a, extra="normalize")
    wav = tmp_path / "u.wav"
    soundfile.write(wav, np.zeros(800, dtype="float32"), 16000)
    cache = FeatureCache(tmp_path / "cache", module_checksum(a), dtype=None)
    stack = torch.randn(3, 4, 2)
    cache.save("u", wav, stack)
    assert torch.equal(cache.load("u", wav), stack)
    soundfile.write(wav, np.ones(900, dtype="float32") * 0.1, 16000)  # the audio changed
    assert cache.load("u", wav) is None
    hidden, lens = pad_hidden_states([torch.ones(3, 2, 2), stack])
    assert hidden.shape == (3, 2, 4, 2) and lens.tolist() == [2, 4]


@pytest.fixture
def toy_dataset(tmp_path):
    """Four short noise utterances with word and phone transcriptions."""
    rng = np.random.default_rng(0)
    rows = ["ID,duration,wav,spk_id,wrd,phn"]
    for i, (words, phones) in enumerate(
        [("CAT", "K AE1 T"), ("A DOG", "AH0 D AO1 G"), ("TO", "T UW1"), ("CAT TO", "K AE1 T T UW1")]
    ):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, 0.1 * rng.standard_normal(4000 + 800 * i).astype("float32"), 16000)
        rows.append(f"u{i},{(4000 + 800 * i) / 16000},{path},s1,{words},{phones}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "data.csv"


def _brain(upstream_folder, tokenizer, task, tmp_path, cache=None):
    from lasersb.models.upstream import SSLUpstream

    upstream = SSLUpstream(upstream_folder, trainable_layers=0)
    featuriser = WeightedLayerSum(upstream.num_layers + 1)
    if task == "asr":
        head = BiLSTMCTCHead(upstream.hidden_size, tokenizer.vocab_size, 16, 16, 1)
    else:
        head = LinearCTCHead(upstream.hidden_size, tokenizer.vocab_size)
    hparams = {
        "seed": 0,
        "tokenizer": tokenizer,
        "task": task,
        "metric": "WER" if task == "asr" else "PER",
        "target_key": "wrd" if task == "asr" else "phn",
        "output_folder": str(tmp_path),
        "feature_cache": cache,
        "specaug": FeatureSpecAugment(0, (0, 2), 1, (0, 4), 1) if task == "asr" else None,
        "beam_decoder": None,
        "epoch_counter": sb.utils.epoch_loop.EpochCounter(1),
        "valid_interval_epochs": 1,
        "num_checkpoints_to_keep": 1,
        "checkpoint_selection": "dev",
        "upstream_source": str(upstream_folder),
        "upstream_name": None,
        "train_logger": None,
        "tensorboard_logger": None,
    }
    modules = {"upstream": upstream, "featuriser": featuriser, "head": head}
    return SuperbCTCBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-2),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )


@pytest.mark.parametrize("task", ["asr", "pr"])
def test_brain_trains_only_the_downstream(task, toy_dataset, tiny_upstreams, tmp_path):
    from lasersb.data.pipelines import audio_dataset

    torch.manual_seed(0)
    tokenizer = CharTokenizer() if task == "asr" else PhoneTokenizer()
    dataset = audio_dataset(toy_dataset)
    add_ctc_targets([dataset], tokenizer, "wrd" if task == "asr" else "phn")
    brain = _brain(tiny_upstreams["hubert"], tokenizer, task, tmp_path)
    brain.on_fit_start()
    upstream_before = {k: v.clone() for k, v in brain.modules.upstream.state_dict().items()}
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=4)
    batch = next(iter(loader))
    brain.modules.train()
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in brain.modules.upstream.parameters())
    assert brain.modules.featuriser.layer_logits.grad.abs().sum() > 0
    assert all(p.grad is not None for p in brain.modules.head.parameters())
    brain.optimizer.step()
    for key, value in brain.modules.upstream.state_dict().items():
        assert torch.equal(value, upstream_before[key]), key
    assert abs(float(brain.modules.featuriser.layer_weights.sum()) - 1) < 1e-6
    # Evaluation writes per-utterance hypotheses and results.json.
    results = brain.evaluate_splits({"toy": dataset}, loader_kwargs={"batch_size": 2})
    assert results["task"] == task and results["toy"]["num_utterances"] == 4
    assert (tmp_path / "results.json").is_file()
    # Per-utterance edits and reference lengths, read back as the report reads them.
    from lasersb.metrics.bootstrap import read_utterance_errors

    per_utt = read_utterance_errors(tmp_path / results["toy"]["utterance_errors"])
    assert sorted(per_utt) == ["u0", "u1", "u2", "u3"]
    assert sum(e for e, _ in per_utt.values()) == results["toy"]["num_edits"]
    assert sum(r for _, r in per_utt.values()) == results["toy"]["num_ref_tokens"]
    assert len((tmp_path / "eval" / "hyp_toy.txt").read_text().splitlines()) == 4


def test_brain_feature_cache_matches_upstream(toy_dataset, tiny_upstreams, tmp_path):
    from lasersb.data.pipelines import audio_dataset

    tokenizer = PhoneTokenizer()
    dataset = audio_dataset(toy_dataset)
    add_ctc_targets([dataset], tokenizer, "phn")
    plain = _brain(tiny_upstreams["wavlm"], tokenizer, "pr", tmp_path / "a")
    checksum = module_checksum(plain.modules.upstream)
    cache = FeatureCache(tmp_path / "cache", checksum, dtype=None)
    cached = _brain(tiny_upstreams["wavlm"], tokenizer, "pr", tmp_path / "b", cache=cache)
    batch = next(iter(sb.dataio.dataloader.make_dataloader(dataset, batch_size=4)))
    ref, ref_lens = plain.upstream_hidden_states(batch)
    first, first_lens = cached.upstream_hidden_states(batch)  # computes and stores
    second, second_lens = cached.upstream_hidden_states(batch)  # served from disk
    assert cache.misses == 4 and cache.hits == 4
    assert torch.equal(ref_lens, second_lens) and torch.equal(first_lens, second_lens)
    for i, n in enumerate(ref_lens.tolist()):
        assert torch.allclose(ref[:, i, :n], second[:, i, :n], atol=1e-6)


def test_brain_feature_cache_runs_the_upstream_on_missing_utterances_only(
    toy_dataset, tiny_upstreams, tmp_path
):
    from lasersb.data.pipelines import audio_dataset

    tokenizer = PhoneTokenizer()
    dataset = audio_dataset(toy_dataset)
    add_ctc_targets([dataset], tokenizer, "phn")
    brain = _brain(tiny_upstreams["hubert"], tokenizer, "pr", tmp_path / "a")
    cache = FeatureCache(tmp_path / "cache", "tiny", dtype=None)
    brain.hparams.feature_cache = cache
    seen = []
    forward = brain.modules.upstream.forward

    def counting(wavs, wav_lens=None):
        seen.append(wavs.shape[0])
        return forward(wavs, wav_lens)

    brain.modules.upstream.forward = counting
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=2)
    first = next(iter(loader))  # u0, u1: computed and stored
    brain.upstream_hidden_states(first)
    batch = next(iter(sb.dataio.dataloader.make_dataloader(dataset, batch_size=4)))
    hidden, lens = brain.upstream_hidden_states(batch)  # u2, u3 only go through the upstream
    assert seen == [2, 2] and cache.misses == 4 and cache.hits == 2
    # u3 (the longest) computed alone equals its entry computed next to u2 (exact padding).
    alone = brain.modules.upstream(batch.sig[0][3:], torch.ones(1))
    n = int(lens[3])
    assert torch.allclose(hidden[:, 3, :n], torch.stack(alone.hidden_states)[:, 0, :n], atol=1e-5)
