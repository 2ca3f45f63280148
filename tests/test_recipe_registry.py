"""Every recipe x hparams file is registered in ``recipes/registry.yaml`` and runs.

* Consistency (fast): every ``*.yaml`` under ``hparams/`` and ``recipes/*/*/hparams/`` is
  registered exactly once; every top-level key of each file is read (``hparams["key"]``,
  ``self.hparams.key``, ``hparam_value(file, "key")``) by its script, a ``lasersb.brains``
  module or a ``lasersb``/``data_prep`` module the script imports, a ``lasersb.brains`` module
  the hparams file names (``brain_class: !name:...``), or is one of SpeechBrain's run options,
  or is used by another key (``!ref <key>``), as SpeechBrain's ``tests/consistency`` checks;
  override keys exist in the file's hparams.
* ``mode: load`` entries (full-scale files) are loaded with their debug overrides (every object
  built, no training); their ``checkpointer`` must be an ``AtomicCheckpointer``.
* ``mode: run`` entries run their ``train.py`` in-process for a couple of steps on the mini
  corpus with tiny upstreams, then their expected outputs are checked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "recipes" / "registry.yaml"
FIELDS = {
    "name",
    "script",
    "hparams",
    "mode",
    "covered_by",
    "overrides",
    "expect_files",
    "expect_json",
    "resume",
    "resume_overrides",
    "resume_compare",
    "modules",
    "unused_ok",
    "tested_by",
    "ddp_steps",
    "ddp_overrides",
    "ddp_variants",
    "ddp_single_process_eval",
    "ddp_shared_writes",
    "ddp_no_fit",
    "ddp_skip",
}
# Keys read by SpeechBrain itself (Brain run options taken from the hparams) or by hyperpyyaml.
FRAMEWORK_KEYS = {
    "inherit",
    "__set_seed",
    "precision",
    "eval_precision",
    "max_grad_norm",
    "skip_nonfinite_grads",
    "nonfinite_patience",
    "ckpt_interval_minutes",
    "ckpt_interval_steps",
    "grad_accumulation_factor",
    "optimizer_step_limit",
    "noprogressbar",
    "device",
    "find_unused_parameters",
    "remove_vector_weight_decay",
}
# Read by every recipe; a script's Brain module is among the modules it imports.
COMMON_SOURCES = [REPO / "lasersb" / "experiment.py", REPO / "lasersb" / "brains" / "base.py"]


def load_registry(path=REGISTRY) -> list[dict]:
    """The registry entries (a list of dicts), checked for unknown fields and duplicate names."""
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    names = [entry["name"] for entry in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate registry names: {duplicates}"
    for entry in entries:
        unknown = set(entry) - FIELDS
        assert not unknown, f"{entry['name']}: unknown registry fields {unknown}"
    return entries


ENTRIES = load_registry()
RUN_ENTRIES = [e for e in ENTRIES if e["mode"] == "run"]
RUN_HERE = [e for e in RUN_ENTRIES if not e.get("tested_by")]
LOAD_ENTRIES = [e for e in ENTRIES if e["mode"] == "load"]


def fill(value, places: dict):
    """Replace ``{mini}``-style placeholders in (nested) override values."""
    if isinstance(value, str):
        for key, target in places.items():
            value = value.replace("{" + key + "}", str(target))
        return value
    if isinstance(value, list):
        return [fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, places) for k, v in value.items()}
    return value


def placeholders(mini_corpus, tiny_upstreams, tmp) -> dict:
    """The placeholder values of the registry's overrides."""
    places = {"mini": mini_corpus, "tmp": tmp}
    places.update({f"tiny_{kind}": folder for kind, folder in tiny_upstreams.items()})
    return places


def as_argv(entry: dict, places: dict) -> list[str]:
    """``[hparams, --key=value, ...]`` for the entry's script."""
    argv = [str(REPO / entry["hparams"])]
    for key, value in fill(entry.get("overrides") or {}, places).items():
        text = json.dumps(value) if isinstance(value, (list, dict)) or value is None else value
        if value is None:
            text = "null"
        argv.append(f"--{key}={text}")
    return [*argv, "--device=cpu", "--noprogressbar"]


