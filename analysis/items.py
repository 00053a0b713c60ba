"""Per-item evidence of a study's trials: trials/<n>/predictions.jsonl and the record's `degenerate`.

Every configuration of a study is evaluated on the same test items, so two configurations can be
paired item by item (which items flip between them) as well as seed by seed. A predictions line is
{id, prediction, reference, correct} and, where the trial wrote them, the continuous per-item scores
`gold_logprob` (log-probability of the gold label; `pred_logprob` beside it) or, for SFT, `nll`
and `n_tokens` of the gold answer. The continuous score read here is `gold_logprob`, else `-nll`
(the gold answer's log-probability); a trial without either has no score and that line of evidence
is skipped.

Degenerate trials (record field `degenerate: "collapsed" | "diverged"`, a column of the study
frame: a trial that finished but predicts one class, or whose loss ran away) are set aside: their
status becomes "set aside (collapsed)" etc., so every figure, table and test leaves them out and
the status counts show how many there were. Torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def trial_dir(run_dir) -> Path | None:
    """The trial directory of a frame row's run_dir (the trial dir itself, or its W&B run dir)."""
    if run_dir is None or (isinstance(run_dir, float) and np.isnan(run_dir)) or str(run_dir).startswith("http"):
        return None
    p = Path(run_dir)
    for d in (p, p.parent.parent):
        if (d / "result.json").is_file() or (d / "predictions.jsonl").is_file():
            return d
    return None


def read_predictions(d: Path | None) -> pd.DataFrame | None:
    """One trial's items: index id, columns correct (0/1) and score (NaN where none was written)."""
    path = d / "predictions.jsonl" if d is not None else None
    if path is None or not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        p = json.loads(line)
        score = p.get("gold_logprob")
        if score is None and p.get("nll") is not None:
            score = -float(p["nll"])
        rows.append((p["id"], float(bool(p["correct"])), np.nan if score is None else float(score)))
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["id", "correct", "score"]).drop_duplicates("id").set_index("id")


def per_seed_items(trials: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """seed -> that seed's items (a seed run twice: its runs averaged item by item, as the seed means are)."""
    out: dict[int, list[pd.DataFrame]] = {}
    for _, t in trials.iterrows():
        if pd.isna(t.get("seed")):
            continue
        items = read_predictions(trial_dir(t.get("run_dir")))
        if items is not None:
            out.setdefault(int(t["seed"]), []).append(items)
    return {s: (v[0] if len(v) == 1 else pd.concat(v).groupby(level=0).mean()) for s, v in out.items()}


def degenerate(df: pd.DataFrame) -> pd.Series:
    """Each row's `degenerate` flag (None where the trial is not): the frame's column, which
    analysis/runs.py fills from the record's field once harness/record.py declares it."""
    if "degenerate" not in df:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    return df["degenerate"].astype(object).where(df["degenerate"].notna(), None)


def set_aside(loaded):
    """The study with its degenerate complete trials set aside (status "set aside (<kind>)"), and
    {kind: count}."""
    from analysis.runs import Loaded

    df = loaded.trials.copy()
    flags = degenerate(df)
    hit = flags.notna() & (df["status"] == "complete")
    counts = {str(k): int(v) for k, v in flags[hit].value_counts().items()}
    if hit.any():
        df.loc[hit, "status"] = "set aside (" + flags[hit].astype(str) + ")"
    return Loaded(df, loaded.history, loaded.optuna_study, list(loaded.notes)), counts


def test_items(df: pd.DataFrame) -> int | None:
    """Test items per trial (the record's test_size), None when unknown or not one number."""
    if "test_size" not in df:
        return None
    sizes = df["test_size"].dropna().astype(int).unique()
    return int(sizes[0]) if len(sizes) == 1 else None
