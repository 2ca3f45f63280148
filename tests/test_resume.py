"""Killed runs resume and end exactly where an uninterrupted run ends (registry-driven).

For each ``resume: true`` entry of ``recipes/registry.yaml`` the recipe runs (in a subprocess,
CPU, fixed seed, one thread) once uninterrupted, then again with SIGKILLs mid-way and the same
command re-run after each kill. The final step count, the metrics in the summary JSON and the
final weights must be identical (``torch.equal``: bit-identical on the CPU).

Two kill points:

* *during a checkpoint write*: ``torch.save`` is slowed down (test-only wrapper) inside the
  second checkpoint folder and the process is killed while that folder is half written. A
  restart must ignore the half-written folder and resume from the first checkpoint. This needs
  :class:`lasersb.checkpoints.AtomicCheckpointer` (SpeechBrain's ``Checkpointer`` writes
  ``CKPT.yaml`` first, so its half-written folder looks complete and the restart fails);
* *between checkpoint writes*: killed while training, after a complete checkpoint.

``test_checkpointer_is_atomic`` checks that each resumable recipe uses the atomic checkpointer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_recipe_registry import ENTRIES, REPO, as_argv, placeholders

RESUME_ENTRIES = [e for e in ENTRIES if e.get("resume")]
ATOMIC_PENDING = {
    # Entries whose hparams still use SpeechBrain's Checkpointer (to switch:
    # `checkpointer: !new:lasersb.checkpoints.AtomicCheckpointer`, same arguments), with the
    # reason: {"name": "reason"}. Such entries are only killed between checkpoint writes.
}

# Runs the recipe script as __main__; with LASERSB_TEST_STALL_CKPT=k, the k-th checkpoint folder
# stalls (after touching LASERSB_TEST_STALL_MARKER) before its first torch.save, so a test can
# SIGKILL the process while that folder is half written.
WRAPPER = r"""
import os, runpy, sys, time
from pathlib import Path
import torch
stall_at = int(os.environ.get("LASERSB_TEST_STALL_CKPT", "0"))
if stall_at:
    real_save, seen = torch.save, []
    def stalling_save(obj, f, *args, **kwargs):
        folder = Path(str(f)).parent
        if "CKPT" in folder.name:
            key = folder.name.replace(".partial-", "")
            if key not in seen:
                seen.append(key)
                if len(seen) == stall_at:
                    Path(os.environ["LASERSB_TEST_STALL_MARKER"]).touch()
                    time.sleep(600)
        return real_save(obj, f, *args, **kwargs)
    torch.save = stalling_save
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def _env(**extra):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _command(entry, mini_corpus, tiny_upstreams, out):
    resumed = dict(entry)
    resumed["overrides"] = {**(entry.get("overrides") or {}), **entry["resume_overrides"]}
    argv = as_argv(resumed, placeholders(mini_corpus, tiny_upstreams, out))
    return [sys.executable, "-c", WRAPPER, str(REPO / entry["script"]), *argv]