def import_script(script: Path, name: str):
    """Import a recipe script under a unique module name (many recipes have a train.py)."""
    folder = str(script.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- consistency
def _all_hparams_files() -> set[str]:
    files = list((REPO / "hparams").glob("*.yaml")) + list(REPO.glob("recipes/*/*/hparams/*.yaml"))
    files += list(REPO.glob("recipes/TEMPLATE/hparams/*.yaml"))
    return {str(p.relative_to(REPO)) for p in files}


def test_every_hparams_file_registered_once():
    registered = [e["hparams"] for e in ENTRIES]
    assert sorted(set(registered)) == sorted(registered), "an hparams file is registered twice"
    missing = _all_hparams_files() - set(registered)
    assert not missing, f"hparams files missing from {REGISTRY.name}: {sorted(missing)}"
    stale = set(registered) - _all_hparams_files()
    assert not stale, f"registry entries whose hparams file does not exist: {sorted(stale)}"
    for entry in ENTRIES:
        assert (REPO / entry["script"]).is_file(), entry["script"]
        assert entry["mode"] in ("run", "load"), entry["name"]
        if entry["mode"] == "load":
            covering = [e for e in RUN_ENTRIES if e["name"] == entry.get("covered_by")]
            assert covering, f"{entry['name']}: covered_by must name a run entry"
            assert covering[0]["script"] == entry["script"], entry["name"]
    scripts = {p.relative_to(REPO).as_posix() for p in REPO.glob("recipes/*/*/train.py")}
    scripts |= {p.relative_to(REPO).as_posix() for p in REPO.glob("recipes/TEMPLATE/train.py")}
    unrun = scripts - {e["script"] for e in RUN_ENTRIES}
    assert not unrun, f"recipe scripts with no run entry in the registry: {sorted(unrun)}"


def _chain(path: Path) -> list[Path]:
    """The file, then its parents along ``inherit:``."""
    chain, rt = [path], YAML(typ="rt")
    while True:
        data = rt.load(chain[-1].read_text(encoding="utf-8")) or {}
        if "inherit" not in data:
            return chain
        chain.append((chain[-1].parent / str(data["inherit"])).resolve())


def _imported_sources(script: Path, files=None) -> list[Path]:
    """Files of the ``lasersb``/``data_prep`` modules a script imports (they may read hparams).

    Followed through ``lasersb.brains`` modules: a Brain reads the keys of the mixins it imports.
    """
    import ast

    files = [] if files is None else files
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] not in ("lasersb", "data_prep"):
                continue
            base = REPO / Path(*name.split("."))
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file() and candidate not in files:
                    files.append(candidate)
                    if candidate.parent.name == "brains":
                        _imported_sources(candidate, files)
    return files


def _named_brain_sources(chain: list[Path]) -> list[Path]:
    """Files of the ``lasersb.brains`` modules the hparams files name, with their imports.

    A script may build the Brain its hparams file names (``brain_class:
    !name:lasersb.brains.spin.SpinBrain``) instead of importing it.
    """
    files = []
    for path in chain:
        for module in re.findall(r"!(?:name|new):lasersb\.brains\.(\w+)\.", path.read_text()):
            source = REPO / "lasersb" / "brains" / f"{module}.py"
            if source not in files:
                files.append(source)
                _imported_sources(source, files)
    return files


