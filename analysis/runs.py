"""Load a study into one tidy DataFrame: one row per trial (each trial runs one seed).

Two sources, joined on the Optuna trial number:
- The trial records, runs/<study>/trials/<n>/result.json (config, metrics, history), read directly;
  or the W&B runs (group = study) online through `wandb.Api()` (`--wandb ENTITY/PROJECT`).
  Decoding the offline W&B run files under trials/<n>/wandb/ is an opt-in cross-check
  (`--wandb-offline`): W&B's own documented CLI (`wandb leet inspect RUN_DIR --summary --json`,
  and `--json` for the history) reads them, ~1-2 s per run, since wandb 0.31 has no public Python
  reader for offline files; the `source` column says where each row came from.
- The Optuna study (state, objective values, params, user attributes, fail/prune reasons), so
  trials that failed before writing a record are rows too, never silently dropped.

The frame and the per-step history are cached as parquet next to the study and reused while no
input is newer than the cache.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.optuna_parts import open_storage
from harness.record import SCALARS, read_record, trial_dirs


class AnalysisError(RuntimeError):
    """Missing or unusable input; the message says what and how to fix it (exit code 2)."""


# Config keys copied into the frame: the knobs a LoRA study varies plus what identifies the setup.
PARAMS = ("seed", "method", "lora.r", "lora.alpha", "lora.alpha_over_r", "lora.targets", "lora.dropout",
          "data.train_size", "train.lr", "train.max_steps", "train.batch_size", "quant.mode", "model.name", "data.name",
          "hardware.processes")
# Scalar fields of the trial record (result.json == W&B summary), from its type: a field added there is a column here.
METRICS = tuple(k for k in SCALARS if k not in ("study", "trial", *PARAMS))
# The config keys a figure may name a configuration by (plotting.py labels them; a study's axes come first).
CONFIG_KEYS = ("lora.targets", "lora.r", "lora.alpha", "data.train_size", "train.lr", "lora.dropout",
               "train.max_steps", "quant.mode", "model.name", "data.name")
HISTORY_KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens", "eval/accuracy", "eval/loss")


@dataclass
class Study:
    """Where one study's inputs live."""

    name: str
    dir: Path                          # <out_dir>/<study>: cache, figures/, tables/ go here
    storage_url: str | None = None     # Optuna storage; None = W&B only
    wandb_path: str | None = None      # "entity/project" for online runs; None = offline run files


@dataclass
class Loaded:
    trials: pd.DataFrame
    history: pd.DataFrame
    optuna_study: object | None = None  # optuna.Study, for the importance evaluators
    notes: list[str] = field(default_factory=list)

    @property
    def axes(self) -> list[str]:
        return searched_axes(self.trials)


def searched_axes(df: pd.DataFrame) -> list[str]:
    """The study's searched axes (sweep.space keys, in file order): a configuration is one value of
    each; seeds repeat it. Without a sweep (single runs), the keys that vary among the trials."""
    recorded = df["sweep_axes"].dropna() if "sweep_axes" in df else pd.Series(dtype=object)
    if not recorded.empty:
        return [a for a in json.loads(recorded.iloc[0]) if a in df]
    ok = df[df["status"] == "complete"] if "status" in df else df  # a diverged lr=1e30 trial is no axis
    return [k for k in CONFIG_KEYS if k in ok and ok[k].astype(str).nunique() > 1]


# ---------------------------------------------------------------------------- rows


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return "+".join(cfg) if isinstance(cfg, list) else cfg  # a custom module list as one label


def _row(config: dict, summary: dict, **extra) -> dict:
    row = {"study": config.get("study"), "trial": config.get("trial")}
    row.update({k: _get(config, k) for k in PARAMS})
    row["method"] = row["method"] or "lora"  # records from before method= existed
    r, alpha = row["lora.r"], row["lora.alpha"]
    row["lora.alpha_over_r"] = alpha / r if isinstance(r, (int, float)) and isinstance(alpha, (int, float)) and r else None
    space = (config.get("sweep") or {}).get("space") if isinstance(config.get("sweep"), dict) else None
    row["sweep_axes"] = json.dumps(list(space)) if space else None
    for axis in space or ():  # a searched key beyond PARAMS (train.warmup_ratio, ...) gets its column too
        row.setdefault(axis, _get(config, axis))
    row.update({k: summary.get(k) for k in METRICS})
    prov = summary.get("provenance") or {}
    row["git_sha"] = prov.get("git_sha") if isinstance(prov, dict) else None
    row.update(extra)
    return row


