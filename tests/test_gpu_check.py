"""bench/gpu_check.sh --dry-run: every step of the prepared GPU check runs at tiny sizes on the CPU.

The GPU check runs only when a GPU machine is lent, once, without time to debug it; this dry run
keeps it working: each step must finish, write real measured numbers into results.json and
tables.md, and import nothing that the bare GPU image lacks (bench/gpu_check.py hides those
packages). A second test checks that a step running past its time budget is stopped and that the
results written so far stay.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


def _run(args, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run(["--dry-run", str(out)])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:] + (
        (out / "gpu_check.log").read_text()[-6000:] if (out / "gpu_check.log").exists() else ""
    )
    return out, json.loads((out / "results.json").read_text())


def test_dry_run_writes_tables_json_and_log(dry_run):
    out, results = dry_run
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "results.json", "tables.md"]
    assert results["dry_run"] is True
    assert list(results["steps"]) == list(gpu_check.STEPS)
    for name, step in results["steps"].items():
        assert step["status"] == "ok", (name, step.get("traceback"))
        assert step["imported_absent_from_gpu_image"] == []
    assert results["wall_s"] < results["budget_s"]


def test_dry_run_imports_like_the_bare_image(dry_run):
    _, results = dry_run
    env = results["steps"]["env"]
    assert set(env["imports"]) >= set(gpu_check.BARE_MODULES) | {"lasersb.brains.superb"}
    assert all(v == "ok" for v in env["imports"].values()), env["imports"]
    # speechbrain and soundfile were hidden from every step but superb_pr (which may use the
    # carried speechbrain wheel, never soundfile)
    for name, step in results["steps"].items():
        hidden = set(step["hidden_modules"])
        assert ("soundfile" in hidden) == (name != "recipes")  # recipes read the corpus's audio
        assert ("speechbrain" in hidden) == (name not in ("superb_pr", "recipes"))


def test_dry_run_measured_every_figure(dry_run):
    out, results = dry_run
    steps = results["steps"]
    assert steps["triton_tests"]["returncode"] == 0
    assert re.search(r"\b1 passed\b", steps["triton_tests"]["summary"])

    ours = [c for c in steps["soft_dtw"]["cases"] if c["method"] == "lasersb"]
    assert {(c["dtype"], c["ragged"]) for c in ours} == {
        ("float32", False),
        ("float32", True),
        ("bfloat16", False),
        ("bfloat16", True),
    }
    assert all(c["median_ms"] > 0 and c["runs"] >= 1 for c in ours)
    assert all(c["skipped"] == "CUDA only" for c in steps["soft_dtw"]["cases"] if c not in ours)

    laser = steps["laser"]["result"]
    assert laser["timed_steps"] >= 1 and laser["pairs_per_s"] > 0
    parts = laser["median_s"]
    assert all(parts[k] > 0 for k in ("augmentation", "upstream", "loss", "total"))
    assert parts["augmentation"] + parts["upstream"] + parts["loss"] == pytest.approx(
        parts["total"], rel=0.05
    )
    assert laser["paper_scale_min"] == pytest.approx(3600 * 8 / laser["pairs_per_s"] / 60)

    rows = steps["augment"]["rows"]
    assert len(rows) == 3 and all(r["utt_per_s"] > 0 for r in rows)

    superb = steps["superb_pr"]
    assert [r["mode"] for r in superb["rows"]] == ["no cache", "cold cache", "warm cache"]
    assert all(r["ms_per_batch"] > 0 for r in superb["rows"])
    utterances = superb["settings"]["batch_size"] * superb["rows"][1]["batches"]
    # the cold pass fills the cache, the warm pass is served from it
    assert superb["cache"]["misses"] == superb["cache"]["entries"] == utterances
    assert (
        superb["cache"]["hits"] == superb["rows"][2]["batches"] * superb["settings"]["batch_size"]
    )

    tables = (out / "tables.md").read_text()
    assert "DRY RUN" in tables
    first = ours[0]
    assert f"| 1 x 6 | float32 | {first['median_ms']:,.2f} ms" in tables
    assert f"| utterance pairs / s | {laser['pairs_per_s']:.2f} |" in tables
    assert f"| warm cache | {superb['rows'][2]['ms_per_batch']:,.1f} |" in tables


def test_dry_run_recipes_step(dry_run):
    """The recipes step ran a recipe under torchrun --nproc_per_node=1 with gloo on the CPU."""
    out, results = dry_run
    step = results["steps"]["recipes"]
    assert step["settings"]["backend"] == "gloo" and step["settings"]["device"] == "cpu"
    rows = {row["name"]: row for row in step["rows"]}
    assert set(rows) == set(gpu_check.DRY_RUN_RECIPES) == {"template_mini@torchrun"}
    row = rows["template_mini@torchrun"]
    assert row["status"] == "pass" and row["first_error"] == "", row
    assert row["launcher"] == "torchrun" and row["imported_absent_from_gpu_image"] == []
    for option in ("--nproc_per_node=1", "--distributed_backend=gloo", "--device=cpu"):
        assert option in row["command"]
    tables = (out / "tables.md").read_text()
    assert "| template_mini@torchrun | torchrun | fp32 | pass |" in tables
    # the recipes' pass/fail comes first, right after the step table
    assert tables.index("Every registered recipe") < tables.index("Triton kernels")


def _full_scale_precision(hparams):
    from ruamel.yaml import YAML

    path = REPO / hparams
    while True:
        data = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
        if "precision" in data:
            return str(data["precision"])
        if "inherit" not in data:
            return "fp32"  # SpeechBrain's default
        path = (path.parent / str(data["inherit"])).resolve()


def test_recipe_cases_cover_the_registry_at_full_scale_precision():
    import yaml

    entries = yaml.safe_load((REPO / "recipes" / "registry.yaml").read_text())
    cases = {c["name"]: c for c in gpu_check.recipe_cases()}
    runs = [e for e in entries if e["mode"] == "run"]
    assert set(cases) == {e["name"] for e in runs} | {"laser_mini@torchrun"}
    for entry in entries:
        if entry["mode"] == "load":  # each full-scale file's precision is its run entry's
            assert cases[entry["covered_by"]]["precision"] == _full_scale_precision(
                entry["hparams"]
            ), entry["name"]
    assert cases["laser_mini"]["precision"] == "fp32"  # LASER's release trains in fp32 (#24)
    places = {"mini": "/m", "tmp": "/t", "tiny_hubert": "/h", "tiny_wavlm": "/w"}
    places["tiny_wav2vec2"] = "/v"
    command = gpu_check.recipe_command(cases["laser_mini@torchrun"], places, dry_run=False)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    assert command[-4:] == [
        "--device=cuda",
        "--precision=fp32",
        "--noprogressbar",
        "--distributed_backend=nccl",
    ]
    assert "--data_folder=/m/LibriSpeech" in command
    plain = gpu_check.recipe_command(cases["dino_mini"], places, dry_run=False)
    assert plain[:3] == [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--recipe-wrapper"]
    assert "--precision=fp16" in plain and "--device=cuda" in plain


def test_failing_and_stalling_recipes_report_their_first_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("print('step 1')\nraise KeyError('lexicon_file')\n")
    stalled = tmp_path / "stalled.py"
    stalled.write_text("import time\ntime.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rows = []
    for script, budget in ((broken, 30), (stalled, 2)):
        case = {
            "name": script.stem,
            "script": str(script),
            "hparams": str(script),
            "overrides": {"output_folder": "{tmp}"},
            "expect_files": [],
            "precision": "fp16",
            "launcher": "python",
        }
        places = {"tmp": tmp_path / script.stem}
        rows.append(gpu_check.run_recipe(case, places, True, budget, tmp_path, env))
    assert rows[0]["status"] == "fail"
    assert rows[0]["first_error"] == "KeyError: 'lexicon_file'"
    assert rows[1]["status"] == "timed out" and rows[1]["s"] < 10
    tables = "\n".join(gpu_check._recipe_tables({"settings": {}, "rows": rows}))
    assert "| broken | python | fp16 | fail |" in tables and "KeyError: 'lexicon_file' |" in tables


def test_first_error_line():
    traceback = (
        "Traceback (most recent call last):\n  File x\nKeyError: 'a'\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
    )
    assert gpu_check.first_error_line(traceback) == "KeyError: 'a'"
    assert gpu_check.first_error_line("torch.OutOfMemoryError: CUDA out of memory") == (
        "torch.OutOfMemoryError: CUDA out of memory"
    )
    assert (
        gpu_check.first_error_line("step 1\nfatal error: disk full\n") == "fatal error: disk full"
    )
    assert gpu_check.first_error_line("") == ""


def test_step_past_its_budget_is_stopped_and_results_kept(tmp_path):
    proc = _run(
        ["--dry-run", str(tmp_path)],
        env_extra={
            "LASERSB_GPU_CHECK_STALL_S": "120",
            "LASERSB_GPU_CHECK_ONLY": "augment",
            "LASERSB_GPU_CHECK_BUDGET_S": "25",  # 15 s are kept back: the step gets ~10 s
        },
        timeout=120,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    step = results["steps"]["augment"]
    assert proc.returncode == 1
    assert step["status"].startswith("timed out after")
    assert step["wall_s_outer"] < 25
    assert step["hidden_modules"]  # written by the step before it stalled
    assert "| augment | timed out after" in (tmp_path / "tables.md").read_text()


def test_tables_render_partial_results():
    results = {
        "dry_run": False,
        "started": "now",
        "budget_s": 460,
        "budgets": {name: spec[0] for name, spec in gpu_check.STEPS.items()},
        "steps": {
            "soft_dtw": {
                "settings": {"dim": 256, "repeats": 10},
                "cases": [
                    dict(
                        batch=8,
                        frames=600,
                        dtype="float32",
                        ragged=False,
                        method="lasersb",
                        median_ms=2.5,
                        peak_mib=40.0,
                        runs=10,
                        warmup_ms=900.0,
                    ),
                    dict(
                        batch=8,
                        frames=600,
                        dtype="float32",
                        ragged=False,
                        method="pysdtw",
                        median_ms=22.0,
                        peak_mib=80.0,
                        runs=10,
                        warmup_ms=2000.0,
                    ),
                ],
            },  # fmt: skip
            "triton_tests": {"status": "timed out after 110 s (budget 110 s)"},
        },
    }
    tables = gpu_check.render_tables(results)
    assert "| 8 x 600 | float32 | 2.50 ms / 40 MiB | 22.00 ms / 80 MiB | 900 ms |" in tables
    assert "| soft-DTW divergence (8, 600) fp32 fwd+bwd <= 3 ms | 2.50 ms | met |" in tables
    assert "| peak memory at (8, 600) <= pysdtw's | 40 vs 80 MiB | met |" in tables
    assert "| laser | not run |" in tables
    assert "Status: timed out after 110 s" in tables
