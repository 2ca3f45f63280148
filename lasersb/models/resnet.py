"""Speaker-embedding trunks: a light ResNet-34 (hyperion's ``lresnet34``) and ECAPA-TDNN.

:class:`LightResNet34` is the trunk of Cho et al.'s utterance-level DINO and of the supervised
x-vector baseline: a 2-D ResNet-34 over (frequency, time) with 16 base channels
(16-32-64-128 per stage, strides 1-2-2-2), ReLU6 activations (hyperion's ``hid_act``
default; ``activation="relu"`` is an option), statistics pooling (mean and standard deviation
over the valid frames of each utterance) and an embedding layer (256-d): a linear layer with
bias followed by an affine-free batch norm. (Hyperion's embedding layer differs: a linear layer
without bias followed by an affine batch norm.)
:class:`SpeakerEmbeddingModel` puts the front-end (:class:`lasersb.models.fbank.LogFbankSTMN`)
and a trunk together: ``(wavs, rel_lens) -> (B, embedding_dim)``. It is built from plain
arguments that it keeps in :attr:`SpeakerEmbeddingModel.config`, so a checkpoint can rebuild it
(see :func:`lasersb.models.dino.load_embedding_model`).
"""

from __future__ import annotations

import torch
from speechbrain.dataio.dataio import length_to_mask
from torch import nn

from lasersb.models.fbank import LogFbankSTMN