def _key_is_used(key: str, sources: str, yaml_texts: str) -> bool:
    if key in FRAMEWORK_KEYS or f"<{key}>" in yaml_texts or f"<{key}." in yaml_texts:
        return True
    # Only real reads count: hparams["key"], hparams.key (self.hparams.key) and
    # lasersb.config.hparam_value(file, "key"); a name quoted anywhere else (a kwarg, a
    # docstring, a getattr default) does not.
    patterns = [
        rf"""\bhparams\s*\[\s*["']{re.escape(key)}["']\s*\]""",
        rf"\bhparams\.{re.escape(key)}\b",
        rf"""\bhparam_value\([^,()]+,\s*["']{re.escape(key)}["']""",
    ]
    return any(re.search(p, sources) for p in patterns)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_every_hparams_key_is_used(entry):
    path = REPO / entry["hparams"]
    chain = _chain(path)
    script = REPO / entry["script"]
    source_files = [script, *COMMON_SOURCES, *_imported_sources(script)]
    source_files += _named_brain_sources(chain)
    source_files += [REPO / m for m in entry.get("modules") or []]
    sources = "\n".join(p.read_text(encoding="utf-8") for p in source_files)
    # !ref uses anywhere in the family of files (a parent's key may be used by a child's value).
    family = set(chain) | set(path.parent.glob("*.yaml"))
    yaml_texts = "\n".join(p.read_text(encoding="utf-8") for p in family)
    keys = list((YAML(typ="rt").load(path.read_text(encoding="utf-8")) or {}).keys())
    unused_ok = entry.get("unused_ok") or {}
    for key, reason in unused_ok.items():
        assert key in keys and str(reason).strip(), f"{entry['name']}: unused_ok {key!r}"
    unused = [k for k in keys if k not in unused_ok and not _key_is_used(k, sources, yaml_texts)]
    assert not unused, (
        f"{entry['hparams']}: keys not read by {entry['script']} nor the lasersb modules it "
        f"imports: {unused}. Remove them, use them, or list them in unused_ok with a reason."
    )
    # Override keys must exist somewhere in the inheritance chain (typos fail loudly).
    chain_keys = set()
    for file in chain:
        chain_keys |= set((YAML(typ="rt").load(file.read_text(encoding="utf-8")) or {}).keys())
    bad = set(entry.get("overrides") or {}) - chain_keys - FRAMEWORK_KEYS
    assert not bad, f"{entry['name']}: overrides for keys not in {entry['hparams']}: {bad}"


# --------------------------------------------------------------------------- load and run
@pytest.mark.parametrize("entry", LOAD_ENTRIES, ids=[e["name"] for e in LOAD_ENTRIES])
def test_full_scale_hparams_load(entry, mini_corpus, tiny_upstreams, tmp_path):
    from lasersb.config import load_hparams

    places = placeholders(mini_corpus, tiny_upstreams, tmp_path)
    hparams = load_hparams(REPO / entry["hparams"], fill(entry.get("overrides") or {}, places))
    assert Path(hparams["output_folder"]) == tmp_path
    for key, value in fill(entry.get("overrides") or {}, places).items():
        if key in hparams and isinstance(value, (str, int, float)):
            assert str(hparams[key]) == str(value), key
    if "checkpointer" in hparams:  # a kill during a save must never leave a loadable half
        from lasersb.checkpoints import AtomicCheckpointer

        assert isinstance(hparams["checkpointer"], AtomicCheckpointer), entry["hparams"]


def check_outputs(entry: dict, out: Path) -> None:
    """Assert the entry's expected files and JSON values exist under ``out``."""
    for pattern in entry.get("expect_files") or []:
        assert list(out.glob(pattern)), f"{entry['name']}: no {pattern} in {out}"
    for name, values in (entry.get("expect_json") or {}).items():
        data = json.loads((out / name).read_text(encoding="utf-8"))
        for key, value in values.items():
            assert data[key] == value, f"{entry['name']}: {name}[{key}] = {data[key]} != {value}"


def _names_path(text: str, path: str) -> bool:
    """Whether ``text`` spells ``path`` whole or as quoted parts (``REPO / "recipes" / ...``)."""
    return path in text or all(
        f'"{part}"' in text or f"'{part}'" in text for part in Path(path).parts
    )


def test_tested_by_references_are_real():
    for entry in RUN_ENTRIES:
        if entry.get("tested_by"):
            text = (REPO / entry["tested_by"]).read_text(encoding="utf-8")
            for field in ("script", "hparams"):  # the test runs this script on this file
                assert _names_path(text, entry[field]), (
                    f"{entry['name']}: {entry['tested_by']} does not name its {field} "
                    f"{entry[field]}"
                )


@pytest.mark.parametrize("entry", RUN_HERE, ids=[e["name"] for e in RUN_HERE])
def test_registered_recipe_runs(entry, mini_corpus, tiny_upstreams, tmp_path, monkeypatch):
    script = REPO / entry["script"]
    module = import_script(script, f"registry_{entry['name']}")
    argv = as_argv(entry, placeholders(mini_corpus, tiny_upstreams, tmp_path))
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    monkeypatch.chdir(REPO)
    module.main(argv)
    check_outputs(entry, tmp_path)
