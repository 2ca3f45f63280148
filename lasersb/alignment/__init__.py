"""Soft-DTW (values, divergence, expected alignment; Triton/numba/PyTorch), LASER's regulariser,
and the batched subsequence DTW of query-by-example search.

Example
-------
>>> import torch
>>> from lasersb.alignment import SoftDTWDivergence, TemporalRegulariser
>>> z_a = torch.nn.functional.normalize(torch.randn(2, 7, 16), dim=-1)
>>> z_b = torch.nn.functional.normalize(torch.randn(2, 6, 16), dim=-1)
>>> lens_a, lens_b = torch.tensor([7, 5]), torch.tensor([6, 6])
>>> loss = SoftDTWDivergence(gamma=0.1)(z_a, z_b, lens_a, lens_b)
>>> reg = TemporalRegulariser()(z_a, lens_a)
>>> loss.shape, reg.shape
(torch.Size([2]), torch.Size([2]))
"""

from lasersb.alignment.length_normalised import LengthNormalised
from lasersb.alignment.soft_dtw import (
    SoftDTW,
    SoftDTWDivergence,
    soft_alignment,
    soft_dtw,
    soft_dtw_divergence,
)
from lasersb.alignment.subsequence_dtw import SubsequenceDTWResult, subsequence_dtw
from lasersb.alignment.temporal import TemporalRegulariser, temporal_regulariser

__all__ = [
    "LengthNormalised",
    "SoftDTW",
    "SoftDTWDivergence",
    "SubsequenceDTWResult",
    "TemporalRegulariser",
    "soft_alignment",
    "soft_dtw",
    "soft_dtw_divergence",
    "subsequence_dtw",
    "temporal_regulariser",
]
