"""Checkpoint helpers shared by every Brain: random-number-generator state as a recoverable.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` saves modules, optimisers,
schedulers, the epoch counter and the position inside the training data loader. Recipes whose
training draws random numbers on the fly (perturbed views, crops, noise) also need the RNG
state, or a run resumed after a kill would draw different augmentations than an uninterrupted
run. :class:`RandomState` saves and restores the Python, NumPy and PyTorch (CPU and CUDA) RNGs in
a file loadable with ``torch.load(weights_only=True)``.

:class:`AtomicCheckpointer` is a drop-in replacement for SpeechBrain's ``Checkpointer`` that
never leaves a half-written checkpoint where a restarted run would find it. SpeechBrain writes
``CKPT.yaml`` first and the parameter files after it into the final ``CKPT+<time>`` folder, so
a run killed while saving leaves a folder that looks complete and that the next run tries to
load (it then stops with "missing a load path", or loads a truncated file). Here each checkpoint
is written into a hidden ``.partial-CKPT+...`` folder and renamed into place only when every
file is written; deletions rename the folder away before removing it.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS as _DEFAULT_SAVE_HOOKS
from speechbrain.utils.checkpoints import (
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

from lasersb.distributed import gather_objects, rank

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"


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


class RandomState:
    """Checkpointer recoverable holding the Python, NumPy and PyTorch RNG states of every rank.

    Under DDP each process draws its own augmentations, so the states of all ranks are gathered
    and saved by the main process (one file, a list in rank order); on recovery each rank
    restores its own. A job resumed with more processes than it was saved with seeds the new
    ranks afresh (logged), since no state was saved for them.

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
        states = gather_objects(_capture())  # a collective: every rank calls the save hooks
        if if_main_process():
            torch.save({"per_rank": states}, path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=False):
        saved = torch.load(path, weights_only=True)
        states = saved["per_rank"] if "per_rank" in saved else [saved]  # older: rank 0 only
        if rank() < len(states):
            _restore(states[rank()])
        else:
            logger.warning(
                "%s holds RNG states of %d process(es); rank %d starts a fresh stream.",
                path,
                len(states),
                rank(),
            )
            _restore(states[0])
            torch.manual_seed(torch.initial_seed() + 1000 * rank())


