"""Checkpoint helpers shared by every Brain: random-number-generator state as a recoverable.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` saves modules, optimisers,
schedulers, the epoch counter and the position inside the training data loader. Recipes whose
training draws random numbers on the fly (perturbed views, crops, noise) also need the RNG
state, or a run resumed after a kill would draw different augmentations than an uninterrupted
run. :class:`RandomState` saves and restores the Python, NumPy and PyTorch (CPU and CUDA) RNGs in
a file loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


def _capture() -> dict:
    """The current RNG states as plain tensors, lists and ints (safe for weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, internal = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), None))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


@register_checkpoint_hooks
class RandomState:
    """Checkpointer recoverable holding the Python, NumPy and PyTorch RNG states.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng.ckpt"
    >>> rng = RandomState()
    >>> _ = torch.manual_seed(0); rng._save(path)
    >>> a = torch.rand(3)
    >>> rng._recover(path)
    >>> torch.equal(a, torch.rand(3))
    True
    """

    @mark_as_saver
    def _save(self, path):
        torch.save(_capture(), path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=False):
        _restore(torch.load(path, weights_only=True))
