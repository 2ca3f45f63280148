"""The layout rules of CONVENTIONS.md that code can check.

* ``lasersb/brains/*.py`` define only ``sb.Brain`` subclasses (and module-private helpers,
  named ``_...``): models go to ``lasersb/models``, losses to ``lasersb/alignment``, data
  helpers to ``lasersb/data``, schedules to ``lasersb/schedules.py``, recipe bodies to their
  ``train.py``.
* No ``lasersb`` module imports ``data_prep`` (also not in a function): the library does not
  depend on the corpus preparation scripts; recipes call both.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import speechbrain as sb

REPO = Path(__file__).resolve().parents[1]
BRAIN_FILES = sorted(p for p in (REPO / "lasersb" / "brains").glob("*.py"))
LIBRARY_FILES = sorted((REPO / "lasersb").rglob("*.py"))


def _public_definitions(path: Path) -> tuple[list[str], list[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    functions = [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and not n.name.startswith("_")
    ]
    return [c for c in classes if not c.startswith("_")], functions


@pytest.mark.parametrize(
    "path", [p for p in BRAIN_FILES if p.name != "__init__.py"], ids=lambda p: p.name
)
def test_brains_define_only_brains(path):
    classes, functions = _public_definitions(path)
    module = importlib.import_module(f"lasersb.brains.{path.stem}")
    not_brains = [c for c in classes if not issubclass(getattr(module, c), sb.Brain)]
    assert not not_brains, f"{path.name}: classes that are not sb.Brain subclasses: {not_brains}"
    assert not functions, (
        f"{path.name}: public functions {functions}; move them to models/, alignment/, data/, "
        "metrics/ or the recipe's train.py (or prefix a Brain-private helper with _)."
    )


def _data_prep_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name.split(".")[0] == "data_prep" for name in names):
            lines.append(node.lineno)
    return lines


def test_no_library_module_imports_data_prep():
    offenders = {
        p.relative_to(REPO).as_posix(): lines
        for p in LIBRARY_FILES
        if (lines := _data_prep_imports(p))
    }
    assert not offenders, (
        f"lasersb modules import data_prep (file: lines): {offenders}; the recipe's train.py "
        "calls data_prep and passes the manifests to the library."
    )


def test_the_scan_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from data_prep.x import y\n    import data_prep\n")
    assert _data_prep_imports(module) == [2, 3]


@pytest.mark.parametrize(
    "script", sorted((REPO / "data_prep").glob("*_prepare.py")), ids=lambda p: p.stem
)
def test_data_prep_command_lines_share_one_parser(script, capsys):
    """Every ``python -m data_prep.*`` builds its command line with data_prep.cli's parser: each
    multi-word option in both spellings, errors in the command's wording."""
    module = importlib.import_module(f"data_prep.{script.stem}")
    text = script.read_text(encoding="utf-8")
    assert "argparse.ArgumentParser(" not in text and "PrepareArgumentParser(" in text
    with pytest.raises(SystemExit):
        module.main(["--help"])
    usage = capsys.readouterr().out
    multiword = {o for o in usage.split() if o.startswith("--") and ("-" in o[2:] or "_" in o[2:])}
    for option in multiword:
        name = option.strip(",[]")
        assert "--" + name[2:].replace("-", "_") in usage, name
        assert "--" + name[2:].replace("_", "-") in usage, name
