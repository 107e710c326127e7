"""Progress of long work, for a terminal and for a job's log alike.

In a terminal it is tqdm's bar. In a log file (a Slurm or Snakemake job: stderr is not a terminal) a
bar redrawn at every step would write tens of megabytes on one line, so progress is one plain line at a
fixed interval (`SEMTOK_PROGRESS_SECONDS`, default 60) and one at the end:

    stage1 tokenizer-b18: 1200/200000 step (0.6%), 2.31 step/s, elapsed 0:08:40, eta 23:55:12, loss=0.4321

Lines go through the `semtok.progress` logger, so they carry the log's timestamps (semtok/utils/logs.py).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("semtok.progress")
DEFAULT_SECONDS = 60.0


def interval_seconds() -> float:
    value = os.environ.get("SEMTOK_PROGRESS_SECONDS", "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class LogProgress:
    """The subset of tqdm's interface the package uses (iteration, update, set_postfix, close, `with`),
    reporting a line at a fixed interval instead of redrawing a bar."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        **_: Any,
    ) -> None:
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.initial = total, initial, initial
        self.postfix: dict[str, Any] = {}
        self.interval = interval_seconds()
        self.started = self.last = time.monotonic()
        self.closed = False
        self.reported: int | None = None  # `n` at the last line written

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._report()

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # the final state, unless the last interval's line already said it
            if (self.n > self.initial or self.total == 0) and self.reported != self.n:
                self._report()

    def line(self) -> str:
        """The progress line of the current state."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.1f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _report(self) -> None:
        self.reported = self.n
        if not self.disable:
            log.info("%s", self.line())


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """tqdm's bar in a terminal, `LogProgress` lines in a log file. Keyword arguments are tqdm's
    (total, desc, unit, initial, disable, ...); `disable=None` (tqdm: "only in a terminal") reports in
    logs too: long work in a job's log must show how far it is."""
    kwargs["disable"] = bool(kwargs.get("disable"))
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)
    return LogProgress(iterable, **kwargs)
