"""CTC downstream heads for SUPERB-style tasks on frozen-upstream features.

:class:`BiLSTMCTCHead` is s3prl's ASR downstream (``RNNs``): a linear projection of the
features, a stack of bidirectional LSTM layers (2 x 1024 units per direction in SUPERB) with
dropout after each, and a linear output layer over the CTC vocabulary. :class:`LinearCTCHead`
is s3prl's phoneme-recognition downstream ('libriphone'): a linear map (optionally through a
linear projection, which is still linear) from the features to the phone vocabulary.

Both take ``(B, F, D)`` features and integer valid-frame counts and return unnormalised
logits ``(B, F, vocab_size)``; the LSTM packs the sequences, so padding never leaks into the
valid frames.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTMCTCHead(nn.Module):
    """Bidirectional LSTM CTC head (s3prl ASR ``RNNs`` downstream).

    Arguments
    ---------
    input_size : int
        Feature dimension (the upstream's hidden size).
    vocab_size : int
        Number of CTC classes, blank included.
    project_dim : int, optional
        Size of the input projection (s3prl ``project_dim``: 1024); ``None`` skips it.
    hidden_size : int
        LSTM units per direction (1024 in SUPERB ASR).
    num_layers : int
        Number of BiLSTM layers (2 in SUPERB ASR).
    dropout : float
        Dropout after each LSTM layer (0.2 in SUPERB ASR).
    bidirectional : bool
        Use bidirectional LSTMs.

    Example
    -------
    >>> head = BiLSTMCTCHead(8, vocab_size=5, project_dim=6, hidden_size=4)
    >>> logits = head(torch.randn(2, 7, 8), torch.tensor([7, 3]))
    >>> logits.shape
    torch.Size([2, 7, 5])
    """

    def __init__(
        self,
        input_size: int,
        vocab_size: int,
        project_dim: int | None = 1024,
        hidden_size: int = 1024,
        num_layers: int = 2,
        dropout: float = 0.2,
        bidirectional: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.projection = nn.Linear(input_size, project_dim) if project_dim else nn.Identity()
        size = project_dim or input_size
        directions = 2 if bidirectional else 1
        self.lstms = nn.ModuleList()
        for _ in range(num_layers):
            self.lstms.append(
                nn.LSTM(size, hidden_size, batch_first=True, bidirectional=bidirectional)
            )
            size = hidden_size * directions
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(size, vocab_size)

    def forward(self, features: torch.Tensor, frame_lens=None) -> torch.Tensor:
        """Logits ``(B, F, vocab_size)`` for features ``(B, F, D)``.

        Arguments
        ---------
        features : torch.Tensor
            ``(B, F, D)`` features.
        frame_lens : torch.Tensor, optional
            Integer valid-frame counts ``(B,)`` (all frames valid when omitted).

        Returns
        -------
        torch.Tensor
        """
        batch, max_len, _ = features.shape
        if frame_lens is None:
            frame_lens = torch.full((batch,), max_len, dtype=torch.long)
        lengths = torch.as_tensor(frame_lens).long().clamp(min=1, max=max_len).cpu()
        x = self.projection(features)
        for lstm in self.lstms:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            x, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
            x = self.dropout(x)
        return self.output(x)


class LinearCTCHead(nn.Module):
    """Linear CTC head (s3prl 'libriphone' phoneme recognition).

    Arguments
    ---------
    input_size : int
        Feature dimension.
    vocab_size : int
        Number of CTC classes, blank included.
    project_dim : int, optional
        s3prl's linear projection before the output layer (256 in 'libriphone'); ``None``
        maps the features to the vocabulary directly. Either way the head is linear.

    Example
    -------
    >>> head = LinearCTCHead(8, vocab_size=5)
    >>> head(torch.randn(2, 7, 8)).shape
    torch.Size([2, 7, 5])
    """

    def __init__(self, input_size: int, vocab_size: int, project_dim: int | None = None):
        super().__init__()
        self.projection = nn.Linear(input_size, project_dim) if project_dim else nn.Identity()
        self.output = nn.Linear(project_dim or input_size, vocab_size)

    def forward(self, features: torch.Tensor, frame_lens=None) -> torch.Tensor:
        """Logits ``(B, F, vocab_size)``; ``frame_lens`` is accepted for a common interface.

        Arguments
        ---------
        features : torch.Tensor
            ``(B, F, D)`` features.
        frame_lens : torch.Tensor, optional
            Unused (a frame-wise linear map does not mix frames).

        Returns
        -------
        torch.Tensor
        """
        return self.output(self.projection(features))
