"""Small operations on SpeechBrain CSV manifests shared by recipes."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path


def write_manifest(path, columns, rows, extrasaction: str = "raise") -> Path:
    """Write a CSV manifest atomically: a killed run never leaves a partial file behind.

    Arguments
    ---------
    path : str or Path
        The manifest; written as ``<path>.tmp`` first, then renamed over ``path``.
    columns : Sequence[str]
        The header.
    rows : Iterable[Mapping or Sequence]
        One row per utterance: dicts keyed by column (written with :class:`csv.DictWriter`;
        ``extrasaction`` as there) or sequences in column order.
    extrasaction : str
        ``"raise"`` or ``"ignore"``: what a dict row's keys outside ``columns`` do.

    Returns
    -------
    Path
        ``path``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_manifest(d / "a.csv", ["ID", "duration"], [{"ID": "u1", "duration": 1.5}])
    >>> _ = write_manifest(d / "b.csv", ["ID", "duration"], [("u2", "2.0")])
    >>> (d / "a.csv").read_text().split(), (d / "b.csv").read_text().split()
    (['ID,duration', 'u1,1.5'], ['ID,duration', 'u2,2.0'])
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    rows = iter(rows)
    first = next(rows, None)
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        if isinstance(first, Mapping):
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction=extrasaction)
            writer.writeheader()
        else:
            writer = csv.writer(handle)
            writer.writerow(columns)
        if first is not None:
            writer.writerow(first)
            writer.writerows(rows)
    os.replace(tmp, path)
    return path


def merge_manifests(csv_paths, out_path) -> Path:
    """Concatenate CSV manifests with identical columns into one file (rewritten if stale).

    Arguments
    ---------
    csv_paths : list of str or Path
        Manifests to concatenate, in order. IDs must be unique across them.
    out_path : str or Path
        The merged manifest; it is only rewritten when older than one of the inputs.

    Returns
    -------
    Path
        ``out_path``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.csv").write_text("ID,duration\\nu1,1.0\\n")
    >>> _ = (d / "b.csv").write_text("ID,duration\\nu2,2.0\\n")
    >>> print(merge_manifests([d / "a.csv", d / "b.csv"], d / "ab.csv").read_text().strip())
    ID,duration
    u1,1.0
    u2,2.0
    """
    csv_paths = [Path(p) for p in csv_paths]
    out_path = Path(out_path)
    for path in csv_paths:
        if not path.is_file():
            raise FileNotFoundError(f"Manifest {path} does not exist: run the data preparation.")
    if out_path.exists() and all(out_path.stat().st_mtime >= p.stat().st_mtime for p in csv_paths):
        return out_path
    header, rows, seen = None, [], set()
    for path in csv_paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            this_header = next(reader)
            if header is None:
                header = this_header
            elif this_header != header:
                raise ValueError(
                    f"Manifest {path} has columns {this_header}, expected {header} as in "
                    f"{csv_paths[0]}: prepare all splits with the same options."
                )
            for row in reader:
                if row[0] in seen:
                    raise ValueError(f"Duplicate utterance ID {row[0]!r} in {path}.")
                seen.add(row[0])
                rows.append(row)
    return write_manifest(out_path, header, rows)
