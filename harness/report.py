"""The end-of-sweep console summary, seed-aware: configuration means over seeds, best = the best
configuration mean (ties: lower FLOPs), never a lucky seed.

Takes Optuna FrozenTrials as the driver has them (params hold the searched axes, user_attrs the
seed and the record's metrics). Runs in the driver: no torch, no analysis/ import; scipy for t.
"""
from __future__ import annotations

import json
import math

DIRECTIONS = {"maximize": -1, "minimize": 1}  # sort key sign: best first


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (v and abs(v) < 1e-3)):
        return f"{v:.3g}"
    return f"{v:.4g}" if isinstance(v, float) else f"{v:,}"


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def t_half_width(values: list[float], level: float = 0.95) -> float:
    """Half-width of the Student-t interval of the mean (NaN below 2 values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def configurations(trials, objectives: dict[str, str]) -> list[dict]:
    """Complete trials grouped by their searched values (seed excluded): per configuration the
    trials, seeds, and mean / 95% half-width of each objective, mean flops and device-seconds."""
    groups: dict[str, list] = {}
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        groups.setdefault(json.dumps(t.params, sort_keys=True, default=str), []).append(t)
    out = []
    for key, ts in groups.items():
        row = {"params": json.loads(key), "trials": [t.number for t in ts],
               "seeds": [t.user_attrs.get("seed") for t in ts]}
        for metric in {*objectives, "accuracy", "flops", "device_seconds"}:
            vals = [float(t.user_attrs[metric]) for t in ts if t.user_attrs.get(metric) is not None]
            row[metric] = sum(vals) / len(vals) if vals else None
            row[f"{metric}_ci"] = t_half_width(vals)
        out.append(row)
    return out


def _sort_key(row: dict, objectives: dict[str, str]):
    keys = [DIRECTIONS[d] * (row[m] if row[m] is not None else math.inf * -DIRECTIONS[d])
            for m, d in objectives.items()]
    return (*keys, row["flops"] if row["flops"] is not None else math.inf)


def best_configuration(trials, objectives: dict[str, str]) -> dict | None:
    """The configuration with the best mean of the first objective (then the others), ties to the
    lower mean FLOPs; None without a complete trial."""
    rows = configurations(trials, objectives)
    return min(rows, key=lambda r: _sort_key(r, objectives)) if rows else None


def summary_table(trials, axes: list[str], objectives: dict[str, str], top: int = 10) -> str:
    """Configurations, best mean first: axes, seeds, objective means ± 95% CI, mean FLOPs and device-s."""
    rows = sorted(configurations(trials, objectives), key=lambda r: _sort_key(r, objectives))[:top]
    metrics = list(dict.fromkeys([*objectives, "accuracy"]))
    cols = [*axes, "seeds", *(f"{m} (mean ± 95% CI)" for m in metrics), "flops", "device-s", "trials"]
    body = []
    for r in rows:
        cells = [_value(r["params"].get(a)) for a in axes] + [str(len(r["seeds"]))]
        for m in metrics:
            ci = r[f"{m}_ci"]
            cells.append(_num(r[m]) + ("" if math.isnan(ci) else f" ± {_num(ci)}"))
        cells += [_num(r["flops"]), _num(r["device_seconds"]), ",".join(map(str, r["trials"]))]
        body.append(cells)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, body)])


def best_line(trials, axes: list[str], objectives: dict[str, str]) -> str:
    """'best = <configuration> (mean of n seeds)': the sentence under the table."""
    b = best_configuration(trials, objectives)
    if b is None:
        return "best = none (no complete trial)"
    what = " ".join(f"{a}={_value(b['params'].get(a))}" for a in axes) or "the one configuration"
    (m, _), = list(objectives.items())[:1]
    ci = b[f"{m}_ci"]
    return (f"best = {what}: {m} {_num(b[m])}" + ("" if math.isnan(ci) else f" ± {_num(ci)}")
            + f" (mean of {len(b['seeds'])} seed{'s' if len(b['seeds']) != 1 else ''}; trials "
            + ",".join(map(str, b["trials"])) + ")")
