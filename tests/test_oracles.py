"""The oracle rule of tests/conftest.py: a missing reference package fails a CI run.

The equality tests compare our code with dtw-python, jiwer, librosa and Triton
(requirements-dev.txt). Without the reference a test cannot check its claim: it skips on a
developer's machine (``-rs`` in the README's test command lists it) but must fail on CI, so a
green CI run means every equality was checked.
"""

import ast
import sys
from pathlib import Path

import pytest
from conftest import ORACLES, require_oracle

TESTS = Path(__file__).resolve().parent


def _hide(monkeypatch, module):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # ``import module`` raises ImportError


@pytest.mark.parametrize("module", sorted(ORACLES))
def test_missing_oracle_fails_on_ci(monkeypatch, module):
    _hide(monkeypatch, module)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"CI run without an oracle.*{ORACLES[module]}"):
        require_oracle(module)


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_missing_oracle_skips_off_ci(monkeypatch, ci):
    _hide(monkeypatch, "jiwer")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="jiwer is not installed"):
        require_oracle("jiwer")


def test_present_oracle_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_oracle("jiwer") is sys.modules["jiwer"]
    with pytest.raises(ValueError, match="not an oracle"):
        require_oracle("numpy")


def test_no_test_importorskips_an_oracle():
    """Every oracle goes through require_oracle (an importorskip would skip silently on CI)."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "importorskip"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).split(".")[0] in ORACLES
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"use conftest.require_oracle for oracles: {offenders}"