def _history(trial: int, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{"trial": trial, "step": r.get("_step"), **{k: r.get(k) for k in HISTORY_KEYS}} for r in rows],
                      columns=["trial", "step", *HISTORY_KEYS])
    return df.dropna(subset=["step"])


# ---------------------------------------------------------------------------- W&B offline


def _leet(run_dir: Path, *flags: str) -> str:
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", str(run_dir), *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise AnalysisError(f"`wandb leet inspect {run_dir} {' '.join(flags)}` failed: "
                            f"{(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return out.stdout


def read_offline_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """One offline W&B run directory -> (frame row, history frame), via `wandb leet inspect`."""
    s = json.loads(_leet(run_dir, "--summary", "--json"))
    config, summary = s.get("config") or {}, s.get("summary") or {}
    steps, git = [], None
    for line in _leet(run_dir, "--json").splitlines():
        rec = json.loads(line)
        if rec.get("type") == "history":
            steps.append(rec["history"]["item"])
        elif rec.get("type") == "run":
            git = (rec["run"].get("git") or {}).get("commit")
    trial = config.get("trial")
    row = _row(config, summary, source="wandb-offline", wandb_run_id=s.get("run_id"), wandb_state=s.get("state"),
               run_dir=str(run_dir))
    row["git_sha"] = row["git_sha"] or git
    return row, _history(trial, steps)


def _offline_run_dirs(study_dir: Path) -> dict[int, Path]:
    """The newest W&B run directory of each trial (a re-run trial keeps only its latest run)."""
    found: dict[int, Path] = {}
    for n, trial in trial_dirs(study_dir):
        for d in sorted(trial.glob("wandb/*run-*")):  # names sort by start time
            if d.name.startswith(("offline-run-", "run-")) and any(d.glob("*.wandb")):
                found[n] = d
    return found


def _result_json(path: Path) -> tuple[dict, pd.DataFrame] | None:
    record = read_record(path)
    if record is None:  # a trial killed while writing it: the Optuna row still says how it ended
        return None
    rec = record.model_dump(exclude_unset=True)
    hist = [{"_step": h.get("step"), **h} for h in rec.get("history", [])]
    for e in rec.get("evals", []):
        hist.append({"_step": e["step"], "eval/accuracy": e["accuracy"], "eval/loss": e["loss"]})
    row = _row(rec.get("config") or {}, rec, source="result.json", wandb_run_id=None,
               wandb_state=None, run_dir=str(path.parent))
    h = _history(row["trial"], hist)
    if not h.empty:  # train and eval entries of one step -> one row, as in W&B
        h = h.groupby(["trial", "step"], as_index=False).first()
    return row, h


RUN_COLS = ["study", "trial", *PARAMS, *METRICS, "git_sha", "sweep_axes", "source", "wandb_run_id", "wandb_state",
            "run_dir"]


def load_records(study_dir: Path):
    """Rows + histories from every trial's result.json: the default source (no subprocess per run)."""
    rows, hists = [], []
    for _, d in trial_dirs(study_dir):
        if (got := _result_json(d / "result.json")) is not None:
            rows.append(got[0])
            hists.append(got[1])
    return rows, hists, []


