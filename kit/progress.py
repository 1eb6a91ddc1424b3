"""Progress people can follow: a bar on a terminal, plain periodic lines in a log, a run-level ETA.

A tqdm bar redraws itself with carriage returns, which a log file keeps as one endless line of
frames; so bars appear only when stderr is a terminal, and otherwise a plain line is printed every
LINE_EVERY seconds. KIT_PROGRESS=bars or KIT_PROGRESS=lines forces one style (lines: CI logs of
a run under a pseudo-terminal; bars: a terminal multiplexer that hides the tty).
"""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

LINE_EVERY = 30.0  # seconds between plain progress lines when stderr is not a terminal


def use_bars() -> bool:
    forced = os.environ.get("KIT_PROGRESS", "").strip().lower()
    if forced in ("bars", "lines"):
        return forced == "bars"
    return sys.stderr.isatty()


def echo(line: str) -> None:
    """One line above any bar (tqdm.write), flushed at once (ranks under torchrun are piped)."""
    if use_bars():
        tqdm.write(line)
    else:
        print(line, flush=True)


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: short and unambiguous."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Bar:
    """Iterates `iterable` with a tqdm bar on a terminal, else plain lines every `every` seconds."""

    def __init__(
        self,
        iterable,
        *,
        desc: str,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        every: float = LINE_EVERY,
    ):
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.initial = initial
        self.enabled = enabled
        self.every = every
        self.postfix: dict[str, str] = {}
        self._tqdm = None

    def set_postfix(self, **values) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        if self._tqdm is not None:
            self._tqdm.set_postfix(self.postfix)

    def __iter__(self):
        if self.enabled and use_bars():
            self._tqdm = tqdm(
                self.iterable,
                desc=self.desc,
                leave=False,
                initial=self.initial,
                total=self.total,
                dynamic_ncols=True,
            )
            try:
                yield from self._tqdm
            finally:
                self._tqdm.close()
                self._tqdm = None
            return
        started = last = time.monotonic()
        for done, item in enumerate(self.iterable, start=self.initial + 1):
            yield item
            now = time.monotonic()
            if self.enabled and now - last >= self.every and done < self.total:
                last = now
                rate = (done - self.initial) / max(now - started, 1e-9)
                left = (self.total - done) / rate if rate > 0 else 0.0
                values = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
                echo(
                    f"{self.desc}  {done}/{self.total}  {values}  "
                    f"{duration(now - started)} elapsed, {duration(left)} left"
                )


class RunProgress:
    """The run-level view: fold k/N, epoch, elapsed and ETA for the whole run.

    The ETA is the mean epoch time so far times the epochs still to train (early stopping can only
    make the run shorter than that).
    """

    def __init__(self, run: str, folds: list[int], epochs: int, *, enabled: bool = True):
        self.run = run
        self.folds = list(folds)
        self.epochs = epochs
        self.enabled = enabled
        self.started = time.monotonic()
        self.epoch_seconds: list[float] = []

    def epoch_done(self, fold: int, epoch: int, seconds: float, stopped: bool = False) -> str:
        """Record one finished epoch; print and return the run line."""
        self.epoch_seconds.append(seconds)
        position = self.folds.index(fold) if fold in self.folds else 0
        left_in_fold = 0 if stopped else self.epochs - epoch
        left = left_in_fold + self.epochs * (len(self.folds) - position - 1)
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        line = (
            f"run {self.run}: fold {position + 1}/{len(self.folds)} (fold {fold}), epoch "
            f"{epoch}/{self.epochs}, {duration(time.monotonic() - self.started)} elapsed, "
            f"ETA {duration(mean * left)}"
        )
        if self.enabled:
            echo(line)
        return line
