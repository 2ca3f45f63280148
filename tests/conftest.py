"""Shared pytest fixtures: the embedded mini corpus and tiny randomly initialised upstreams.

Both are built locally (no network): the mini corpus is cached between runs under
``$LASERSB_CACHE`` (default ``~/.cache/lasersb``), the tiny upstreams are built once per session.
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mini_corpus():
    """Root folder of the default embedded mini corpus (generated once, then cached)."""
    from lasersb.data.mini import get_mini_corpus

    return get_mini_corpus()


@pytest.fixture(scope="session")
def tiny_upstreams(tmp_path_factory):
    """Dict ``{"hubert"|"wavlm"|"wav2vec2": local HF folder}`` of tiny random upstreams."""
    from lasersb.models.tiny_upstream import build_tiny_upstream

    root = tmp_path_factory.mktemp("tiny_upstreams")
    kinds = ("hubert", "wavlm", "wav2vec2")
    return {kind: build_tiny_upstream(kind, root / kind) for kind in kinds}


#: The reference implementations the equality tests compare against (requirements-dev.txt),
#: by import name. Without one the test cannot check its claim: it skips on a developer's
#: machine, but fails on CI (``CI`` set, as every CI service does), where a green run must mean
#: that every equality was checked.
ORACLES = {
    "dtw": "dtw-python",
    "jiwer": "jiwer",
    "librosa": "librosa",
    "triton": "triton",
}


def on_ci() -> bool:
    """Whether this run is a CI run (``CI`` set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require_oracle(module: str):
    """Import and return the reference package ``module``, one of :data:`ORACLES`.

    Missing, it skips the test (module-level calls skip the whole file), except on CI, where it
    fails with the package to install. Tests use it instead of ``pytest.importorskip`` for every
    oracle (tests/test_architecture.py checks this).
    """
    import importlib

    if module not in ORACLES:
        raise ValueError(f"{module!r} is not an oracle; known: {sorted(ORACLES)}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = (
            f"the reference {ORACLES[module]} is not installed ({err}): "
            f'pip install -e ".[test]" (requirements-dev.txt)'
        )
        if on_ci():
            pytest.fail(f"CI run without an oracle: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
