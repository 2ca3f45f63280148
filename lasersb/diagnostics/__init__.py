"""Diagnostics of SSL representations (e.g. how much of a frame-wise loss is due to position).

Example
-------
>>> from lasersb.diagnostics import positional_shortcut, format_positional_report
>>> callable(positional_shortcut), callable(format_positional_report)
(True, True)
"""

from lasersb.diagnostics.positional import format_positional_report, positional_shortcut

__all__ = ["format_positional_report", "positional_shortcut"]
