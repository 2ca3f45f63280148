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
