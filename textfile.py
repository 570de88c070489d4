"""Reading a user's text file (calibration text, a metric library) with errors that say what is wrong.

A binary or mis-encoded file used to surface as a UnicodeDecodeError traceback; here it
is a PruneDSLError naming the file and the byte offset of the first bad byte.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import PruneDSLError


def read_text_file(path: str | os.PathLike, what: str, *, error: type[PruneDSLError] = PruneDSLError,
                   newline: str | None = None) -> str:
    """The UTF-8 text of ``path``; ``what`` names the file's role in the message ("--calib-data")."""
    file = Path(path).expanduser()
    if not file.exists():
        raise error(f"{what}: file not found: {file}")
    if not file.is_file():
        raise error(f"{what}: {file} is not a regular file")
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise error(f"{what}: cannot read {file}: {e.strerror or e}") from None
    nul = raw.find(b"\0", 0, 8192)
    if nul >= 0:
        raise error(f"{what}: {file} looks like a binary file (NUL byte at offset {nul}), not UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what}: {file} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at byte offset "
                    f"{e.start})", hint="convert it, e.g. iconv -f latin1 -t utf-8") from None
    if newline is None:  # universal newlines, as open() would give
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