def load_offline(study_dir: Path, cached: Loaded | None = None, cached_at: float = 0.0):
    """Rows + histories of every trial's run files; a run unchanged since the cache was written is
    taken from the cache (each read costs two CLI calls, ~1-2 s), so re-analysing a live study is quick."""
    runs = _offline_run_dirs(study_dir)
    notes, reuse = [], {}
    if cached is not None and "run_dir" in cached.trials:
        known = cached.trials.dropna(subset=["run_dir"]).set_index("run_dir")
        for trial, d in runs.items():
            if str(d) in known.index and max(f.stat().st_mtime for f in d.glob("*.wandb")) < cached_at:
                reuse[trial] = (known.loc[[str(d)], [c for c in RUN_COLS if c != "run_dir"]].assign(run_dir=str(d))
                                .to_dict("records")[0], cached.history[cached.history["trial"] == trial])
    todo = [d for t, d in runs.items() if t not in reuse]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each read is a subprocess; overlap them
        results = [*reuse.values(), *pool.map(read_offline_run, todo)]
    if reuse:
        notes.append(f"reused {len(reuse)} unchanged run(s) from the cache, read {len(todo)} (--refresh re-reads all)")
    rows, hists = [r for r, _ in results], [h for _, h in results]
    fallback = []
    for n, d in trial_dirs(study_dir):
        if n not in runs and (got := _result_json(d / "result.json")) is not None:
            rows.append(got[0])
            hists.append(got[1])
            fallback.append(str(n))
    if fallback:
        notes.append(f"no W&B run files for trial(s) {', '.join(fallback)} (tracking.mode=disabled?): read their "
                     "result.json instead (column `source`)")
    notes += _cross_check(rows)
    return rows, hists, notes


def _cross_check(rows: list[dict]) -> list[str]:
    """W&B's copy of each record against result.json: they are written from the same dict."""
    bad = []
    for row in rows:
        path = Path(row["run_dir"]).parent.parent / "result.json" if row["source"] == "wandb-offline" else None
        record = read_record(path) if path is not None else None
        if record is None:
            continue
        rec = record.model_dump(exclude_unset=True)
        diff = [k for k in METRICS if rec.get(k) != row.get(k) and not (rec.get(k) is None and pd.isna(row.get(k)))]
        if diff:
            bad.append(f"trial {row['trial']}: {', '.join(diff)}")
    return [f"W&B run files disagree with result.json: {'; '.join(bad)}"] if bad else []


# ---------------------------------------------------------------------------- W&B online


def load_online(path: str, group: str) -> tuple[list[dict], list[pd.DataFrame]]:
    import wandb

    try:
        runs = wandb.Api().runs(path, filters={"group": group}, lazy=False)
        runs = list(runs)
    except Exception as e:  # no network / no login / unknown project: say which, without a traceback
        raise AnalysisError(f"cannot read W&B runs of {path} group={group}: {str(e).splitlines()[0]}") from None
    rows, hists = [], []
    for run in runs:
        config = dict(run.config)
        summary = dict(run.summary_metrics)  # the public API (not the private _json_dict)
        rows.append(_row(config, summary, source="wandb-online", wandb_run_id=run.id, wandb_state=run.state,
                         run_dir=run.url))
        steps = [r for r in run.scan_history() if any(k in r for k in HISTORY_KEYS)]
        hists.append(_history(config.get("trial"), steps))
    return rows, hists


# ---------------------------------------------------------------------------- Optuna


def storage_file(url: str) -> Path | None:
    """The local file behind a sqlite:/// or journal:// storage URL (None for a database server)."""
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            return Path(url[len(prefix):])
    return None


