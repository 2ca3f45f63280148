"""Multi-process training as SpeechBrain runs it, on the CPU: ``torchrun --nproc_per_node=2``.

The TEMPLATE recipe runs for a few steps with two processes and the gloo backend. Checked: the
data preparation ran once (main process only, the other waited), both ranks finished, the
gradients were averaged (both ranks end with bit-identical weights, which differ from the
initial ones), and the checkpoint folder holds one set of files.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from test_recipe_registry import ENTRIES, REPO, as_argv, placeholders

# Wraps the recipe: counts the data preparation calls per rank and, after fit, saves each
# rank's weights to <output_folder>/rank<RANK>.pt (test instrumentation only).
WRAPPER = r"""
import os, runpy, sys
from pathlib import Path
import torch
import data_prep.librispeech_prepare as prep
import lasersb.brains.template as template
out = Path(os.environ["LASERSB_TEST_OUT"])
rank = os.environ["RANK"]
real_prepare, real_fit = prep.prepare_librispeech, template.UtteranceClassifierBrain.fit
def counting_prepare(*args, **kwargs):
    with open(out / f"prepare_calls_rank{rank}", "a") as handle:
        handle.write("1\n")
    return real_prepare(*args, **kwargs)
def fit_then_dump(self, *args, **kwargs):
    # DDP wraps each trained module: "classifier.module.weight" -> "classifier.weight".
    snapshot = lambda: {
        k.replace(".module.", "."): v.detach().cpu().clone()
        for k, v in self.modules.state_dict().items()
    }
    initial = snapshot()
    result = real_fit(self, *args, **kwargs)
    record = {"state": snapshot(), "initial": initial, "step": self.optimizer_step}
    torch.save(record, out / f"rank{rank}.pt")
    return result
prep.prepare_librispeech = counting_prepare
template.UtteranceClassifierBrain.fit = fit_then_dump
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo not built")
def test_template_two_process_ddp_cpu(mini_corpus, tiny_upstreams, tmp_path):
    entry = next(e for e in ENTRIES if e["name"] == "template_mini")
    out = tmp_path / "out"
    out.mkdir()
    wrapper = tmp_path / "ddp_wrapper.py"
    wrapper.write_text(WRAPPER)
    argv = as_argv(entry, placeholders(mini_corpus, tiny_upstreams, out))
    argv = [a for a in argv if not a.startswith("--total_steps")] + [
        "--total_steps=4",
        "--distributed_backend=gloo",
    ]
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *launcher,
        "--nproc_per_node=2",
        "--standalone",
        str(wrapper),
        str(REPO / entry["script"]),
        *argv,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", LASERSB_TEST_OUT=str(out))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # a hung collective: kill torchrun and both workers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-4000:]

    # Data preparation on the main process only.
    assert (out / "prepare_calls_rank0").read_text().count("1") == 1
    assert not (out / "prepare_calls_rank1").exists()
    # Both ranks finished the same number of steps with the same (averaged) weights.
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), f"{name} differs between ranks"
    moved = [k for k, v in ranks[0]["state"].items() if not torch.equal(v, ranks[0]["initial"][k])]
    assert any(k.startswith("classifier") for k in moved), "training did not update the weights"
    assert not any(k.startswith("upstream") for k in moved), "the frozen upstream moved"
    # One checkpoint folder, written by the main process; the test set was evaluated once.
    checkpoints = list((out / "save").glob("CKPT+*"))
    assert len(checkpoints) >= 1 and not list((out / "save").glob(".partial-*"))
    assert (out / "test_summary.json").is_file()