def _run(cmd, **env):
    done = subprocess.run(cmd, env=_env(**env), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _complete_checkpoints(save: Path) -> list[Path]:
    return [p for p in save.glob("CKPT+*") if p.is_dir() and (p / "CKPT.yaml").is_file()]


def _start_and_kill(cmd, ready, settle=0.0, timeout=240, **env):
    """Start ``cmd``; SIGKILL its process group ``settle`` seconds after ``ready()`` is true."""
    proc = subprocess.Popen(
        cmd,
        env=_env(**env),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, (
            "the run ended before it could be killed: " + (proc.stderr.read().decode()[-2000:])
        )
        assert ready(), "timed out waiting for the kill point"
        time.sleep(settle)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def _final_state(entry, out: Path) -> dict:
    """Metrics and weights named by the entry's ``resume_compare``."""
    compare = entry["resume_compare"]
    state = {}
    for name, keys in (compare.get("json") or {}).items():
        data = json.loads((out / name).read_text(encoding="utf-8"))
        state.update({f"{name}:{key}": data[key] for key in keys})
    for pattern in compare.get("tensors") or []:
        files = sorted(out.glob(pattern))
        assert files, f"no {pattern} in {out}"
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                tensors = load_file(str(file))
            else:
                tensors = torch.load(file, map_location="cpu", weights_only=True)
            state.update(_flatten(tensors, file.name))
    return state


def _flatten(data: dict, prefix: str) -> dict:
    """``{"prefix:key": value}``, nested mappings (a state dict beside metadata) flattened."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}:{key}"))
        else:
            flat[f"{prefix}:{key}"] = value
    return flat


def _assert_same(full: dict, resumed: dict, tolerance=None):
    """Bit-identical, or within ``tolerance`` ({rtol, atol}) where the registry states one."""
    assert full.keys() == resumed.keys()
    for key, value in full.items():
        if isinstance(value, torch.Tensor):
            if tolerance:
                close = torch.allclose(value, resumed[key], **tolerance)
                if value.is_floating_point():
                    scale = value.abs() + tolerance["atol"] / tolerance["rtol"]
                    worst = float(((resumed[key] - value).abs() / scale).max())
                    print(f"{key}: max relative difference after resuming {worst:.1e}")
            else:
                close = torch.equal(value, resumed[key])
            assert close, f"{key} differs after resuming"
        elif tolerance:
            expected = pytest.approx(value, rel=tolerance["rtol"], abs=tolerance["atol"])
            assert resumed[key] == expected, f"{key}: {value} != {resumed[key]}"
        else:
            assert value == resumed[key], f"{key}: {value} (uninterrupted) != {resumed[key]}"


@pytest.mark.parametrize("entry", RESUME_ENTRIES, ids=[e["name"] for e in RESUME_ENTRIES])
def test_checkpointer_is_atomic(entry, mini_corpus, tiny_upstreams, tmp_path, request):
    from lasersb.checkpoints import AtomicCheckpointer
    from lasersb.config import load_hparams

    if entry["name"] in ATOMIC_PENDING:
        request.applymarker(pytest.mark.xfail(strict=True, reason=ATOMIC_PENDING[entry["name"]]))
    import speechbrain as sb

    places = placeholders(mini_corpus, tiny_upstreams, tmp_path)
    # As the recipe sees them: run options (--optimizer_step_limit...) are not hparams overrides.
    hparams_file, _, overrides = sb.parse_arguments(as_argv(entry, places))
    hparams = load_hparams(hparams_file, overrides)
    assert isinstance(hparams["checkpointer"], AtomicCheckpointer)


@pytest.mark.parametrize("entry", RESUME_ENTRIES, ids=[e["name"] for e in RESUME_ENTRIES])
def test_resume_after_sigkill_matches_uninterrupted_run(
    entry, mini_corpus, tiny_upstreams, tmp_path
):
    full, killed = tmp_path / "full", tmp_path / "killed"
    # The uninterrupted run goes on beside the killed ones (one thread each: the same numbers as
    # alone, in about half the wall time on two cores).
    uninterrupted = subprocess.Popen(
        _command(entry, mini_corpus, tiny_upstreams, full),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _kill_and_resume(entry, mini_corpus, tiny_upstreams, tmp_path, killed)
    finally:
        _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-3000:]
    expected = _final_state(entry, full)
    _assert_same(expected, _final_state(entry, killed), entry["resume_compare"].get("tolerance"))


def _kill_and_resume(entry, mini_corpus, tiny_upstreams, tmp_path, killed):
    """SIGKILL the run during a checkpoint write, then between writes; the same command ends it."""
    cmd = _command(entry, mini_corpus, tiny_upstreams, killed)
    save = killed / "save"
    atomic = entry["name"] not in ATOMIC_PENDING
    if atomic:
        # 1. Killed while the second checkpoint folder is half written.
        marker = tmp_path / "stalled"
        _start_and_kill(
            cmd,
            marker.exists,
            LASERSB_TEST_STALL_CKPT=2,
            LASERSB_TEST_STALL_MARKER=marker,
        )
        assert len(_complete_checkpoints(save)) == 1, "only the first checkpoint is complete"
        assert list(save.glob(".partial-CKPT+*")), "the second checkpoint was being written"
    # 2. Killed between checkpoint writes, once a (new) complete checkpoint exists.
    before = {p.name for p in _complete_checkpoints(save)} if save.is_dir() else set()
    # A non-atomic checkpointer's folder has CKPT.yaml before its other files: let it finish.
    settle = 0.0 if atomic else 0.3
    _start_and_kill(
        cmd, lambda: bool({p.name for p in _complete_checkpoints(save)} - before), settle
    )
    assert not (killed / entry["resume_compare"]["done"]).exists(), "killed after the end"
    if atomic:
        assert not list(save.glob(".partial-CKPT+*")), "the restart removed the partial folder"
    # 3. The same command again finishes the run.
    _run(cmd)
