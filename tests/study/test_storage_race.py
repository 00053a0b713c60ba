"""First-run races: K workers started at the same moment on an EMPTY storage (a new PostgreSQL
database, a new SQLite file, a new journal file) all open the study, exactly one creates it, and the
grid is queued exactly once. optuna#1092: two processes creating Optuna's schema at once collide
(`UniqueViolation ... CREATE TYPE studydirection` on PostgreSQL).

The race is timing-dependent, so the test makes it bite: 4 processes, started and configured first,
are released together by a file barrier, several rounds, each round on a storage nobody has touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import PG_URL
from tests.runners.test_workers import TINY_STUDY

K, ROUNDS = 4, 3

# One worker: load every round's config first (slow, imports), then per round wait at the barrier and
# open the study: Session() builds the storage (schema creation), open() creates or loads the study.
CHILD = r"""
import json, sys, time
from pathlib import Path
from harness.config.schema import complete, load
from harness.study.session import Session
base, urls, sync, me = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
jobs = [(complete(load([*base, f"storage.url={u}"])), [*base, f"storage.url={u}"]) for u in urls]
for i, (cfg, overrides) in enumerate(jobs):
    (sync / f"ready-{i}-{me}").touch()
    while not (sync / f"go-{i}").exists():
        time.sleep(0.0005)
    try:
        d = Session(cfg, overrides)
        res = {"new": d.open(), "waiting": len(d.study.get_trials(deepcopy=False))}
    except BaseException as e:
        res = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
    print(json.dumps(res), flush=True)
"""


def _race(tmp_path, urls: list[str]) -> list[list[dict]]:
    """Run K workers over the rounds; return per round the K workers' outcomes."""
    sync = tmp_path / "sync"
    sync.mkdir()
    base = [*TINY_STUDY, "study=race", f"out_dir={tmp_path / 'runs'}", "storage=postgres"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(base), json.dumps(urls), str(sync), str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(K)]
    try:
        for i in range(len(urls)):
            deadline = time.time() + 300
            while len(list(sync.glob(f"ready-{i}-*"))) < K:
                assert time.time() < deadline and all(p.poll() is None for p in procs), \
                    [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
                time.sleep(0.01)
            (sync / f"go-{i}").touch()  # release all K at once
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = [[json.loads(line) for line in out.splitlines() if line.startswith("{")] for out, _ in outs]
    assert all(len(r) == len(urls) for r in results), [err[-2000:] for _, err in outs]
    return [[results[k][i] for k in range(K)] for i in range(len(urls))]


def _check(urls: list[str], rounds: list[list[dict]]) -> None:
    for url, outcomes in zip(urls, rounds):
        where = url.split(":")[0]
        errors = [o["error"] for o in outcomes if "error" in o]
        assert not errors, f"{where}: {len(errors)} of {K} workers failed on an empty storage: {errors}"
        assert sum(o["new"] for o in outcomes) == 1, f"{where}: creators {[o['new'] for o in outcomes]}"
        assert {o["waiting"] for o in outcomes} == {4}, f"{where}: the grid (4 points) queued {outcomes}"


@pytest.mark.process
def test_workers_started_together_on_new_storages_each_create_or_load_the_study_once(tmp_path, fresh_pg):
    """One set of K workers (their start-up, imports included, paid once) through ROUNDS new SQLite files,
    ROUNDS new journal files and ROUNDS new PostgreSQL databases (where HARNESS_TEST_PG_URL is set)."""
    urls = [*(f"sqlite:///{tmp_path}/db{i}/study.db" for i in range(ROUNDS)),
            *(f"journal://{tmp_path}/j{i}/journal.log" for i in range(ROUNDS)), *(fresh_pg(ROUNDS) if PG_URL else [])]
    _check(urls, _race(tmp_path, urls))
