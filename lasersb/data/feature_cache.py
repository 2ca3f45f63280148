"""On-disk cache of a frozen upstream's hidden states, so repeated downstream runs skip it.

A SUPERB downstream run spends most of its time in the forward pass of the frozen upstream.
:class:`FeatureCache` stores, per utterance, the ``(L+1, F, H)`` stack of hidden states under

    <cache_dir>/<upstream checksum>/<key[:2]>/<key>.pt

where the upstream checksum (:func:`module_checksum`) hashes the upstream's weights and
configuration, and the utterance key hashes the utterance id with the audio file's resolved
path, size and modification time: a changed model or a changed file is never served from
the cache. Entries are written atomically (temporary file then rename) with ``torch.save`` of
plain tensors, loadable with ``torch.load(weights_only=True)``, and stored in ``float16`` by
default (halving the disk use; the downstream computes in float32).

Disk use is ``(L+1) * H * 50 frames/s * 2 bytes``: about 1 MB per second of audio for a
base-size upstream (13 x 768), so the cache suits dev/test sets and small training sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch


def module_checksum(module: torch.nn.Module, extra: str = "", length: int = 16) -> str:
    """Checksum of a module's weights (names, dtypes, shapes, values) and configuration.

    Arguments
    ---------
    module : torch.nn.Module
        The upstream (for example an ``SSLUpstream``); a ``config`` attribute of it or of its
        ``model`` attribute (a ``transformers`` config) is hashed as well.
    extra : str
        Any other setting that changes the hidden states (input normalisation...).
    length : int
        Number of hex digits returned.

    Returns
    -------
    str

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> module_checksum(a) == module_checksum(a), module_checksum(a) == module_checksum(b)
    (True, False)
    """
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    for owner in (module, getattr(module, "model", None)):
        config = getattr(owner, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(str(extra).encode())
    return digest.hexdigest()[:length]


def utterance_key(utt_id: str, wav_path) -> str:
    """Cache key of one utterance: its id and its audio file's path, size and mtime.

    Arguments
    ---------
    utt_id : str
        Utterance id.
    wav_path : str or Path
        Audio file (must exist).

    Returns
    -------
    str

    Example
    -------
    >>> f = Path(tempfile.mkdtemp()) / "a.wav"
    >>> _ = f.write_bytes(b"RIFF")
    >>> len(utterance_key("utt1", f))
    40
    """
    path = Path(wav_path)
    try:
        stat = path.stat()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"Audio file {path} of utterance {utt_id} not found: check the manifest's wav column"
        ) from err
    text = f"{utt_id}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureCache:
    """Per-utterance on-disk cache of hidden-state stacks ``(L+1, F, H)``.

    Arguments
    ---------
    cache_dir : str or Path
        Root folder of the cache (shared between runs and upstreams).
    upstream_checksum : str
        Checksum of the upstream (:func:`module_checksum`): one sub-folder per upstream.
    dtype : torch.dtype or str, optional
        Storage dtype (default ``float16``); ``None`` keeps the computed dtype.

    Example
    -------
    >>> cache = FeatureCache(tempfile.mkdtemp(), "abc123")
    >>> wav = Path(tempfile.mkdtemp()) / "u1.wav"
    >>> _ = wav.write_bytes(b"RIFF....")
    >>> cache.load("u1", wav) is None
    True
    >>> cache.save("u1", wav, torch.ones(4, 10, 8))
    >>> cache.load("u1", wav).shape, cache.load("u1", wav).dtype
    (torch.Size([4, 10, 8]), torch.float16)
    >>> cache.hits, cache.misses
    (2, 1)
    >>> cache.load("u1", wav, layer=-1).shape  # one hidden state, memory-mapped
    torch.Size([10, 8])
    """

    @classmethod
    def for_upstream(cls, cache_dir, upstream: torch.nn.Module, dtype="float16") -> FeatureCache:
        """The cache of ``upstream``'s hidden states: keyed by its weights and its ``repr``.

        Example
        -------
        >>> net = torch.nn.Linear(2, 2)
        >>> cache = FeatureCache.for_upstream(tempfile.mkdtemp(), net)
        >>> cache.root.name == module_checksum(net, extra=repr(net))
        True
        """
        return cls(cache_dir, module_checksum(upstream, extra=repr(upstream)), dtype=dtype)

    def __init__(self, cache_dir, upstream_checksum: str, dtype="float16"):
        if not upstream_checksum:
            raise ValueError("FeatureCache needs the upstream checksum (module_checksum(...))")
        self.root = Path(cache_dir) / str(upstream_checksum)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype
        self.hits = 0
        self.misses = 0

    def path(self, utt_id: str, wav_path) -> Path:
        """File of one utterance's entry."""
        key = utterance_key(utt_id, wav_path)
        return self.root / key[:2] / f"{key}.pt"

    def load(self, utt_id: str, wav_path, layer: int | None = None):
        """The cached ``(L+1, F, H)`` tensor of an utterance, or ``None`` on a miss.

        With ``layer``, only that hidden state, ``(F, H)``, read through a memory map (the
        other layers are not read from disk). A corrupt entry (interrupted copy, disk error)
        is removed and counts as a miss.
        """
        path = self.path(utt_id, wav_path)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            mmap = layer is not None
            entry = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            hidden = entry["hidden_states"]
            if mmap:
                hidden = hidden[layer].clone()
        except (OSError, RuntimeError, KeyError, EOFError, ValueError):
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return hidden

    def save(self, utt_id: str, wav_path, hidden_states: torch.Tensor):
        """Store one utterance's ``(L+1, F, H)`` hidden states (atomic write).

        Arguments
        ---------
        utt_id : str
            Utterance id.
        wav_path : str or Path
            Its audio file.
        hidden_states : torch.Tensor
            ``(L+1, F, H)``: valid frames only.
        """
        if hidden_states.dim() != 3:
            raise ValueError(
                f"hidden_states must be (L+1, F, H), got shape {tuple(hidden_states.shape)}"
            )
        path = self.path(utt_id, wav_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensor = hidden_states.detach().cpu()
        if self.dtype is not None:
            tensor = tensor.to(self.dtype)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            torch.save({"hidden_states": tensor.contiguous()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __repr__(self) -> str:
        return f"FeatureCache(root={str(self.root)!r}, dtype={self.dtype})"


def pad_hidden_states(stacks, device=None, dtype=torch.float32):
    """Pad per-utterance ``(L+1, F_i, H)`` stacks into ``(L+1, B, F, H)`` and frame counts.

    Arguments
    ---------
    stacks : Sequence[torch.Tensor]
        One ``(L+1, F_i, H)`` tensor per utterance.
    device : torch.device, optional
        Output device.
    dtype : torch.dtype
        Output dtype.

    Returns
    -------
    hidden : torch.Tensor
        ``(L+1, B, max F_i, H)``, zero-padded.
    frame_lens : torch.Tensor
        ``(B,)`` integer frame counts.

    Example
    -------
    >>> h, n = pad_hidden_states([torch.ones(2, 3, 4), torch.ones(2, 5, 4)])
    >>> h.shape, n.tolist()
    (torch.Size([2, 2, 5, 4]), [3, 5])
    """
    if not stacks:
        raise ValueError("pad_hidden_states needs at least one utterance")
    layers, _, size = stacks[0].shape
    max_len = max(s.shape[1] for s in stacks)
    hidden = torch.zeros(layers, len(stacks), max_len, size, dtype=dtype, device=device)
    for i, stack in enumerate(stacks):
        hidden[:, i, : stack.shape[1]] = stack.to(device=device, dtype=dtype)
    frame_lens = torch.tensor([s.shape[1] for s in stacks], dtype=torch.long, device=device)
    return hidden, frame_lens
