"""The warm worker process, the trial's end of the protocol in harness/runners/warm.py:
`python -m harness.trial.worker` imports torch, transformers and peft once and runs trial after trial
from its stdin, keeping what trials share (harness/trial/shared.py). One JSON line per trial in
({"config": path, "log": path}), one JSON line back ({"rc": exit code as train.main would give, "rss": bytes})
on its original stdout, while the trial's own output goes to its trials/<n>/log.txt.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path



def rss_bytes() -> int:
    """Resident memory now (not the peak): what a leak between trials grows."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@contextmanager
def _output_to(log: str):
    """fd 1 and 2 (prints, tqdm, tracebacks, C libraries) into the trial's log.txt, then to /dev/null."""
    sys.stdout.flush(), sys.stderr.flush()
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1), os.dup2(null, 2)
            os.close(null)


def _reset_accelerate() -> None:
    # accelerate keeps one process-wide AcceleratorState/GradientState (mixed precision, ...) and refuses a
    # second Accelerator with other settings; a warm worker's next trial may have them. No public reset.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def run_one(config: str, log: str, cache: dict) -> int:
    """One trial in this process; the exit code `python -m harness.train` would have given."""
    from harness import train  # here, not at the top: a worker answers its first line before torch loads

    with _output_to(log):
        try:
            return train.run_file(config, cache)
        except Exception:  # noqa: BLE001 - the trial fails (its record says why, or the log's last line)
            traceback.print_exc()
            return 1
        finally:
            _reset_accelerate()
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def serve() -> int:
    """The worker's loop: a trial per line on stdin until it closes."""
    reply = os.fdopen(os.dup(1), "w")  # the runner reads replies here; fd 1 itself follows each trial's log
    os.dup2(2, 1)  # until then a stray print goes where errors go, never into the reply pipe
    from harness import train  # noqa: F401 - now, not at the first trial: a prestarted worker imports while the driver checks
    cache: dict = {}
    for line in sys.stdin:
        job = json.loads(line)
        rc = run_one(job["config"], job["log"], cache)
        reply.write(json.dumps({"rc": rc, "rss": rss_bytes()}) + "\n")
        reply.flush()
    # Every trial's files are written and its W&B run torn down: skip the interpreter's own teardown of
    # torch, transformers and wandb, which kept the driver waiting ~5 s at the end of every sweep.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(serve())
