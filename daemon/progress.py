"""Progress of a long command on a terminal: one line on stderr, rewritten in place.

`xai-meter reconcile` reads xAI's bill and the ledger day by day; on a big ledger or a slow
Management API that takes a while, and a silent terminal looks hung. `TerminalProgress` shows
one line (``reconcile: day 3/7 (2026-11-25)…``), each update replacing the last (a carriage
return and the "erase to end of line" sequence), cut to the terminal's width so it never
wraps (a wrapped line cannot be rewritten), and erased when the work ends, so what the command
prints on stdout afterwards starts on a clean line. When the stream is not a terminal (a pipe, a
file, a log collector) it writes nothing at all: JSON, CSV and logs stay clean.

Not click's ``progressbar``: this shows a sentence, not a bar, and a stage without a count
(the bill's fetch) as well as one with; click's writes its label even off a terminal (unless
told ``hidden``).
The daemon's own long work (the unpriced-call backfill) logs progress lines instead
(`daemon.background`): its stderr is a log stream, not a terminal to draw on.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Final, TextIO

ERASE: Final = "\r\x1b[K"  # to the line's start, erase to its end (ECMA-48 EL 0)


class TerminalProgress:
    """One rewritable line on `stream` (default ``sys.stderr``) while it is a terminal.

    ``enabled``: None (the default) asks ``stream.isatty()``. Use as a context manager, or call
    `close` (idempotent) when the work ends. Not thread-safe: one command, one thread."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self._shown = False

    def show(self, text: str) -> None:
        """Replace the line with `text` (cut to the terminal's width less one column)."""
        if not self.enabled:
            return
        width = _columns(self.stream)
        if width > 1 and len(text) >= width:
            text = text[: width - 2] + "…"
        self.stream.write(ERASE + text)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the line, if one is shown."""
        if self._shown:
            self.stream.write(ERASE)
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: no terminal to draw on
        return False


def _columns(stream: TextIO) -> int:
    """The terminal's width in columns; 0 when unknown (a pty nobody sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0
