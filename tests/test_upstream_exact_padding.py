"""``SSLUpstream(exact_padding=True)``: a padded batch gives each utterance its solo output."""

import pytest
import torch

from lasersb.models.upstream import SSLUpstream


@pytest.mark.parametrize("kind", ["hubert", "wavlm", "wav2vec2"])
def test_padded_batch_equals_each_utterance_alone(kind, tiny_upstreams):
    upstream = SSLUpstream(tiny_upstreams[kind], exact_padding=True).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = [16000, 9000, 5200]
    wavs = torch.zeros(3, max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=generator)
    rel = torch.tensor(lengths, dtype=torch.float) / max(lengths)
    batch = upstream(wavs, rel)
    for i, n in enumerate(lengths):
        alone = upstream(wavs[i : i + 1, :n])
        frames = int(batch.frame_lens[i])
        assert frames == alone.last_hidden_state.shape[1]
        for layer, (b, a) in enumerate(zip(batch.hidden_states, alone.hidden_states)):
            torch.testing.assert_close(
                b[i, :frames], a[0], rtol=1e-4, atol=1e-5, msg=f"layer {layer}, item {i}"
            )


def test_default_follows_hugging_face_and_differs(tiny_upstreams):
    """Without exact_padding, the group norm of base models sees the padding (documented)."""
    upstream = SSLUpstream(tiny_upstreams["hubert"]).eval()
    wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    batch = upstream(wavs, torch.tensor([1.0, 0.5]))
    alone = upstream(wavs[1:2, :8000])
    frames = alone.last_hidden_state.shape[1]
    assert not torch.allclose(batch.last_hidden_state[1, :frames], alone.last_hidden_state[0])


def test_exact_padding_gradients_reach_trainable_layers(tiny_upstreams):
    upstream = SSLUpstream(tiny_upstreams["hubert"], trainable_layers=1, exact_padding=True)
    out = upstream(0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.6]))
    out.last_hidden_state.sum().backward()
    grads = [p.grad for p in upstream.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
