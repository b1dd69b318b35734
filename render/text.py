"""Text from a trace is data: made safe for the terminal, for rich markup and for XML.

A trace is untrusted (tracer/traces/schema.py), and its strings (function
names, the kernel release, interface names, stack frames, drop reasons)
reach terminals and SVG files.  Control characters would move the cursor,
set the window title or clear the screen; rich would read ``[/]`` as markup;
XML 1.0 allows no control characters at all, even escaped.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 (tab and newline too: names are one line), DEL and C1, whose CSI (0x9b)
# terminals also obey.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Not allowed anywhere in XML 1.0: C0 but tab, newline and CR; U+FFFE, U+FFFF; surrogates.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _escape_control(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``: safe to print on a terminal."""
    return _CONTROL.sub(_escape_control, text) if _CONTROL.search(text) else text


def markup(text: object) -> str:
    """Any value as text for a rich markup string: printable, brackets escaped."""
    return escape(printable(str(text)))


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids replaced by U+FFFD (the caller escapes)."""
    return _NOT_XML.sub("\ufffd", text) if _NOT_XML.search(text) else text
