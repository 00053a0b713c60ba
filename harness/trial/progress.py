"""One line every train.log_every steps (rank 0): loss, step/s, ETA.

In a sweep the driver sends a trial's stdout to trials/<n>/log.txt and keeps its own console quiet
(HARNESS_QUIET=1), so an hour-long trial shows its progress there; a single run prints it on the
console, above tqdm's bar when the bar is on.
"""
from __future__ import annotations

import datetime
import time


class Progress:
    def __init__(self, every: int, total: int, start_step: int = 0, write=print):
        self.every, self.total, self.write = every, total, write
        self.t0 = self.t_last = time.perf_counter()
        self.start = self.last = start_step  # a resumed trial counts its rate from where it started

    def step(self, step: int, loss: float, loss_ema: float, lr: float) -> str | None:
        """Call after each optimizer step; returns the line when one was written."""
        if not self.every or (step % self.every and step != self.total):
            return None
        now = time.perf_counter()
        rate = (step - self.last) / max(now - self.t_last, 1e-9)  # recent: the last window
        overall = (step - self.start) / max(now - self.t0, 1e-9)  # steady: for the ETA
        eta = datetime.timedelta(seconds=round((self.total - step) / max(overall, 1e-9)))
        self.last, self.t_last = step, now
        line = (f"[harness] step {step}/{self.total} loss {loss:.4f} (ema {loss_ema:.4f}) lr {lr:.2e} "
                f"{rate:.2f} step/s ETA {eta}")
        self.write(line)
        return line
