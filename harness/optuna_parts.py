"""Optuna parts shared by the driver, the trial process and analysis: storages (with first-run
locking), samplers, pruners, the reporter a trial uses to prune, the trial tally, and wrappers
around the private Optuna calls the driver needs (each with its why).

This module imports nothing of the harness but the config error, so the trial side (train.py,
launch.py) can use it without importing the driver.
"""
from __future__ import annotations

import os
import shlex
import warnings
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from harness.config.schema import ConfigError
from harness.record import INTERMEDIATE


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats, stale-trial retry and fail_stale_trials are "experimental" since Optuna 2.8; the
    # ask/tell loop records heartbeats itself, which Optuna warns is meant for Study.optimize
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def where(cfg) -> str:
    return cfg.sweep.file or f"sweep {cfg.sweep.name}"


# ---------------------------------------------------------------------------- Optuna parts


def make_storage(cfg, heartbeat: bool = False):
    """Optuna storage for `storage.url`, created if new; the driver's RDB storage records heartbeats."""
    return open_storage(cfg.storage.url, create=True, heartbeat_of=cfg.sweep if heartbeat else None)


def open_storage(url: str, create: bool = False, heartbeat_of=None):
    """The Optuna storage at url (its password from the environment, harness/optuna_parts.py with_password).
    create=False (the analysis) never makes one: a missing SQLite or journal file raises FileNotFoundError.
    heartbeat_of: the sweep config whose heartbeat settings an RDB storage records (the driver's)."""
    import optuna

    url, sw = with_password(url), heartbeat_of
    file = Path(url.removeprefix("journal://").removeprefix("sqlite:///")) if url.startswith(("journal://", "sqlite:///")) \
        else None
    if file is not None:
        if not create and not file.is_file():
            raise FileNotFoundError(file)
        file.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(file)))
    kwargs = {}
    if url.startswith("sqlite:///"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # trials report while the driver writes
    if not create:
        return optuna.storages.RDBStorage(url, **kwargs)
    if sw is not None:
        kwargs.update(heartbeat_interval=sw.heartbeat_interval, grace_period=sw.grace_period,
                      heartbeat_stale_trial_callback=retry_callback(sw))
    with schema_lock(url):  # RDBStorage() creates the schema on first use: one process at a time
        return optuna.storages.RDBStorage(url, **kwargs)


# Any fixed 64-bit key: every harness process on a database serialises its schema creation on it.
_PG_LOCK_KEY = 0x6861726E657373  # "harness"


@contextmanager
def schema_lock(url: str):
    """Serialise Optuna's first-run schema creation across processes (optuna#1092: two workers on an
    empty database both run CREATE TYPE/TABLE and one dies with UniqueViolation). PostgreSQL: a
    session advisory lock on its own connection; SQLite: flock() on the database file. Other
    backends (MySQL, ...) get no lock: create the schema once before starting workers there."""
    if url.startswith("sqlite:///"):
        import fcntl

        # flock on the database file itself: no lock file left behind, and independent of SQLite's
        # own fcntl() record locks on Linux, so it cannot deadlock with them ("a" never truncates)
        with open(url.removeprefix("sqlite:///"), "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("select pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
    finally:
        engine.dispose()


def retry_callback(sw):
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=sw.max_retry)


def _build(kind: str, name: str, cls, args: dict, where: str):
    try:
        return cls(**args)
    except TypeError as e:
        raise ConfigError(f"{where}: sweep.{kind}_args do not fit {kind}={name}: {e}") from None


# TPE's defaults in the harness, from the search benchmark (BENCHMARKS.md section 3): multivariate + group
# reached the grid's best in 29/30 replayed seeds against 10/30 for Optuna's independent TPE, which on a
# small discrete space keeps proposing configurations it has run; 4 random startup trials, not 10 (42% of
# a 24-point grid before TPE models anything). sweep.sampler_args overrides each.
TPE_DEFAULTS = {"multivariate": True, "group": True, "n_startup_trials": 4}


def make_sampler(cfg):
    import optuna

    quiet_optuna()  # TPE's multivariate and group options are "experimental" in Optuna
    sw = cfg.sweep
    defaults = TPE_DEFAULTS if sw.sampler in ("tpe", "motpe") else {}
    args = {**defaults, **OmegaConf.to_container(sw.sampler_args)}
    base_seed = args.pop("seed", sw.sampler_seed)
    cls = {"tpe": optuna.samplers.TPESampler, "motpe": optuna.samplers.TPESampler,  # TPE is multi-objective
           "random": optuna.samplers.RandomSampler, "nsga2": optuna.samplers.NSGAIISampler,
           # grid: the driver enqueues every point itself (fixed params), the sampler is never consulted
           "grid": optuna.samplers.RandomSampler}[sw.sampler]
    first = _build("sampler", sw.sampler, cls, {"seed": base_seed, **args}, where(cfg))  # bad sampler_args: one line now
    return seeded_per_trial(lambda seed: cls(seed=seed, **args), base_seed, first)


def trial_seed(base: int, number: int) -> int:
    """The sampler seed of trial `number`: the sweep's seed and the trial number, mixed (numpy's SeedSequence)."""
    import numpy as np

    return int(np.random.SeedSequence([base, number]).generate_state(1)[0])


def seeded_per_trial(make, base: int, first):
    """`make(seed)`'s sampler, re-made for each trial with seed trial_seed(base, trial number); `first`
    (make(base), already built) serves until the first trial.

    Why: with one fixed seed, every worker on a shared storage (and every restart of a killed worker)
    replays the same random stream and proposes the configurations the others already ran (the soak saw
    81 distinct configurations in 200 trials). Trial numbers are unique in a storage, so no two trials
    share a stream, and one driver from scratch still proposes the same sequence on every run. The
    samplers here keep no state but their random generator: TPE, random and NSGA-II read the history
    from the storage at each trial."""
    import optuna

    class PerTrialSeed(optuna.samplers.BaseSampler):
        def __init__(self):
            self.inner = first

        def before_trial(self, study, trial):
            self.inner = make(trial_seed(base, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.inner.reseed_rng()

        def __str__(self):
            return f"{self.inner} (seed per trial from {base})"

    return PerTrialSeed()


def make_pruner(cfg):
    import optuna

    sw = cfg.sweep
    cls = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": optuna.pruners.HyperbandPruner}[sw.pruner]
    args = {**pruner_defaults(cfg), **OmegaConf.to_container(sw.pruner_args)}
    return _build("pruner", sw.pruner, cls, args, where(cfg))


def first_rung(cfg) -> int:
    """The first step a pruner may stop a trial at: 3/8 of train.max_steps (30 of 80), on an eval step.
    Earlier evals sit near chance for every configuration, and pruning there killed the grid's best."""
    every = cfg.train.eval_every or cfg.train.max_steps
    return max(every, (3 * cfg.train.max_steps // 8) // every * every)


def pruner_defaults(cfg) -> dict:
    """Optuna's own defaults start the rungs at step 1 (Hyperband) or at the first report; the search
    benchmark (BENCHMARKS.md section 3) found a first rung at 3/8 of the steps the one that kept the winner."""
    rung = first_rung(cfg)
    return {"hyperband": {"min_resource": rung, "max_resource": cfg.train.max_steps, "reduction_factor": 3},
            "successive_halving": {"min_resource": rung, "reduction_factor": 3},
            "median": {"n_warmup_steps": rung, "n_startup_trials": 4}}.get(cfg.sweep.pruner, {})


def directions(sw) -> list[str]:
    return list(sw.objectives.values())


def trial_reporter(cfg):
    """For the trial process: reporter(step, eval_metrics) -> prune? through the study's storage.

    None where nothing can prune (no pruner, or several objectives: Optuna cannot prune those)."""
    import optuna

    sw = cfg.sweep
    if sw.pruner == "none" or len(sw.objectives) != 1:
        return None
    quiet_optuna()
    storage = make_storage(cfg)
    # load_study does not restore the pruner: pass the configured one
    study = optuna.load_study(study_name=cfg.study, storage=storage, pruner=make_pruner(cfg))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(cfg.study), cfg.trial)
    trial = trial_handle(study, trial_id)
    key = INTERMEDIATE[next(iter(sw.objectives))]

    def report(step: int, metrics: dict) -> bool:
        trial.report(float(metrics[key]), step)
        return trial.should_prune()

    return report


def tally(trials) -> dict:
    """done counts toward the budget; a FAIL that was retried does not (its retry does)."""
    from optuna.trial import TrialState as S

    # every attempt a later trial retries: Optuna keeps `failed_trial` at the first attempt of a chain
    # and lists them all in `retry_history`
    retried = {n for t in trials for n in [t.system_attrs.get("failed_trial"), *t.system_attrs.get("retry_history", [])]
               if n is not None}
    c = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "retried": 0}
    for t in trials:
        if t.state == S.COMPLETE:
            c["complete"] += 1
        elif t.state == S.PRUNED:
            c["pruned"] += 1
        elif t.state == S.FAIL:
            c["retried" if t.number in retried else "failed"] += 1
        elif t.state == S.RUNNING:
            c["running"] += 1
        elif t.state == S.WAITING:
            c["waiting"] += 1
    c["done"] = c["complete"] + c["pruned"] + c["failed"]
    return c


# ---------------------------------------------------------------------------- private Optuna calls


def claim_trial(study, trial_id: int) -> bool:
    """Claim one chosen queued trial: WAITING -> RUNNING as a compare-and-set in the storage, so of several
    workers exactly one gets it. The same call Optuna's own queue makes (Study._pop_waiting_trial_id, private;
    harness/optuna_parts.py pop_waiting_trial), on a trial the race picked rather than the oldest; through the
    study's own storage so its trial cache sees the change."""
    import optuna
    from optuna.trial import TrialState

    try:
        return bool(study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


# ---------------------------------------------------------------------------- the record


def pop_waiting_trial(study):
    """Claim one queued (WAITING) trial: WAITING -> RUNNING as a compare-and-set in the storage, so of
    several workers exactly one gets it; None when the queue is empty. Private in Optuna 5
    (`Study._pop_waiting_trial_id`): the public ask() would sample a fresh point outside the grid
    when the queue is empty, and a grid worker must never do that."""
    return study._pop_waiting_trial_id()


def trial_handle(study, trial_id: int):
    """A live `optuna.Trial` for a trial that already exists (claimed above, or created by the driver
    for a trial process). Optuna documents no public way to re-attach to a running trial by id; the
    constructor is what ask() itself uses."""
    import optuna

    return optuna.Trial(study, trial_id)


# ---------------------------------------------------------------------------- secrets in storage URLs

PASSWORD_ENV = "HARNESS_STORAGE_PASSWORD"  # how a trial process gets the password its config.yaml lacks


def _parsed(url: str):
    if "://" not in url or url.startswith(("sqlite:", "journal:")):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        return None


def mask_url(url: str) -> str:
    """A storage URL fit to print or record: the password replaced by ***."""
    u = _parsed(url)
    return url if u is None or u.password is None else u.render_as_string(hide_password=True)


def strip_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password): config.yaml, the record and W&B get the first;
    the trial process gets the second in its environment (PASSWORD_ENV)."""
    u = _parsed(url)
    if u is None or u.password is None:
        return url, None
    # URL.set() ignores None; _replace is the namedtuple API (public despite the underscore)
    return u._replace(password=None).render_as_string(hide_password=False), str(u.password)


def with_password(url: str) -> str:
    """The URL to connect with: the password from PASSWORD_ENV where the URL has a user but none."""
    u, pw = _parsed(url), os.environ.get(PASSWORD_ENV)
    if u is None or u.password is not None or not pw or not u.username:
        return url
    return u.set(password=pw).render_as_string(hide_password=False)


def dashboard_command(url: str) -> str:
    """`optuna-dashboard ...` that opens this storage (the password masked). `journal://` is the
    harness's own scheme, not a URL optuna-dashboard knows: it takes the journal file's path, and
    --storage-class JournalFileStorage says what it is (without it, it guesses from the file, which
    then must already exist)."""
    if url.startswith("journal://"):
        return f"optuna-dashboard {shlex.quote(url.removeprefix('journal://'))} --storage-class JournalFileStorage"
    return f"optuna-dashboard {shlex.quote(mask_url(url))}"


def storage_error(url: str, e: BaseException) -> str:
    """One line for a storage that cannot be reached, read or written (never the password)."""
    cause = e.__cause__ or e.__context__ or e
    detail = next((ln.strip() for ln in str(getattr(cause, "orig", None) or cause).splitlines() if ln.strip()),
                  type(cause).__name__)
    _, password = strip_password(url)
    if password:
        detail = detail.replace(password, "***")
    hint = ("is the server up and the URL right?" if "connect" in detail.lower() or "refused" in detail.lower()
            else "is it a study file, and is its directory writable?" if url.startswith(("sqlite", "journal"))
            else "check the URL and the server")
    return f"storage {mask_url(url)}: {type(cause).__name__}: {detail[:300]} ({hint})"