ENCODERS = ("resnet34", "ecapa")
ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    """The trunk's hidden activation: ``"relu6"`` (hyperion's default) or ``"relu"``.

    Example
    -------
    >>> make_activation("relu6")
    ReLU6(inplace=True)
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name](inplace=True)


def lengths_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, max_len)`` boolean mask, True on the first ``lens[b]`` positions.

    Example
    -------
    >>> lengths_mask(torch.tensor([1, 3]), 3).tolist()
    [[True, False, False], [True, True, True]]
    """
    return length_to_mask(lens, max_len=max_len, dtype=torch.bool)


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over the valid frames: ``(B, C, T) -> (B, 2C)``.

    Kept instead of ``speechbrain.nnet.pooling.StatisticsPooling``, which adds random noise
    (up to 9e-5) to the mean, draws it from the global RNG, and returns the unbiased standard
    deviation (0.016 apart on 30 frames; ``tests/test_dependency_equivalence.py``).

    Arguments
    ---------
    eps : float
        Floor of the variance before the square root.

    Example
    -------
    >>> pool = StatisticsPooling()
    >>> x = torch.tensor([[[1.0, 3.0, 100.0]]])
    >>> pool(x, torch.tensor([2])).tolist()
    [[2.0, 1.0]]
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, lens=None) -> torch.Tensor:
        """Pool ``x`` (B, C, T) over its first ``lens`` frames (all when omitted), in fp32."""
        x = x.float()
        if lens is None:
            mean = x.mean(dim=-1)
            var = x.var(dim=-1, unbiased=False)
        else:
            mask = lengths_mask(lens.clamp(min=1), x.shape[-1]).unsqueeze(1).to(x.dtype)
            count = mask.sum(dim=-1)
            mean = (x * mask).sum(dim=-1) / count
            var = (((x - mean.unsqueeze(-1)) * mask) ** 2).sum(dim=-1) / count
        return torch.cat([mean, var.clamp(min=self.eps).sqrt()], dim=-1)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and a residual connection.

    Example
    -------
    >>> BasicBlock(4, 8, stride=2)(torch.randn(1, 4, 10, 6)).shape
    torch.Size([1, 8, 5, 3])
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, activation: str = "relu6"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = make_activation(activation)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        residual = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class LightResNet34(nn.Module):
    """Light ResNet-34 trunk with statistics pooling and an embedding layer.

    Arguments
    ---------
    in_feats : int
        Feature dimension (Mel bands).
    base_channels : int
        Channels of the first stage; stages have 1x, 2x, 4x and 8x (16 in hyperion's
        ``lresnet34``, 64 in the standard ResNet-34).
    num_blocks : sequence of int
        Basic blocks per stage (``(3, 4, 6, 3)`` for ResNet-34).
    embedding_dim : int
        Output dimension.
    embedding_norm : bool
        Batch-normalise the embedding (affine-free; hyperion's is affine, after a linear layer
        without bias).
    activation : str
        ``"relu6"`` (hyperion's ResNet ``hid_act``) or ``"relu"``.

    Example
    -------
    >>> net = LightResNet34(in_feats=16, base_channels=4, num_blocks=(1, 1, 1, 1),
    ...                     embedding_dim=8)
    >>> _ = net.eval()
    >>> net(torch.randn(2, 30, 16), torch.tensor([30, 20])).shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        in_feats: int = 80,
        base_channels: int = 16,
        num_blocks=(3, 4, 6, 3),
        embedding_dim: int = 256,
        embedding_norm: bool = True,
        activation: str = "relu6",
    ):
        super().__init__()
        num_blocks = tuple(int(n) for n in num_blocks)
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks must list the blocks of 4 stages, got {num_blocks}")
        self.in_conv = nn.Sequential(
            nn.Conv2d(1, base_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            make_activation(activation),
        )
        stages = []
        in_channels = base_channels
        for index, (blocks, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            channels = base_channels * 2**index
            layers = [BasicBlock(in_channels, channels, stride, activation)]
            layers += [BasicBlock(channels, channels, 1, activation) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        freq_out = in_feats
        for _ in range(3):
            freq_out = (freq_out + 1) // 2
        self.pooled_dim = 2 * in_channels * freq_out
        self.pooling = StatisticsPooling()
        self.embedding = nn.Linear(self.pooled_dim, embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim, affine=False) if embedding_norm else None
        self.embedding_dim = int(embedding_dim)

    def forward(self, feats: torch.Tensor, frame_lens=None) -> torch.Tensor:
        """``(B, T, F)`` features and ``(B,)`` valid frames -> ``(B, embedding_dim)``."""
        x = self.in_conv(feats.transpose(1, 2).unsqueeze(1))  # (B, C, F, T)
        lens = frame_lens
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index > 0 and lens is not None:
                lens = (lens + 1) // 2
        x = x.flatten(1, 2)  # (B, C * F', T')
        if lens is not None:
            lens = lens.to(x.device).long().clamp(1, x.shape[-1])
        stats = self.pooling(x, lens)
        emb = self.embedding(stats)
        if self.embedding_bn is not None:
            emb = self.embedding_bn(emb)
        return emb


class ECAPAEmbedding(nn.Module):
    """SpeechBrain's ECAPA-TDNN with the :class:`LightResNet34` interface.

    Arguments
    ---------
    in_feats : int
        Feature dimension.
    embedding_dim : int
        Output dimension.
    channels : sequence of int
        ECAPA channels (SpeechBrain default ``[512, 512, 512, 512, 1536]``).

    Example
    -------
    >>> net = ECAPAEmbedding(16, 8, channels=(16, 16, 16, 16, 48)).eval()
    >>> net(torch.randn(2, 30, 16), torch.tensor([30, 20])).shape
    torch.Size([2, 8])
    """

    def __init__(self, in_feats=80, embedding_dim=256, channels=(512, 512, 512, 512, 1536)):
        super().__init__()
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        channels = [int(c) for c in channels]
        self.ecapa = ECAPA_TDNN(
            input_size=in_feats,
            lin_neurons=embedding_dim,
            channels=channels,
            attention_channels=min(128, channels[-1]),
            se_channels=min(128, channels[0]),
        )
        self.embedding_dim = int(embedding_dim)

    def forward(self, feats: torch.Tensor, frame_lens=None) -> torch.Tensor:
        """``(B, T, F)`` features and ``(B,)`` valid frames -> ``(B, embedding_dim)``."""
        rel = None
        if frame_lens is not None:
            rel = frame_lens.to(feats.device).float() / feats.shape[1]
        return self.ecapa(feats, rel).squeeze(1)


class SpeakerEmbeddingModel(nn.Module):
    """Waveforms -> utterance embeddings: log fbank + STMN, then a trunk.

    Arguments
    ---------
    encoder : str
        ``"resnet34"`` (:class:`LightResNet34`) or ``"ecapa"`` (:class:`ECAPAEmbedding`).
    embedding_dim : int
        Embedding dimension (256).
    n_mels : int
        Mel bands.
    sample_rate : int
        Input sample rate.
    cmn_window : int
        Sliding mean-normalisation window in frames.
    base_channels : int
        ResNet base channels.
    num_blocks : sequence of int
        ResNet blocks per stage.
    ecapa_channels : sequence of int
        ECAPA channels.
    activation : str
        ResNet hidden activation, ``"relu6"`` (hyperion) or ``"relu"``.

    Example
    -------
    >>> model = SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                               num_blocks=(1, 1, 1, 1)).eval()
    >>> model(torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.5])).shape
    torch.Size([3, 8])
    >>> SpeakerEmbeddingModel(**model.config).config == model.config
    True
    """

    def __init__(
        self,
        encoder: str = "resnet34",
        embedding_dim: int = 256,
        n_mels: int = 80,
        sample_rate: int = 16000,
        cmn_window: int = 300,
        base_channels: int = 16,
        num_blocks=(3, 4, 6, 3),
        ecapa_channels=(512, 512, 512, 512, 1536),
        activation: str = "relu6",
    ):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.config = {
            "encoder": encoder,
            "embedding_dim": int(embedding_dim),
            "n_mels": int(n_mels),
            "sample_rate": int(sample_rate),
            "cmn_window": int(cmn_window),
            "base_channels": int(base_channels),
            "num_blocks": [int(n) for n in num_blocks],
            "ecapa_channels": [int(c) for c in ecapa_channels],
            "activation": str(activation),
        }
        self.features = LogFbankSTMN(sample_rate=sample_rate, n_mels=n_mels, cmn_window=cmn_window)
        if encoder == "resnet34":
            self.encoder = LightResNet34(
                n_mels, base_channels, num_blocks, embedding_dim, activation=activation
            )
        else:
            self.encoder = ECAPAEmbedding(n_mels, embedding_dim, ecapa_channels)
        self.embedding_dim = int(embedding_dim)
        self.sample_rate = int(sample_rate)

    def forward(self, wavs: torch.Tensor, rel_lens=None) -> torch.Tensor:
        """``(B, T)`` waveforms and ``(B,)`` relative lengths -> ``(B, embedding_dim)``."""
        feats, frame_lens = self.features(wavs, rel_lens)
        return self.encoder(feats, frame_lens)
