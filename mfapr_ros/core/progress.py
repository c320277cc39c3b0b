"""Progress reporting for long commands (``mfapr train``, ``eval-bag``, ``synth``, ``play``, the demo): one helper.

Why: a progress bar redraws one line with carriage returns. On a terminal that is what a user wants; in a file (CI
logs, ``make demo > log``, ``ros2 launch`` output, journald, docker logs) it becomes one unreadable line of
hundreds of ``\\r`` updates (the demo log was 113 kB). So :func:`progress` returns a tqdm bar when the stream is a
terminal and otherwise a :class:`LineProgress` that writes one plain line per interval — every ``interval_s``
seconds (10 s) or every ``step`` of the total (10 %), whichever comes first, plus a final line — with the same
figures (count, total, percentage, rate, the caller's postfix). Both have the tqdm subset the callers use:
``update``, ``set_postfix``, ``set_postfix_str``, ``close`` (and a context manager).

:class:`StatusLine` is the same policy for callers that format their own status text (``mfapr synth``): ``\\r``-updated
on a terminal, throttled plain lines otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

#: plain-line policy: at most one line per this many seconds, unless a step of the total was crossed
INTERVAL_S = 10.0
#: ... and one line each time this fraction of the total is done
STEP = 0.1


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (a closed or odd stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _fmt_count(n: float) -> str:
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


class _Throttle:
    """When to write a plain line: the first update, every ``step`` of ``total``, every ``interval_s``."""

    def __init__(self, total: float | None, interval_s: float, step: float, clock: Callable[[], float]) -> None:
        self.total, self.interval_s, self.step, self._clock = total, interval_s, step, clock
        self._last_t: float | None = None
        self._next_step = 1  # the next multiple of ``step`` to report (an integer: no float drift at 30 %)

    def due(self, n: float) -> bool:
        now = self._clock()
        if self._last_t is None:
            self._last_t = now
            return True
        crossed = False
        if self.total and self.step > 0 and n / self.total >= self._next_step * self.step - 1e-9:
            while n / self.total >= self._next_step * self.step - 1e-9:
                self._next_step += 1
            crossed = True
        if crossed or now - self._last_t >= self.interval_s:
            self._last_t = now
            return True
        return False


class LineProgress:
    """tqdm's interface, written as plain lines (module docstring): ``desc: n/total unit (p %), r unit/s, elapsed
    t s, postfix``."""

    def __init__(self, total: float | None, desc: str, unit: str = "it", *, initial: float = 0,
                 file: TextIO | None = None, interval_s: float = INTERVAL_S, step: float = STEP,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self._initial = initial
        self._file = file if file is not None else sys.stderr
        self._clock = clock
        self._t0 = clock()
        self._postfix = ""
        self._throttle = _Throttle(total, interval_s, step, clock)
        self._written: tuple[float, str] | None = None  # (n, postfix) of the last line written
        self._closed = False

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._throttle.due(self.n):
            self._write()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kw: Any) -> None:
        items = {**(ordered_dict or {}), **kw}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def line(self) -> str:
        """The current figures as one line (what is written)."""
        el = self._clock() - self._t0
        rate = (self.n - self._initial) / el if el > 0 else 0.0
        count = f"{_fmt_count(self.n)}/{_fmt_count(self.total)}" if self.total else _fmt_count(self.n)
        pct = f" ({100.0 * self.n / self.total:.0f} %)" if self.total else ""
        post = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {count} {self.unit}{pct}, {rate:.1f} {self.unit}/s, elapsed {el:.0f} s{post}"

    def _write(self) -> None:
        self._written = (self.n, self._postfix)
        try:
            self._file.write(self.line() + "\n")
            self._file.flush()
        except (ValueError, OSError):  # the stream was closed under us: progress is never worth a crash
            pass

    def close(self) -> None:
        """Write the final figures (unless the last line already showed them); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._written != (self.n, self._postfix):
            self._write()


def progress(total: float | None, desc: str, unit: str = "it", *, initial: float = 0, file: TextIO | None = None,
             enabled: bool = True, tty: bool | None = None, interval_s: float = INTERVAL_S,
             step: float = STEP) -> Any:
    """A progress reporter: a tqdm bar on a terminal, a :class:`LineProgress` otherwise, ``None`` when disabled.

    ``file`` defaults to stderr; ``tty`` overrides the terminal check (tests)."""
    if not enabled:
        return None
    stream = file if file is not None else sys.stderr
    if tty if tty is not None else is_terminal(stream):
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency; without it, plain lines
            pass
        else:
            return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True,
                        mininterval=0.5, leave=True)
    return LineProgress(total, desc, unit, initial=initial, file=stream, interval_s=interval_s, step=step)


class StatusLine:
    """A caller-formatted status: ``\\r``-updated on a terminal, else a plain line when due (first, every ``step`` of
    the work by ``fraction``, every ``interval_s``), and the last status on :meth:`close` when not yet written."""

    def __init__(self, file: TextIO | None = None, *, tty: bool | None = None, interval_s: float = INTERVAL_S,
                 step: float = STEP, clock: Callable[[], float] = time.monotonic) -> None:
        self._file = file if file is not None else sys.stderr
        self.tty = tty if tty is not None else is_terminal(self._file)
        self._throttle = _Throttle(1.0, interval_s, step, clock)
        self._last: str | None = None
        self._written = True

    def __call__(self, line: str, fraction: float | None = None) -> None:
        self._last = line
        if self.tty:
            self._file.write("\r" + line)
            self._file.flush()
            self._written = True
            return
        self._written = False
        if self._throttle.due(fraction if fraction is not None else 0.0):
            self._file.write(line + "\n")
            self._file.flush()
            self._written = True

    def close(self) -> None:
        """End the status: a newline after a terminal line, or the last status if it was throttled away."""
        if self.tty and self._last is not None:
            self._file.write("\n")
        elif not self._written and self._last is not None:
            self._file.write(self._last + "\n")
        self._written, self._last = True, None
        self._file.flush()