def load_optuna(url: str, name: str):
    """(study, frame of its trials) or (None, None) when the storage or the study does not exist."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))  # never creates one
    except (FileNotFoundError, KeyError):
        return None, None
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        reason = ua.get("fail_reason") or ua.get("prune_reason") or ua.get("reason")
        rows.append({
            "trial": t.number, "state": t.state.name, "objective_values": json.dumps(t.values),
            "optuna_params": json.dumps(t.params, default=str), "optuna_reason": reason,
            "optuna_seed": ua.get("seed"), "overrides": " ".join(ua["overrides"]) if isinstance(ua.get("overrides"), list)
            else ua.get("overrides"),
            "started": t.datetime_start, "duration_s": t.duration.total_seconds() if t.duration else None,
        })
    return study, pd.DataFrame(rows)


# ---------------------------------------------------------------------------- join + cache


def _join(rows: list[dict], optuna_df: pd.DataFrame | None, study: str) -> pd.DataFrame:
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["study", "trial", *PARAMS, *METRICS, "git_sha", "sweep_axes", "source", "wandb_run_id",
                                     "wandb_state", "run_dir"])
    runs = runs[[c for c in RUN_COLS if c in runs] + [c for c in runs if c not in RUN_COLS]]  # one order, any source
    runs["trial"] = runs["trial"].astype("Int64")
    if optuna_df is None or optuna_df.empty:
        df = runs.assign(state=None)
        df["state"] = df["status"].map({"complete": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"})
    else:
        optuna_df = optuna_df.assign(trial=optuna_df["trial"].astype("Int64"))
        df = optuna_df.merge(runs, on="trial", how="outer")
        # a trial that died before its run started has no W&B row: keep it, with Optuna's reason
        df["source"] = df["source"].fillna("optuna only (no run files)")
        df["seed"] = df["seed"].fillna(df["optuna_seed"])
        df["reason"] = df["reason"].fillna(df["optuna_reason"])
        df = df.drop(columns=["optuna_seed", "optuna_reason"])
        missing = df["status"].isna()
        df.loc[missing, "status"] = df.loc[missing, "state"].map(
            {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "WAITING": "queued"}).fillna("running")
    df["study"] = study
    df["device_hours"] = df["device_seconds"] / 3600
    return df.sort_values("trial").reset_index(drop=True)


def _inputs_mtime(st: Study) -> float:
    paths = [*st.dir.glob("trials/*/wandb/*-run-*/*.wandb"), *st.dir.glob("trials/*/wandb/run-*/*.wandb"),
             *st.dir.glob("trials/*/result.json")]
    if st.storage_url and storage_file(st.storage_url):
        paths.append(storage_file(st.storage_url))
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def cache_paths(st: Study) -> tuple[Path, Path]:
    return st.dir / "trials.parquet", st.dir / "history.parquet"


def load(st: Study, refresh: bool = False, wandb_offline: bool = False) -> Loaded:
    """Every trial of the study as one frame (+ history), from the records (or W&B) and Optuna;
    cached as parquet. wandb_offline: decode the offline W&B run files instead, checked against
    result.json."""
    notes: list[str] = []
    optuna_study, optuna_df = load_optuna(st.storage_url, st.name) if st.storage_url else (None, None)
    if st.storage_url and optuna_study is None:
        notes.append(f"no Optuna study {st.name!r} at {st.storage_url}: states and reasons come from the runs alone")
    trials_pq, history_pq = cache_paths(st)
    cached, cached_at = None, 0.0
    if not refresh and st.wandb_path is None and trials_pq.is_file() and history_pq.is_file():
        cached = Loaded(pd.read_parquet(trials_pq), pd.read_parquet(history_pq), optuna_study, notes)
        cached_at = trials_pq.stat().st_mtime
        from_wandb = cached.trials["source"].eq("wandb-offline").any()
        if cached_at > _inputs_mtime(st) and from_wandb == wandb_offline:
            notes.append(f"read the cached frame {trials_pq} (inputs unchanged; --refresh re-reads them)")
            return cached

    if st.wandb_path:
        rows, hists = load_online(st.wandb_path, st.name)
    else:
        if not (st.dir / "trials").is_dir() and optuna_study is None:
            raise AnalysisError(f"no runs for study {st.name!r}: neither {st.dir / 'trials'} nor an Optuna study "
                                f"exists (run `python -m harness sweep=<name>` first, or pass out_dir=...)")
        rows, hists, more = load_offline(st.dir, cached, cached_at) if wandb_offline else load_records(st.dir)
        notes += more
        if not rows and (st.dir / "trials").is_dir():
            notes.append(f"no W&B run directory and no result.json under {st.dir / 'trials'}/*/")
    df = _join(rows, optuna_df, st.name)
    if df.empty:
        raise AnalysisError(f"study {st.name!r} has no trials yet ({st.dir}); nothing to analyse")
    hist = pd.concat([h for h in hists if not h.empty], ignore_index=True) if any(not h.empty for h in hists) \
        else pd.DataFrame(columns=["trial", "step", *HISTORY_KEYS])
    st.dir.mkdir(parents=True, exist_ok=True)
    df.to_parquet(trials_pq, index=False)
    hist.to_parquet(history_pq, index=False)
    return Loaded(df, hist, optuna_study, notes)
