"""Every registered recipe under ``torchrun --nproc_per_node=2`` (gloo, on the CPU).

For each ``mode: run`` entry of ``recipes/registry.yaml`` (its debug overrides, a couple of
steps; ``ddp_variants`` add runs with another hparams file or overrides: LASER with WavLM and in
adapters mode, SE with each of its three losses), the recipe runs as a user runs it on
several GPUs: ``torchrun --nproc_per_node=2 recipes/<...>/train.py <hparams> ...
--distributed_backend=gloo``. A small wrapper (test
instrumentation only) records, per rank, every file the process writes under the output folder
and, after each ``fit``, the trained parameters and the optimiser step. Checked:

* both ranks exit with 0;
* both ranks end with identical parameters (gradients were averaged; the DINO teacher, updated
  from the averaged student, too), and training moved some of them;
* both ranks end at the same optimiser step, the configured one (``total_steps`` /
  ``optimizer_step_limit``, or the entry's ``ddp_steps``): steps count for the whole job
  (``ddp_overrides`` give the run more epochs where each rank's half epoch would end first);
* each rank drew its own batches;
* with ``ddp_single_process_eval``, evaluating the job's checkpoint in one process afterwards
  gives the numbers the 2-process job wrote;
* the entry's expected files exist, and rank 1 wrote nothing under the output folder (data
  preparation, checkpoints, exports, logs, TensorBoard, plots and results are rank 0's), except
  what the entry lists in ``ddp_shared_writes`` (the feature cache, filled by every rank).

New recipes get this check by being registered. Each run costs a few seconds (two processes of
a tiny model on the mini corpus).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_recipe_registry import ENTRIES, REPO, RUN_ENTRIES, as_argv, check_outputs, placeholders

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo not built")

# Test instrumentation: runs the recipe script after patching the file-writing primitives (to
# record what this rank writes under $LASERSB_WATCH) and DistributedBrain.fit (to record the
# parameters and the step after each fit). Results go to $LASERSB_TEST_OUT/rank<RANK>.pt.
WRAPPER = r"""
import atexit, builtins, io, os, runpy, sys
from pathlib import Path
import torch
rank = os.environ["RANK"]
out = Path(os.environ["LASERSB_TEST_OUT"])
watched = Path(os.environ["LASERSB_WATCH"]).resolve()
writes, fits = set(), []