# Every rank calls the saver: it gathers all ranks' states, the main process writes them.
register_checkpoint_hooks(RandomState, save_on_main_only=False)


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain ``Checkpointer`` whose checkpoints appear all at once or not at all.

    Same constructor and API as :class:`speechbrain.utils.checkpoints.Checkpointer`. A
    checkpoint is written into ``<checkpoints_dir>/.partial-CKPT+...`` and renamed to
    ``CKPT+...`` after its last file (an atomic rename on POSIX file systems); deleted checkpoints
    are first renamed to ``.deleting-CKPT+...``. Folders left behind by a killed run are
    removed when the next run recovers. So a run killed at any moment (SIGKILL, out of memory,
    pre-emption) restarts from its last complete checkpoint.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> layer = torch.nn.Linear(2, 2)
    >>> ckpt = AtomicCheckpointer(folder, {"layer": layer}).save_checkpoint()
    >>> ckpt.path.name.startswith("CKPT+"), sorted(p.name for p in ckpt.path.iterdir())
    (True, ['CKPT.yaml', 'layer.ckpt'])
    >>> (folder / ".partial-CKPT+killed").mkdir()  # what a kill during a write leaves
    >>> AtomicCheckpointer(folder, {"layer": layer}).recover_if_possible().path == ckpt.path
    True
    >>> [p.name for p in folder.iterdir() if p.name.startswith(".")]
    []
    """

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Save a checkpoint atomically; arguments as ``Checkpointer.save_checkpoint``.

        Returns
        -------
        speechbrain.utils.checkpoints.Checkpoint or None
            The saved checkpoint on the main process, ``None`` on the others.
        """
        final_dir = partial_dir = None
        if if_main_process():
            if name is None:
                final_dir = self._new_checkpoint_dirpath()
            else:
                final_dir = self._custom_checkpoint_dirpath(name)
            partial_dir = final_dir.with_name(PARTIAL_PREFIX + final_dir.name)
            if partial_dir.exists():
                shutil.rmtree(partial_dir)
            os.makedirs(partial_dir)
            saved_meta = self._save_checkpoint_metafile(
                partial_dir / METAFNAME, dict(meta or {}), end_of_epoch
            )
        final_dir, partial_dir = ddp_broadcast((final_dir, partial_dir), src=0)
        for obj_name, obj in self.recoverables.items():
            path = partial_dir / f"{obj_name}{PARAMFILE_EXT}"
            if obj_name in self.custom_save_hooks:
                self.custom_save_hooks[obj_name](obj, path)
                continue
            hook = get_default_hook(obj, _DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(
                    f"Don't know how to save {type(obj)} ({obj_name!r}): register a default "
                    "hook or a custom save hook for it."
                )
            hook(obj, path)
        ddp_barrier()  # every process has written its part
        if not if_main_process():
            return None
        _fsync_folder(partial_dir)
        os.rename(partial_dir, final_dir)
        _fsync_folder(final_dir.parent)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final_dir)
        paramfiles = {n: final_dir / f"{n}{PARAMFILE_EXT}" for n in self.recoverables}
        return Checkpoint(final_dir, saved_meta, paramfiles)

    def save_and_keep_only(self, *args, importance_keys=None, **kwargs):
        """As ``Checkpointer.save_and_keep_only``, with a fresh ``importance_keys`` list.

        SpeechBrain's default ``importance_keys=[]`` is one shared list that every call extends,
        so each later call sorts the checkpoints once more per earlier call (quadratic time in
        the number of intra-epoch checkpoints).
        """
        return super().save_and_keep_only(
            *args, importance_keys=list(importance_keys or []), **kwargs
        )

    def remove_incomplete(self):
        """Remove ``.partial-*`` and ``.deleting-*`` folders left by a killed run (main only).

        Returns
        -------
        list of Path
            The folders removed.
        """
        removed = []
        if if_main_process() and self.checkpoints_dir.is_dir():
            for path in sorted(self.checkpoints_dir.iterdir()):
                if path.is_dir() and path.name.startswith((PARTIAL_PREFIX, DELETING_PREFIX)):
                    logger.warning("Removing an incomplete checkpoint (killed run): %s", path)
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        ddp_barrier()
        return removed

    def recover_if_possible(self, *args, **kwargs):
        """Remove incomplete folders, then recover as ``Checkpointer.recover_if_possible``."""
        self.remove_incomplete()
        return super().recover_if_possible(*args, **kwargs)

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=(ckpt_recency,),
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """Delete the least important checkpoints as ``Checkpointer.delete_checkpoints``.

        Each folder is renamed to ``.deleting-...`` before it is removed, so a kill during the
        removal never leaves a half-deleted folder that looks like a checkpoint.
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        keys = [{"min_key": key} for key in min_keys or []]
        keys.extend({"max_key": key} for key in max_keys or [])
        keys.extend({"importance_key": key} for key in importance_keys)
        candidates, protected = set(), set()
        for key_kwargs in keys:
            key_kwargs["ckpt_predicate"] = ckpt_predicate
            candidates.update(self.find_checkpoints(**key_kwargs))
            protected.update(self.find_checkpoints(max_num_checkpoints=num_to_keep, **key_kwargs))
        ddp_barrier()
        if if_main_process():
            for ckpt in candidates - protected:
                path = Path(ckpt.path)
                doomed = path.with_name(DELETING_PREFIX + path.name)
                os.rename(path, doomed)
                shutil.rmtree(doomed)
                logger.log(verbosity, "Deleted checkpoint in %s", path)
        ddp_barrier()


def _fsync_folder(folder) -> None:
    """Flush a folder's files and entry list to disk (best effort; no-op where unsupported)."""
    folder = Path(folder)
    paths = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    for path in [*paths, folder]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
