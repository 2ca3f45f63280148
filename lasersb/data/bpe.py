"""SentencePiece tokenizers (BPE, unigram or characters) for CTC ASR, with a blank at index 0.

:class:`SentencePieceTokenizer` has the interface of :class:`lasersb.data.tokenizers
.CharTokenizer` (``encode``, ``decode``, ``units``, ``decode_units``, ``vocab_size``,
``blank_index``, ``labels``) so the CTC Brains take either. Its ``vocab_size`` is fixed at
construction (``num_pieces + 1``, the blank) so a hparams file can size the CTC head before the
model is trained; :meth:`SentencePieceTokenizer.fit` trains the model on the transcripts of a
manifest once (idempotent: an existing model with the same options is loaded).

``model_type="char"`` gives a character vocabulary read from the data: the character option
for languages beyond A-Z (French accents in Common Voice, for example).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

BLANK_TOKEN = "<blank>"


class SentencePieceTokenizer:
    """CTC tokenizer backed by a SentencePiece model; CTC blank = 0, pieces shifted by one.

    Arguments
    ---------
    model_prefix : str or Path
        Where the model is (or will be) written: ``<model_prefix>.model`` / ``.vocab``.
    num_pieces : int
        SentencePiece vocabulary size (``vocab_size`` is one more, for the blank). With
        ``model_type="char"`` it is an upper bound: the alphabet of the data may be smaller
        (the extra CTC outputs are then never targets).
    model_type : str
        ``"bpe"`` (default), ``"unigram"`` or ``"char"``.
    character_coverage : float
        SentencePiece's character coverage (1.0 for small alphabets).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "train.csv").write_text(
    ...     "ID,wrd\\n" + "".join(f"u{i},THE CAT SAT ON THE MAT {i % 3}\\n" for i in range(30)))
    >>> tok = SentencePieceTokenizer(root / "bpe20", num_pieces=20)
    >>> tok.vocab_size, tok.blank_index
    (21, 0)
    >>> tok = tok.fit(root / "train.csv")
    >>> ids = tok.encode("the cat sat")
    >>> 0 in ids, tok.decode(ids), tok.units("the cat"), tok.decode_units(ids)
    (False, 'THE CAT SAT', ['THE', 'CAT'], ['THE', 'CAT', 'SAT'])
    """

    def __init__(self, model_prefix, num_pieces=256, model_type="bpe", character_coverage=1.0):
        if model_type not in ("bpe", "unigram", "char"):
            raise ValueError(f"model_type must be bpe, unigram or char, got {model_type!r}.")
        self.model_prefix = Path(model_prefix)
        self.num_pieces = int(num_pieces)
        self.model_type = model_type
        self.character_coverage = float(character_coverage)
        self.blank_index = 0
        self._processor = None

    @property
    def vocab_size(self) -> int:
        """Number of CTC classes (pieces + blank)."""
        return self.num_pieces + 1

    @property
    def model_path(self) -> Path:
        """The ``.model`` file."""
        return self.model_prefix.with_name(self.model_prefix.name + ".model")

    @property
    def labels(self) -> tuple[str, ...]:
        """Blank then the pieces, by CTC index."""
        sp = self.processor
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        pieces += [f"<unused{i}>" for i in range(len(pieces), self.num_pieces)]
        return (BLANK_TOKEN, *pieces)

    @property
    def processor(self):
        """The loaded ``sentencepiece.SentencePieceProcessor`` (loads the model on first use)."""
        if self._processor is None:
            if not self.model_path.is_file():
                raise FileNotFoundError(
                    f"SentencePiece model {self.model_path} not found: call "
                    "tokenizer.fit(train_csv) (the recipe does it after data preparation)."
                )
            import sentencepiece as spm

            processor = spm.SentencePieceProcessor(model_file=str(self.model_path))
            size = processor.get_piece_size()
            if size > self.num_pieces or (size < self.num_pieces and self.model_type != "char"):
                raise ValueError(
                    f"{self.model_path} has {processor.get_piece_size()} pieces, expected "
                    f"{self.num_pieces}; delete it or set the vocabulary size to match."
                )
            self._processor = processor
        return self._processor

    def _options(self) -> dict:
        return {
            "num_pieces": self.num_pieces,
            "model_type": self.model_type,
            "character_coverage": self.character_coverage,
        }

    def fit(self, csv_path, column="wrd"):
        """Train the model on the ``column`` transcripts of a manifest (skipped when done).

        Returns ``self``.
        """
        import sentencepiece as spm

        csv_path = Path(csv_path)
        options_file = self.model_prefix.with_name(self.model_prefix.name + ".json")
        options = {**self._options(), "train_csv": str(csv_path.resolve()), "column": column}
        if self.model_path.is_file() and options_file.is_file():
            if json.loads(options_file.read_text()) == options:
                self._processor = None
                _ = self.processor
                return self
        if not csv_path.is_file():
            raise FileNotFoundError(f"Manifest {csv_path} not found: run the data preparation.")
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or []):
                raise ValueError(f"Manifest {csv_path} has no {column!r} column for the tokenizer.")
            texts = [row[column].upper() for row in reader if row[column].strip()]
        if not texts:
            raise ValueError(f"Manifest {csv_path} has no transcripts to train a tokenizer on.")
        self.model_prefix.parent.mkdir(parents=True, exist_ok=True)
        text_file = self.model_prefix.with_name(self.model_prefix.name + ".txt")
        text_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_file),
                model_prefix=str(self.model_prefix),
                vocab_size=self.num_pieces,
                model_type=self.model_type,
                character_coverage=self.character_coverage,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as error:
            raise ValueError(
                f"Training a {self.num_pieces}-piece {self.model_type} model on {csv_path} "
                f"failed ({error}). With little text, lower the vocabulary size "
                "(bpe_vocab_size in the hparams)."
            ) from error
        options_file.write_text(json.dumps(options, indent=2) + "\n")
        self._processor = None
        _ = self.processor
        return self

    def encode(self, text: str) -> list[int]:
        """Transcript (upper-cased) -> CTC target ids (no blank)."""
        return [i + 1 for i in self.processor.encode(str(text).upper(), out_type=int)]

    def decode(self, ids) -> str:
        """CTC ids (blanks dropped) -> text."""
        pieces = [int(i) - 1 for i in ids if int(i) != self.blank_index]
        return " ".join(self.processor.decode(pieces).split())

    def units(self, text: str) -> list[str]:
        """Scoring units (words) of a reference transcript."""
        return str(text).upper().split()

    def decode_units(self, ids) -> list[str]:
        """Scoring units (words) of a hypothesis given as ids."""
        return self.decode(ids).split()

    def __repr__(self) -> str:
        return (
            f"SentencePieceTokenizer({self.model_type}, num_pieces={self.num_pieces}, "
            f"model={self.model_path})"
        )


def build_tokenizer(token_type="char", model_prefix=None, num_pieces=256):
    """Tokenizer factory for hparams files: ``char`` (A-Z), ``bpe``, ``unigram`` or ``spm_char``.

    ``char`` is :class:`lasersb.data.tokenizers.CharTokenizer` (29 classes, English);
    the others are :class:`SentencePieceTokenizer` (call ``fit`` after data preparation).

    Example
    -------
    >>> build_tokenizer("char").vocab_size
    29
    >>> build_tokenizer("bpe", "/tmp/never_written", 100).vocab_size
    101
    """
    if token_type == "char":
        from lasersb.data.tokenizers import CharTokenizer

        return CharTokenizer()
    model_types = {"bpe": "bpe", "unigram": "unigram", "spm_char": "char"}
    if token_type not in model_types:
        raise ValueError(f"token_type must be char, bpe, unigram or spm_char, got {token_type!r}.")
    if model_prefix is None:
        raise ValueError(f"token_type={token_type!r} needs a model_prefix to write the model.")
    return SentencePieceTokenizer(model_prefix, num_pieces, model_types[token_type])
