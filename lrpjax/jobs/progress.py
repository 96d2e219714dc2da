"""Progress of a job on stderr: a tqdm bar on a terminal, a log line every ``LOG_EVERY_S`` seconds
otherwise, or nothing."""
from __future__ import annotations

import sys
import time
from typing import Optional

from tqdm.auto import tqdm

from lrpjax.jobs import spec as settings   # LOG_EVERY_S, read when used (users may change it)
from lrpjax.jobs.spec import JobError

MODES = ("tqdm", "log", "none")


class Progress:
    """Counts examples done (``explained`` or skipped / bad) and shows the rate and an ETA.

    Args:
      mode: ``None`` (tqdm on a terminal, else log lines), ``True``/``"tqdm"``, ``"log"``,
        ``False``/``"none"``.
      total: examples expected (None if unknown: no ETA).
      desc: the prefix of the bar / log lines.
    """

    def __init__(self, mode, total: Optional[int], desc: str):
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), time.perf_counter()
        self.explained = 0
        self.bar = None
        if mode is None:
            mode = "tqdm" if sys.stderr.isatty() else "log"
        elif mode is True:
            mode = "tqdm"
        elif mode is False:
            mode = "none"
        if mode not in MODES:
            raise JobError(f"progress must be None (auto), True, False, 'tqdm', 'log' or 'none', "
                           f"got {mode!r}.")
        if mode == "tqdm":
            self.bar = tqdm(total=total, unit="ex", desc=desc, file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)
        self.mode, self.desc = mode, desc

    def update(self, n: int, explained: bool = True) -> None:
        self.done += n
        if explained:
            self.explained += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and time.perf_counter() - self.last >= settings.LOG_EVERY_S:
            self.last = time.perf_counter()
            self.log()

    def log(self, prefix: str = "") -> None:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.explained / dt
        tot = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0 and self.done < self.total:
            eta = f", ETA {_fmt_s((self.total - self.done) / rate)}"
        print(f"[{self.desc}] {prefix}{self.done}{tot} examples, {rate:.1f} ex/s{eta}", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "log":
            self.log("done: ")


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
