"""Small operations on SpeechBrain CSV manifests shared by recipes."""

from __future__ import annotations

import csv
from pathlib import Path


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
    tmp = out_path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(out_path)
    return out_path