def note(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = Path(os.fsdecode(path)).resolve()
    if path == watched or watched in path.parents:
        writes.add(path.relative_to(watched).as_posix())

real_open, real_os_open, real_save = builtins.open, os.open, torch.save
def open_(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+"):
        note(file)
    return real_open(file, mode, *args, **kwargs)
def os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        note(path)
    return real_os_open(path, flags, *args, **kwargs)
def save(obj, f, *args, **kwargs):
    note(f)
    return real_save(obj, f, *args, **kwargs)
builtins.open = io.open = open_
os.open, torch.save = os_open, save
for name in ("replace", "rename"):
    def moved(src, dst, *args, _real=getattr(os, name), **kwargs):
        note(dst)
        return _real(src, dst, *args, **kwargs)
    setattr(os, name, moved)

from lasersb.brains.base import DistributedBrain
from lasersb.distributed import unwrap
real_fit = DistributedBrain.fit
def snapshot(brain):
    named = [(n, unwrap(m)) for n, m in brain.modules.items()]
    if getattr(brain, "teacher", None) is not None:
        named.append(("teacher", brain.teacher))
    return {f"{n}.{k}": v.detach().cpu().clone() for n, m in named for k, v in m.named_parameters()}
def fit(self, *args, **kwargs):
    initial = snapshot(self)
    result = real_fit(self, *args, **kwargs)
    fits.append({"initial": initial, "final": snapshot(self), "step": int(self.optimizer_step)})
    return result
DistributedBrain.fit = fit
real_start = DistributedBrain.on_fit_start
def on_fit_start(self):
    real_start(self)
    starts.append(int(self.optimizer_step))  # after recovery: where this run starts
DistributedBrain.on_fit_start = on_fit_start
real_fit_batch = DistributedBrain.fit_batch
def fit_batch(self, batch):
    batches.append(list(batch.id))
    return real_fit_batch(self, batch)
DistributedBrain.fit_batch = fit_batch
starts, batches = [], []
# Registered first, so it runs after the recipe's own exit handlers.
def dump():
    record = {"fits": fits, "starts": starts, "batches": batches, "writes": sorted(writes)}
    real_save(record, out / f"rank{rank}.pt")
atexit.register(dump)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def torchrun_command(*args) -> list[str]:
    """``torchrun`` (or ``python -m torch.distributed.run``) followed by ``args``."""
    torchrun = shutil.which("torchrun")
    return [*([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]), *args]


def kill_job(pid: int) -> None:
    """SIGKILL a torchrun job: the launcher and every descendant.

    torchrun starts each worker in a session of its own, so killing the launcher's process group
    would leave the workers running (the kill of a whole job, as Slurm or the OOM killer does it,
    reaches them all).
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    doomed, todo = [], [pid]
    while todo:
        current = todo.pop()
        doomed.append(current)
        todo.extend(children.get(current, []))
    for victim in doomed:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_job(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a torchrun job in its own process group; a hung job is killed with all its workers."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # a hung collective: kill torchrun and both workers
            kill_job(proc.pid)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, output, None)


def job_env(**extra) -> dict:
    """Environment of a CPU torchrun job: one thread per process, the checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def configured_steps(entry: dict) -> int | None:
    """The optimiser step a run of the entry ends at (``ddp_steps`` wins), or ``None``."""
    overrides = entry.get("overrides") or {}
    for key in ("ddp_steps", "total_steps", "optimizer_step_limit"):
        value = entry.get(key) if key == "ddp_steps" else overrides.get(key)
        if value is not None:
            return int(value)
    return None


def ddp_cases(entries: list[dict]) -> list[dict]:
    """The run entries, plus one entry per ``ddp_variants`` item (another file or overrides)."""
    cases = []
    for entry in entries:
        if entry.get("ddp_skip"):
            continue
        cases.append(entry)
        for variant in entry.get("ddp_variants") or []:
            overrides = {**entry["overrides"], **(variant.get("overrides") or {})}
            cases.append(
                {
                    **entry,
                    "name": f"{entry['name']}-{variant['name']}",
                    "hparams": variant.get("hparams", entry["hparams"]),
                    "overrides": overrides,
                }
            )
    return cases


DDP_ENTRIES = ddp_cases(RUN_ENTRIES)


@pytest.mark.slow
@pytest.mark.parametrize("entry", DDP_ENTRIES, ids=[e["name"] for e in DDP_ENTRIES])
def test_registered_recipe_two_process_ddp(entry, mini_corpus, tiny_upstreams, tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    out.mkdir()
    record.mkdir()
    wrapper = tmp_path / "ddp_wrapper.py"
    wrapper.write_text(WRAPPER)
    entry = {**entry, "overrides": {**entry["overrides"], **(entry.get("ddp_overrides") or {})}}
    argv = as_argv(entry, placeholders(mini_corpus, tiny_upstreams, out))
    cmd = torchrun_command(
        "--nproc_per_node=2", "--standalone", str(wrapper), str(REPO / entry["script"]), *argv,
        "--distributed_backend=gloo",
    )  # fmt: skip
    result = run_job(cmd, job_env(LASERSB_TEST_OUT=str(record), LASERSB_WATCH=str(out)))
    assert result.returncode == 0, result.stdout[-6000:]

    ranks = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Every file under the output folder is rank 0's, but what the entry shares on purpose.
    shared = entry.get("ddp_shared_writes") or []
    alien = [w for w in ranks[1]["writes"] if not any(fnmatch.fnmatch(w, g) for g in shared)]
    assert not alien, f"rank 1 wrote under the output folder: {alien[:10]}"
    assert ranks[0]["writes"], "rank 0 wrote nothing under the output folder"
    check_outputs(entry, out)

    fits = [r["fits"] for r in ranks]
    if entry.get("ddp_no_fit"):  # evaluation-only recipe: nothing trained
        assert fits == [[], []]
        return
    assert fits[0] and len(fits[0]) == len(fits[1]), "both ranks must run the same fits"
    for fit0, fit1 in zip(*fits):
        assert fit0["step"] == fit1["step"], "the ranks ran different numbers of steps"
        assert fit0["final"].keys() == fit1["final"].keys()
        for name, value in fit0["final"].items():
            assert torch.equal(value, fit1["final"][name]), f"{name} differs between ranks"
        moved = [k for k, v in fit0["final"].items() if not torch.equal(v, fit0["initial"][k])]
        assert moved, "training did not update any parameter"
    expected = configured_steps(entry)
    if expected is not None:
        assert fits[0][-1]["step"] == expected, (fits[0][-1]["step"], expected)
    # Each rank draws its own batches (a distributed sampler, also over batch samplers).
    assert ranks[0]["batches"][0] != ranks[1]["batches"][0], "both ranks drew the same batch"

    single = entry.get("ddp_single_process_eval")
    if single:  # evaluating the job's checkpoint in one process gives the job's numbers
        before = {name: json.loads((out / name).read_text()) for name in single["json"]}
        cmd = [sys.executable, str(REPO / entry["script"]), *argv, *single["args"]]
        result = run_job(cmd, job_env())
        assert result.returncode == 0, result.stdout[-6000:]
        for name, keys in single["json"].items():
            after = json.loads((out / name).read_text())
            for key in keys:
                assert after[key] == before[name][key], f"{name}[{key}]: 1 process != 2"


def test_ddp_variants_are_registered_files():
    variants = [c for c in DDP_ENTRIES if "-" in c["name"]]
    assert {"laser_mini-wavlm", "laser_mini-adapters", "se_mse_zeropad_mini-softdtw"} <= {
        c["name"] for c in variants
    }
    registered = {e["hparams"] for e in ENTRIES}
    assert all(c["hparams"] in registered for c in variants)


def test_configured_steps_reads_the_registry():
    assert configured_steps({"overrides": {"total_steps": 3}}) == 3
    assert configured_steps({"ddp_steps": 4, "overrides": {"optimizer_step_limit": 2}}) == 4
    assert configured_steps({"overrides": {}}) is None


# --------------------------------------------------------------------------- resume, two nodes
LASER = next(e for e in RUN_ENTRIES if e["name"] == "laser_mini")


def _laser_job(tmp_path, mini_corpus, tiny_upstreams, **overrides):
    """(wrapper, recipe argv, output folder, record folder) of a LASER mini run."""
    out, record = tmp_path / "out", tmp_path / "record"
    out.mkdir(parents=True, exist_ok=True)
    record.mkdir(parents=True, exist_ok=True)
    wrapper = tmp_path / "ddp_wrapper.py"
    wrapper.write_text(WRAPPER)
    entry = {**LASER, "overrides": {**LASER["overrides"], **overrides}}
    argv = as_argv(entry, placeholders(mini_corpus, tiny_upstreams, out))
    argv = [str(wrapper), str(REPO / LASER["script"]), *argv, "--distributed_backend=gloo"]
    return argv, out, record


def _assert_ranks_agree(record: Path, steps: int) -> list[dict]:
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    final = [r["fits"][-1] for r in ranks]
    assert final[0]["step"] == final[1]["step"] == steps
    for name, value in final[0]["final"].items():
        assert torch.equal(value, final[1]["final"][name]), f"{name} differs between ranks"
    return ranks


@pytest.mark.slow
def test_laser_torchrun_resumes_after_sigkill(mini_corpus, tiny_upstreams, tmp_path):
    """SIGKILL the whole torchrun job after a checkpoint; the same command resumes and ends
    where an uninterrupted torchrun job ends (parameters within the registry's resume
    tolerance of laser_mini, the one stated in recipes/LibriSpeech/ssft/README.md)."""
    steps = dict(total_steps=6, ckpt_interval_steps=2)
    full_argv, full_out, full_record = _laser_job(
        tmp_path / "uninterrupted", mini_corpus, tiny_upstreams, **steps
    )
    full_env = job_env(LASERSB_TEST_OUT=str(full_record), LASERSB_WATCH=str(full_out))
    full = subprocess.Popen(  # runs while the other job is started, killed and resumed
        torchrun_command("--nproc_per_node=2", "--standalone", *full_argv), cwd=REPO,
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    argv, out, record = _laser_job(tmp_path, mini_corpus, tiny_upstreams, **steps)
    cmd = torchrun_command("--nproc_per_node=2", "--standalone", *argv)
    env = job_env(LASERSB_TEST_OUT=str(record), LASERSB_WATCH=str(out))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline, killed_after = time.time() + 240, []
        while time.time() < deadline and proc.poll() is None:
            killed_after = sorted(p.read_text() for p in (out / "save").glob("CKPT+*/CKPT.yaml"))
            if killed_after:  # a complete checkpoint
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job ended before it could be killed"
        kill_job(proc.pid)
    finally:
        if proc.poll() is None:
            kill_job(proc.pid)
        proc.wait()
    assert not (out / "ssft_summary.json").exists(), "killed too late"

    result = run_job(cmd, env)  # the same command again
    assert result.returncode == 0, result.stdout[-6000:]
    ranks = _assert_ranks_agree(record, steps=6)
    try:
        full_output, _ = full.communicate(timeout=300)
    finally:
        if full.poll() is None:
            kill_job(full.pid)
            full.wait()
    assert full.returncode == 0, full_output[-6000:]
    uninterrupted = _assert_ranks_agree(full_record, steps=6)
    tolerance = LASER["resume_compare"]["tolerance"]
    resumed, expected = ranks[0]["fits"][-1]["final"], uninterrupted[0]["fits"][-1]["final"]
    assert resumed.keys() == expected.keys()
    worst = max(
        float(((resumed[k] - v).abs() / (v.abs() + tolerance["atol"] / tolerance["rtol"])).max())
        for k, v in expected.items()
    )
    print(f"torchrun resume vs uninterrupted: max relative difference {worst:.2e}")
    for name, value in expected.items():
        assert torch.allclose(resumed[name], value, **tolerance), (name, worst)
    assert json.loads((out / "ssft_summary.json").read_text())["valid"] == pytest.approx(
        json.loads((full_out / "ssft_summary.json").read_text())["valid"],
        rel=tolerance["rtol"],
        abs=tolerance["atol"],
    )
    seen = sorted(p.parent.name for p in (out / "save").glob("CKPT+*/CKPT.yaml"))
    log = [line for line in result.stdout.splitlines() if "heckpoint" in line]
    starts = (ranks[0]["starts"], ranks[1]["starts"])
    assert starts[0][-1] == starts[1][-1] > 0, ("did not resume", starts, killed_after, seen, log)
    summary = json.loads((out / "ssft_summary.json").read_text())
    assert summary["optimizer_steps"] == 6
    assert (out / "upstream_hf" / "config.json").is_file()


@pytest.mark.slow
def test_laser_two_nodes_one_process_each(mini_corpus, tiny_upstreams, tmp_path):
    """Two torchrun launches (``--nnodes=2``, c10d rendezvous on localhost) train one job."""
    argv, out, record = _laser_job(tmp_path, mini_corpus, tiny_upstreams, total_steps=3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rendezvous = [
        "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=lasersb-two-nodes",
    ]  # fmt: skip
    env = job_env(LASERSB_TEST_OUT=str(record), LASERSB_WATCH=str(out))
    nodes = [
        subprocess.Popen(
            torchrun_command(*rendezvous, *argv),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=300)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_job(node.pid)
                node.wait()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-6000:]
    _assert_ranks_agree(record, steps=3)
    assert json.loads((out / "ssft_summary.json").read_text())["optimizer_steps"] == 3
