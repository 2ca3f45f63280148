"""Loading hyperparameter files, with single inheritance between method-level YAML files.

A YAML file may start with ``inherit: <path>`` (relative to itself). Its other top-level keys
are then applied as overrides to the parent file, and command-line overrides are applied last.
This keeps variants (``hparams/laser_wavlm.yaml``) as a short list of differences instead of a
near-copy of the whole parent file (``hparams/laser.yaml``).
"""

from __future__ import annotations

import io
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML

INHERIT_KEY = "inherit"


def _as_override_dict(overrides) -> dict:
    """Parse overrides given as a YAML string, a dict or None into a plain dict."""
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    yaml = YAML(typ="rt")
    parsed = yaml.load(overrides)
    return dict(parsed or {})


def _dump(mapping) -> str:
    yaml = YAML(typ="rt")
    stream = io.StringIO()
    yaml.dump(mapping, stream)
    return stream.getvalue()


def flatten_hparams_text(path, overrides=None) -> tuple[str, str]:
    """Return ``(base_yaml_text, overrides_yaml_text)`` after following ``inherit:`` links.

    Arguments
    ---------
    path : str or Path
        The hyperparameter file to load.
    overrides : str or dict, optional
        Command-line overrides (highest priority).

    Returns
    -------
    tuple of str
        The text of the root parent file and the merged overrides as YAML text.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("a: 1\\nb: !ref <a>\\n")
    >>> _ = (d / "child.yaml").write_text("inherit: base.yaml\\na: 2\\n")
    >>> base, over = flatten_hparams_text(d / "child.yaml", {"a": 3})
    >>> over.strip()
    'a: 3'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Hyperparameter file not found: {path}")
    chain = []
    seen = set()
    current = path
    yaml = YAML(typ="rt")
    while True:
        resolved = current.resolve()
        if resolved in seen:
            raise ValueError(f"Circular 'inherit:' chain in hyperparameter files at {current}")
        seen.add(resolved)
        text = current.read_text(encoding="utf-8")
        data = yaml.load(text) or {}
        if INHERIT_KEY not in data:
            base_text = text
            break
        parent = current.parent / str(data[INHERIT_KEY])
        if not parent.is_file():
            raise FileNotFoundError(
                f"{current} inherits from {parent}, which does not exist. "
                f"Fix the 'inherit:' path (it is relative to {current.parent})."
            )
        child = {k: v for k, v in data.items() if k != INHERIT_KEY}
        chain.append(child)
        current = parent
    merged = {}
    # Farthest child first so that nearer files win, command line last.
    for child in reversed(chain):
        merged.update(child)
    if merged:
        base_text, merged = _add_new_keys(base_text, merged)
    merged.update(_as_override_dict(overrides))
    return base_text, (_dump(merged) if merged else "")


def _add_new_keys(base_text: str, children: dict) -> tuple[str, dict]:
    """Move the keys an ``inherit:`` child *adds* into the base text; the rest stay overrides.

    hyperpyyaml overrides must name existing keys, so a child that defines a new object (SCORE's
    ``target_upstream``) or a mapping with new entries (its ``modules``) has those keys written
    into the base document instead (a mapping is then replaced, not merged).

    Example
    -------
    >>> base, over = _add_new_keys("a: 1\\nm: {x: 1}\\n", {"a": 2, "b": 3, "m": {"x": 1, "y": 2}})
    >>> print(base.strip())
    a: 1
    m:
      x: 1
      y: 2
    b: 3
    >>> over
    {'a': 2}
    """
    yaml = YAML(typ="rt")
    base = yaml.load(base_text) or {}
    overrides, added = {}, False
    for key, value in children.items():
        old = base.get(key) if hasattr(base, "get") else None
        new_entries = (
            isinstance(value, dict) and isinstance(old, dict) and bool(set(value) - set(old))
        )
        if key not in base or new_entries:
            base[key] = value
            added = True
        else:
            overrides[key] = value
    return (_dump(base) if added else base_text), overrides


def load_hparams(path, overrides=None) -> dict:
    """Load a hyperpyyaml file, following ``inherit:``, with overrides applied.

    Arguments
    ---------
    path : str or Path
        Hyperparameter file (for example ``hparams/laser_wavlm.yaml``).
    overrides : str or dict, optional
        Overrides, as returned by ``speechbrain.parse_arguments`` (YAML text) or a dict.

    Returns
    -------
    dict
        The loaded hyperparameters (objects instantiated).

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("a: 1\\nb: !ref <a> + 1\\n")
    >>> _ = (d / "child.yaml").write_text("inherit: base.yaml\\na: 5\\n")
    >>> load_hparams(d / "child.yaml")["b"]
    6
    >>> load_hparams(d / "child.yaml", "a: 7")["b"]
    8
    """
    base_text, override_text = flatten_hparams_text(path, overrides)
    return load_hyperpyyaml(base_text, override_text or None)


def resolve_hparams_text(path, overrides=None) -> str:
    """Return the fully resolved YAML text (references resolved, objects not built).

    Useful to save next to the results, as SpeechBrain's ``create_experiment_directory`` does.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("a: 1\\nb: !ref <a>\\n")
    >>> "b: 1" in resolve_hparams_text(d / "base.yaml")
    True
    """
    base_text, override_text = flatten_hparams_text(path, overrides)
    return resolve_references(base_text, override_text or None).getvalue()


def hparam_value(path, key, overrides=None):
    """Return the value of one top-level key, without building any object.

    Handy in shell scripts (for example to read ``upstream_source`` without loading the model).
    Tagged values (``!new:``...) come back as the plain YAML structure.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("name: hubert\\nout: !ref results/<name>\\n")
    >>> _ = (d / "child.yaml").write_text("inherit: base.yaml\\nname: wavlm\\n")
    >>> hparam_value(d / "child.yaml", "out")
    'results/wavlm'
    """
    yaml = YAML(typ="rt")
    base_text, override_text = flatten_hparams_text(path, overrides)
    base, given = yaml.load(base_text) or {}, yaml.load(override_text or "{}") or {}

    # Unfilled !PLACEHOLDERs would stop the resolution; they cannot matter for other keys.
    def is_placeholder(value):
        return getattr(getattr(value, "tag", None), "value", None) == "!PLACEHOLDER"

    fill = {name: "__PLACEHOLDER__" for name, value in base.items() if is_placeholder(value)}
    # Placeholders may also come from an inherit: child (they are then among the overrides).
    fill.update({k: ("__PLACEHOLDER__" if is_placeholder(v) else v) for k, v in given.items()})
    data = yaml.load(resolve_references(base_text, _dump(fill)).getvalue())
    if key not in data:
        raise KeyError(f"{path} has no key {key!r}.")
    return data[key]


def main(argv=None):
    """``python -m lasersb.config FILE KEY [--key=value ...]``: print one hyperparameter value."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("hparams_file")
    parser.add_argument("key")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        name, _, value = item.lstrip("-").partition("=")
        overrides[name] = YAML(typ="safe").load(value)
    print(hparam_value(args.hparams_file, args.key, overrides or None))


if __name__ == "__main__":
    main()
