"""Character and phone tokenizers for CTC downstream tasks (SUPERB ASR and PR).

:class:`CharTokenizer` maps LibriSpeech transcripts to the 29-symbol character vocabulary of
SUPERB ASR: the CTC blank (index 0), the word boundary ``|``, the 26 letters and the
apostrophe. :class:`PhoneTokenizer` maps ARPAbet phone sequences (as in the LibriSpeech g2p
lexicon and the ``phn`` column of the LibriSpeech manifests) to a fixed inventory: the 69 phones
with stress digits on the vowels, plus ``SIL`` and ``SPN``, is s3prl's SUPERB 'libriphone'
vocabulary (``downstream/ctc/vocab/phoneme.txt``); the 39 CMU phones without stress are an
option (``keep_stress=False``).
A fixed inventory makes models trained on different corpora or manifests comparable; an
inventory read from manifests is available through :meth:`PhoneTokenizer.from_manifests`.

Both tokenizers share one interface: ``encode`` (text or phones to ids), ``decode`` (ids to
text or phones), ``units`` (the scoring units of a reference: words or phones),
``decode_units`` (the scoring units of ids), ``vocab_size``, ``blank_index`` and ``labels``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

BLANK_TOKEN = "<blank>"
WORD_BOUNDARY = "|"

#: The 15 ARPAbet vowels (they carry a stress digit 0/1/2 in the CMU dictionary).
ARPABET_VOWELS = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)  # fmt: skip
#: The 24 ARPAbet consonants.
ARPABET_CONSONANTS = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
    "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

#: The two non-phone symbols of s3prl's libriphone vocabulary (``downstream/ctc/vocab/
#: phoneme.txt``: SIL, SPN, then the 69 stressed phones). The g2p lexicon never produces them,
#: so they are output classes that are never a target, as in s3prl.
S3PRL_EXTRA_SYMBOLS = ("SIL", "SPN")

_STRESS = re.compile(r"^([A-Z]+)([0-2])$")


def arpabet_inventory(keep_stress: bool = False) -> tuple[str, ...]:
    """Return the fixed ARPAbet phone inventory, sorted.

    Arguments
    ---------
    keep_stress : bool
        ``False``: the 39 CMU phones; ``True``: each vowel with stress 0, 1 and 2 (69 phones).

    Returns
    -------
    tuple of str

    Example
    -------
    >>> len(arpabet_inventory()), len(arpabet_inventory(keep_stress=True))
    (39, 69)
    >>> arpabet_inventory(keep_stress=True)[:4]
    ('AA0', 'AA1', 'AA2', 'AE0')
    """
    if keep_stress:
        vowels = [f"{v}{s}" for v in ARPABET_VOWELS for s in "012"]
    else:
        vowels = list(ARPABET_VOWELS)
    return tuple(sorted(vowels + list(ARPABET_CONSONANTS)))


def strip_stress(phone: str) -> str:
    """Remove the stress digit of an ARPAbet vowel (``"AH0"`` -> ``"AH"``).

    Example
    -------
    >>> strip_stress("AH0"), strip_stress("K")
    ('AH', 'K')
    """
    match = _STRESS.match(phone)
    return match.group(1) if match else phone


class CharTokenizer:
    """Character tokenizer of SUPERB ASR: blank, word boundary, 26 letters, apostrophe.

    Index 0 is the CTC blank, index 1 the word boundary ``|`` (a space in the text), then
    ``A``-``Z`` and ``'``. Text is upper-cased and runs of white space become one boundary.

    Arguments
    ---------
    unknown : str
        What to do with characters outside the vocabulary: ``"error"`` (default, the message
        names the character and the text) or ``"skip"`` (drop them).

    Example
    -------
    >>> tok = CharTokenizer()
    >>> tok.vocab_size, tok.blank_index
    (29, 0)
    >>> ids = tok.encode("Hello  world's")
    >>> ids[:6]
    [9, 6, 13, 13, 16, 1]
    >>> tok.decode(ids)
    "HELLO WORLD'S"
    >>> tok.units("hello world"), tok.decode_units(ids)
    (['HELLO', 'WORLD'], ['HELLO', "WORLD'S"])
    """

    def __init__(self, unknown: str = "error"):
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        self.unknown = unknown
        self.labels = (BLANK_TOKEN, WORD_BOUNDARY, *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "'")
        self._index = {label: i for i, label in enumerate(self.labels)}
        self.blank_index = 0
        self.word_boundary_index = 1

    @property
    def vocab_size(self) -> int:
        """Number of output classes, blank included."""
        return len(self.labels)

    def encode(self, text: str) -> list[int]:
        """Map a transcript to token ids (no blank, ``|`` between words).

        Arguments
        ---------
        text : str
            Transcript; case and repeated white space are normalised.

        Returns
        -------
        list of int
        """
        words = str(text).upper().split()
        ids: list[int] = []
        for w, word in enumerate(words):
            if w > 0:
                ids.append(self.word_boundary_index)
            for char in word:
                index = self._index.get(char)
                if index is None or index < 2:
                    if self.unknown == "skip":
                        continue
                    raise ValueError(
                        f"Character {char!r} in transcript {text!r} is not in the ASR "
                        "vocabulary (A-Z, apostrophe, space). Normalise the transcript or "
                        "build the tokenizer with CharTokenizer(unknown='skip')."
                    )
                ids.append(index)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Map token ids back to text; blanks are dropped, boundaries become single spaces.

        Arguments
        ---------
        ids : Iterable[int]
            Token ids (for example a CTC greedy path after collapsing repeats).

        Returns
        -------
        str
        """
        chars = []
        for i in ids:
            i = int(i)
            if i == self.blank_index:
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"Token id {i} is outside the vocabulary [0, {self.vocab_size})")
            chars.append(" " if i == self.word_boundary_index else self.labels[i])
        return " ".join("".join(chars).split())

    def units(self, text: str) -> list[str]:
        """Scoring units (words) of a reference transcript."""
        return str(text).upper().split()

    def decode_units(self, ids: Iterable[int]) -> list[str]:
        """Scoring units (words) of a hypothesis given as token ids."""
        return self.decode(ids).split()

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class PhoneTokenizer:
    """ARPAbet phone tokenizer for phoneme recognition (SUPERB 'libriphone').

    Index 0 is the CTC blank, then ``extra_symbols``, then the phones of the inventory in
    sorted order. With ``keep_stress=False`` stress digits are stripped on encoding
    (``AH0`` -> ``AH``).

    Arguments
    ---------
    keep_stress : bool
        Keep the stress digits of vowels (69 phones) or remove them (39 phones).
    phones : Sequence[str], optional
        An explicit inventory (for example from :meth:`from_manifests`); default: the fixed
        ARPAbet inventory, so that models trained on different data are comparable.
    extra_symbols : Sequence[str]
        Output symbols placed before the phones (s3prl's libriphone vocabulary:
        :data:`S3PRL_EXTRA_SYMBOLS`, ``("SIL", "SPN")``).

    Example
    -------
    >>> tok = PhoneTokenizer()
    >>> tok.vocab_size, tok.blank_index
    (40, 0)
    >>> s3prl = PhoneTokenizer(keep_stress=True, extra_symbols=S3PRL_EXTRA_SYMBOLS)
    >>> s3prl.vocab_size, s3prl.labels[:4]
    (72, ('<blank>', 'SIL', 'SPN', 'AA0'))
    >>> ids = tok.encode("HH AH0 L OW1")
    >>> tok.decode(ids)
    ['HH', 'AH', 'L', 'OW']
    >>> PhoneTokenizer(keep_stress=True).decode(PhoneTokenizer(keep_stress=True).encode(
    ...     ["HH", "AH0", "L", "OW1"]))
    ['HH', 'AH0', 'L', 'OW1']
    """

    def __init__(
        self,
        keep_stress: bool = False,
        phones: Sequence[str] | None = None,
        extra_symbols: Sequence[str] = (),
    ):
        self.keep_stress = bool(keep_stress)
        if phones is None:
            phones = arpabet_inventory(self.keep_stress)
        else:
            phones = [self._normalise(p) for p in phones]
            phones = tuple(sorted(set(phones)))
        if not phones:
            raise ValueError("PhoneTokenizer needs at least one phone")
        extra = tuple(str(x).strip().upper() for x in extra_symbols)
        phones = tuple(p for p in phones if p not in extra)
        self.labels = (BLANK_TOKEN, *extra, *phones)
        self._index = {label: i for i, label in enumerate(self.labels)}
        self.blank_index = 0

    @classmethod
    def from_manifests(cls, csv_paths, keep_stress: bool = False, column: str = "phn"):
        """Build the inventory from the ``phn`` column of one or more manifest CSV files.

        Arguments
        ---------
        csv_paths : str, Path or list of them
            Manifest files (``data_prep.librispeech_prepare`` format).
        keep_stress : bool
            Keep vowel stress digits.
        column : str
            Column holding space-separated phones.

        Returns
        -------
        PhoneTokenizer

        Example
        -------
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
        >>> _ = f.write_text("ID,phn\\nu1,K AE1 T\\nu2,D AO1 G\\n")
        >>> PhoneTokenizer.from_manifests(f).labels
        ('<blank>', 'AE', 'AO', 'D', 'G', 'K', 'T')
        """
        if isinstance(csv_paths, (str, Path)):
            csv_paths = [csv_paths]
        phones = set()
        for path in csv_paths:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"Manifest {path} not found: run data preparation first")
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if column not in (reader.fieldnames or []):
                    raise ValueError(
                        f"Manifest {path} has no '{column}' column: prepare LibriSpeech with "
                        "a lexicon (lexicon_file=...) to get phone transcriptions."
                    )
                for row in reader:
                    phones.update(row[column].split())
        return cls(keep_stress=keep_stress, phones=sorted(phones))

    @property
    def vocab_size(self) -> int:
        """Number of output classes, blank included."""
        return len(self.labels)

    def _normalise(self, phone: str) -> str:
        phone = str(phone).strip().upper()
        return phone if self.keep_stress else strip_stress(phone)

    def _as_phones(self, phones) -> list[str]:
        if isinstance(phones, str):
            phones = phones.split()
        return [self._normalise(p) for p in phones]

    def encode(self, phones) -> list[int]:
        """Map phones (a list or a space-separated string) to token ids.

        Arguments
        ---------
        phones : Sequence[str] or str
            ARPAbet phones, with or without stress digits.

        Returns
        -------
        list of int
        """
        ids = []
        for phone in self._as_phones(phones):
            index = self._index.get(phone)
            if index is None or index == self.blank_index:
                hint = (
                    " (stress digits are kept: a vowel needs its 0/1/2 digit)"
                    if self.keep_stress
                    else ""
                )
                raise ValueError(
                    f"Phone {phone!r} is not in the {self.vocab_size - 1}-phone ARPAbet "
                    f"inventory{hint}. Check the lexicon used for data preparation."
                )
            ids.append(index)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map token ids to phones; blanks are dropped.

        Arguments
        ---------
        ids : Iterable[int]

        Returns
        -------
        list of str
        """
        phones = []
        for i in ids:
            i = int(i)
            if i == self.blank_index:
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"Token id {i} is outside the vocabulary [0, {self.vocab_size})")
            phones.append(self.labels[i])
        return phones

    def units(self, phones) -> list[str]:
        """Scoring units (phones, normalised for stress) of a reference."""
        return self._as_phones(phones)

    def decode_units(self, ids: Iterable[int]) -> list[str]:
        """Scoring units (phones) of a hypothesis given as token ids."""
        return self.decode(ids)

    def __repr__(self) -> str:
        return f"PhoneTokenizer(keep_stress={self.keep_stress}, vocab_size={self.vocab_size})"
