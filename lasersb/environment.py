"""The software and hardware a run used, recorded as ``environment.json`` in its folder.

Published SUPERB numbers moved with library upgrades (s3prl issue #127); a table whose rows were
computed with different code or libraries should say so. :func:`collect_environment` gathers the
lasersb commit (and whether the work tree had uncommitted changes), the versions of the
libraries that change numbers (Python, torch, torchaudio, transformers, speechbrain, numba,
triton), the device and CUDA version, the world size, and SHA-256 checksums of the resolved
hyperparameters and of the upstream's weight files. ``lasersb.experiment.setup_experiment``
writes it into every run folder; ``python -m lasersb.report`` prints it under the table and warns
when the table's rows come from different environments (:func:`environment_differences`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("torch", "torchaudio", "transformers", "speechbrain", "numba", "triton")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# What makes two runs' numbers comparable (checksums of hparams/weights differ by design).
COMPARED_KEYS = ("commit", "dirty", "python", "packages", "device", "cuda")


def package_versions(names=PACKAGES) -> dict:
    """``{name: version or None}`` of installed distributions (``None``: not installed).

    Example
    -------
    >>> versions = package_versions(("torch", "no-such-package-xyz"))
    >>> versions["torch"] is not None, versions["no-such-package-xyz"]
    (True, None)
    """
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(folder=None) -> dict:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the git tree holding ``folder``.

    ``folder`` defaults to the lasersb source tree. Without git, or outside a git tree, the
    commit is ``"unknown"`` and ``dirty`` is ``None``.

    Example
    -------
    >>> import tempfile
    >>> git_state(tempfile.mkdtemp())
    {'commit': 'unknown', 'dirty': None}
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if commit.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": commit.stdout.strip(), "dirty": dirty}


def sha256_text(text: str) -> str:
    """SHA-256 hex digest of a text (UTF-8).

    Example
    -------
    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path) -> str:
    """SHA-256 hex digest of a file (remembered per path, size and modification time)."""
    stat = os.stat(path)
    return _sha256_file(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def upstream_weight_checksums(source) -> dict | None:
    """``{file name: sha256}`` of an upstream's weight files, or ``None`` when not on disk.

    ``source`` is a local folder (its ``*.safetensors``, ``*.bin``, ``*.pt``, ``*.ckpt``
    files) or a Hugging Face hub id (the cached ``model.safetensors`` / ``pytorch_model.bin``,
    looked up without network access); ``None`` for ``fbank`` and sources not found.

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "model.safetensors").write_bytes(b"")
    >>> upstream_weight_checksums(d)["model.safetensors"][:12]
    'e3b0c44298fc'
    >>> upstream_weight_checksums("fbank") is None
    True
    """
    if source is None or str(source) == "fbank":
        return None
    folder = Path(os.path.expanduser(str(source)))
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        return {p.name: sha256_file(p) for p in files} or None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = {}
    for name in HUB_WEIGHT_FILES:
        try:
            path = try_to_load_from_cache(str(source), name)
        except Exception:  # not a valid hub id: nothing cached under it
            return None
        if isinstance(path, str) and os.path.isfile(path):
            found[name] = sha256_file(path)
    return found or None


def device_description(device) -> dict:
    """``{"device": name, "cuda": CUDA version or None}`` of a torch device string.

    Example
    -------
    >>> device_description("cpu")["device"].startswith("cpu")
    True
    """
    import torch

    device = str(device or "cpu")
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"device": name, "cuda": torch.version.cuda}


def collect_environment(hparams_text=None, upstream_source=None, device="cpu", world_size=1):
    """The environment of a run (the content of ``environment.json``).

    Arguments
    ---------
    hparams_text : str, optional
        The resolved hyperparameters (checksummed).
    upstream_source : str, optional
        Hub id or local folder of the upstream (its weight files are checksummed).
    device : str
        The run's torch device.
    world_size : int
        Number of processes of the run.

    Returns
    -------
    dict
        ``commit``, ``dirty``, ``python``, ``packages``, ``device``, ``cuda``, ``world_size``,
        ``hparams_sha256``, ``upstream_source``, ``upstream_weights_sha256``.

    Example
    -------
    >>> env = collect_environment("seed: 1\\n", None, "cpu", 1)
    >>> sorted(env["packages"]) == sorted(PACKAGES), env["world_size"]
    (True, 1)
    """
    env = git_state()
    env.update(
        python=platform.python_version(),
        packages=package_versions(),
        **device_description(device),
        world_size=int(world_size),
        hparams_sha256=None if hparams_text is None else sha256_text(hparams_text),
        upstream_source=None if upstream_source is None else str(upstream_source),
        upstream_weights_sha256=upstream_weight_checksums(upstream_source),
    )
    return env


def write_environment(folder, **kwargs) -> Path:
    """Write :func:`collect_environment` (``kwargs``) to ``<folder>/environment.json``."""
    path = Path(folder) / ENVIRONMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collect_environment(**kwargs), indent=2) + "\n", encoding="utf-8")
    return path


def read_environment(run_folder) -> dict | None:
    """The ``environment.json`` of a run folder, or ``None`` when it has none."""
    path = Path(run_folder) / ENVIRONMENT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the run or delete it") from err


def environment_summary(env: dict) -> str:
    """One line naming the commit and versions of an environment.

    Example
    -------
    >>> print(environment_summary({"commit": "0123456789abcdef", "dirty": True,
    ...     "python": "3.11.9", "packages": {"torch": "2.4.0", "numba": None},
    ...     "device": "NVIDIA H100", "cuda": "12.4", "world_size": 1}))
    commit 0123456789ab (uncommitted changes), Python 3.11.9, torch 2.4.0, numba absent, NVIDIA H100 (CUDA 12.4), 1 process
    """  # noqa: E501
    commit = str(env.get("commit", "unknown"))
    text = f"commit {commit[:12]}"
    if env.get("dirty"):
        text += " (uncommitted changes)"
    parts = [text, f"Python {env.get('python')}"]
    for name, version in (env.get("packages") or {}).items():
        parts.append(f"{name} {version}" if version else f"{name} absent")
    device = str(env.get("device"))
    if env.get("cuda") and not device.startswith("cpu"):
        device += f" (CUDA {env['cuda']})"
    parts.append(device)
    world = int(env.get("world_size", 1))
    parts.append(f"{world} process" + ("es" if world != 1 else ""))
    return ", ".join(parts)


def environment_differences(envs: dict) -> list[str]:
    """The keys of :data:`COMPARED_KEYS` on which ``{label: environment}`` entries differ.

    Example
    -------
    >>> a = {"commit": "x", "python": "3.11", "packages": {"torch": "2.4"}}
    >>> environment_differences({"r1": a, "r2": dict(a, packages={"torch": "2.5"})})
    ['packages.torch']
    """
    differing = []
    for key in COMPARED_KEYS:
        if key == "packages":
            names = sorted({n for e in envs.values() for n in (e.get("packages") or {})})
            for name in names:
                values = {json.dumps((e.get("packages") or {}).get(name)) for e in envs.values()}
                if len(values) > 1:
                    differing.append(f"packages.{name}")
        elif len({json.dumps(e.get(key)) for e in envs.values()}) > 1:
            differing.append(key)
    return differing
