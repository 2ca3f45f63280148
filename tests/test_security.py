"""Loading files never runs code from them; no shell command is built from a file name.

* Every ``torch.load(`` in ``lasersb/``, ``recipes/``, ``data_prep/`` and ``bench/`` passes
  ``weights_only=True``; no ``pickle.load``/``pickle.loads`` outside an explicit allow-list.
* No ``shell=True``, ``os.system``, ``os.popen`` or ``subprocess.getoutput``; every
  ``subprocess`` call gets an argument list, not a string.
* A poisoned checkpoint (a pickle whose loading would run code) is refused by the checkpoint
  recovery that every recipe uses, and its payload never runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("lasersb", "recipes", "data_prep", "bench")
PICKLE_ALLOWED = {
    # Length-prefixed messages between the mini-corpus generator and its own forked/spawned
    # espeak-ng workers over pipes: never read from a file.
    "lasersb/data/mini_espeak.py": "IPC with its own worker processes over pipes",
}


def _python_files():
    for folder in CODE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


def _calls(tree, module: str, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == module and node.func.attr in names:
                yield node


def test_torch_load_always_weights_only():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "torch", {"load"}):
            flag = [k for k in call.keywords if k.arg == "weights_only"]
            if not flag or not (
                isinstance(flag[0].value, ast.Constant) and flag[0].value.value is True
            ):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_pickle_outside_allow_list():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "pickle", {"load", "loads", "Unpickler"}):
            if rel not in PICKLE_ALLOWED:
                offenders.append(f"{rel}:{call.lineno}")
    assert not offenders, f"pickle loading (use torch.load(weights_only=True) or JSON): {offenders}"


def test_no_shell_commands_from_strings():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8")
        if re.search(r"shell\s*=\s*True", text):
            offenders.append(f"{rel}: shell=True")
        tree = ast.parse(text)
        for call in _calls(tree, "os", {"system", "popen", "execl", "execlp", "spawnl"}):
            offenders.append(f"{rel}:{call.lineno}: os.{call.func.attr}")
        subprocess_calls = {"run", "Popen", "call", "check_call", "check_output"}
        for call in _calls(tree, "subprocess", subprocess_calls | {"getoutput"}):
            if call.func.attr == "getoutput":
                offenders.append(f"{rel}:{call.lineno}: subprocess.getoutput")
            elif call.args and isinstance(call.args[0], (ast.JoinedStr, ast.BinOp, ast.Constant)):
                offenders.append(f"{rel}:{call.lineno}: command given as a string")
    assert not offenders, offenders


class _Payload:
    """Unpickling this object would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_poisoned_checkpoint_is_refused(tmp_path):
    from lasersb.checkpoints import AtomicCheckpointer

    layer = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path / "save", {"layer": layer})
    ckpt = checkpointer.save_checkpoint()
    marker = tmp_path / "code_ran"
    torch.save({"weight": _Payload(marker)}, ckpt.paramfiles["layer"])
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        AtomicCheckpointer(
            tmp_path / "save", {"layer": torch.nn.Linear(2, 2)}
        ).recover_if_possible()
    assert not marker.exists(), "loading a checkpoint ran code from it"
