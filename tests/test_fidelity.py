"""The defaults of the full-scale hparams files equal the fidelity tables of the recipe READMEs.

Each method recipe's README holds one or more fidelity tables, each announced by a comment
``<!-- fidelity: <hparams file> -->`` and shaped as

    | setting | paper / release value (source) | our default | why different |
    |---|---|---|---|
    | `lr_decay` | `linear` (LASER_finetuning/config.yaml: ...) | `linear` | — |

The README is the single source of truth: for every row whose setting is a backticked
top-level key, the test reads that key from the *resolved* hparams file (no object is built,
:func:`lasersb.config.hparam_value`) and asserts it equals the backticked value of the
"our default" column (a YAML value). A row whose "why different" column starts with ``—``
claims fidelity: its first backticked paper/release value must then equal our value too. A later
change of a default, or a table claiming fidelity it does not have, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from lasersb.config import hparam_value

REPO = Path(__file__).resolve().parents[1]
#: Method recipes whose README must carry at least one fidelity table.
METHOD_READMES = [
    "recipes/LibriSpeech/ssft/README.md",
    "recipes/SUPERB/pr/README.md",
    "recipes/SUPERB/asr/README.md",
    "recipes/LibriSpeech-DEMAND/se/README.md",
    "recipes/VoxCeleb/dino/README.md",
    "recipes/VoxCeleb/xvector/README.md",
    "recipes/LibriSpeech/adapters/README.md",
]
MARKER = re.compile(r"<!--\s*fidelity:\s*(\S+)\s*-->")
_YAML = YAML(typ="safe")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _code(cell: str) -> str | None:
    match = re.search(r"`([^`]*)`", cell)
    return match.group(1) if match else None


def fidelity_tables(readme: Path) -> list[tuple[str, list[list[str]]]]:
    """``[(hparams file, rows)]`` of a README; rows are lists of 4 cells."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    tables = []
    for index, line in enumerate(lines):
        match = MARKER.search(line)
        if not match:
            continue
        rows, started = [], False
        for row in lines[index + 1 :]:
            if not row.strip().startswith("|"):
                if started:
                    break
                continue
            started = True
            cells = _cells(row)
            if set(cells[0]) <= {"-", ":"} or cells[0].lower() == "setting":
                continue  # header and separator
            assert len(cells) == 4, f"{readme}: fidelity rows have 4 columns: {row}"
            rows.append(cells)
        tables.append((match.group(1), rows))
    return tables


def _rows():
    for readme in METHOD_READMES:
        for hparams_file, rows in fidelity_tables(REPO / readme):
            for cells in rows:
                key = _code(cells[0])
                if key is not None:
                    yield pytest.param(hparams_file, key, cells, id=f"{hparams_file}:{key}")


@pytest.mark.parametrize("readme", METHOD_READMES)
def test_every_method_readme_has_a_fidelity_table(readme):
    tables = fidelity_tables(REPO / readme)
    assert tables, f"{readme} has no '<!-- fidelity: <hparams file> -->' table"
    for hparams_file, rows in tables:
        assert (REPO / hparams_file).is_file(), f"{readme}: {hparams_file} does not exist"
        assert sum(_code(cells[0]) is not None for cells in rows) >= 3, (readme, hparams_file)


@pytest.mark.parametrize(("hparams_file", "key", "cells"), list(_rows()))
def test_default_equals_fidelity_table(hparams_file, key, cells):
    ours = _code(cells[2])
    assert ours is not None, f"{hparams_file} {key}: 'our default' must be a backticked value"
    expected = _YAML.load(ours)
    actual = hparam_value(REPO / hparams_file, key)
    assert actual == expected, f"{hparams_file}: {key} is {actual!r}, the README says {ours}"
    if cells[3] in ("", "-") or cells[3].startswith(("—", "–")):
        paper = _code(cells[1])
        assert paper is not None and _YAML.load(paper) == expected, (
            f"{hparams_file} {key}: the table claims the paper's value ({cells[1]}) but our "
            f"default is {ours}; give the reason in 'why different'"
        )


def test_laser_wavlm_defaults_to_wavlm_base():
    assert hparam_value(REPO / "hparams/laser_wavlm.yaml", "upstream_source") == (
        "microsoft/wavlm-base"
    )
