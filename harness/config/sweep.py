"""The study part of the config schema: the `sweep:` block (search axes, objectives, sampler, budget,
seeds) and the `launcher:` group; split from harness/config/schema.py, which re-exports these names.
Torch-free, like the rest of the schema."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them. inf/nan in a float setting
    # (train.lr=inf) would pass every bound check and fail mid-training (or silently never): reject them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LauncherCfg(_Strict):
    name: Literal["local", "slurm"] = "local"
    workers: int = Field(default=1, ge=1)
    cluster: Literal["slurm", "local", "debug"] | None = None
    partition: str | None = None
    account: str | None = None
    timeout_min: int = Field(default=240, ge=1)
    gpus_per_node: int | None = Field(default=None, ge=0)
    cpus_per_task: int = Field(default=8, ge=1)
    mem_gb: int = Field(default=64, ge=1)
    folder: str | None = None
    wait: bool = False
    additional: dict[str, Any] = {}


Scalar = str | int | float | bool
MAX_SEED = 2**32 - 1  # numpy.random.seed (called by transformers.set_seed) takes 0 .. 2**32-1


class ParamCfg(_Strict):
    """One search axis: `choices` (categorical), or a `low`..`high` range (int when both bounds are
    whole numbers, unless `type: float`; `log` for log scale; `step` for a grid of the range)."""
    choices: list[Scalar] | None = None
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    type: Literal["int", "float"] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs `choices: [...]` or both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined (Optuna)")
        if self.type is None:
            self.type = "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"
        return self


class RacingCfg(_Strict):
    """`sweep.racing`: seeds one round at a time, a configuration stopped once it is worse than its race's
    leader (harness/study/racing.py says how, and why not Optuna's WilcoxonPruner)."""
    min_seeds: int = Field(default=2, ge=2)     # seeds every configuration runs before it can be stopped
    # the chance that a race's truly best configuration is ever stopped is at most 1 - confidence
    # (Bonferroni over the looks and the comparisons against the leader)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    statistic: Literal["paired_t"] = "paired_t"  # one-sided paired t over the shared seeds (the verdicts' test)


def same_value(x, y) -> bool:
    """2 == 2.0 == '2' for the axis values a claim names (YAML and the storage type them differently)."""
    try:
        return float(x) == float(y)
    except (TypeError, ValueError):
        return str(x) == str(y)


class ClaimCfg(_Strict):
    """One of `sweep.claims`: what the study sets out to show, tested as worded (analysis/claims.py).
    not_worse: b is at most sweep.margin below a ("matches or beats"); better: b above a; equivalent:
    within ±margin (b and a, or without them every pair of the axis's values). `at` limits it to the
    arms with these values of the other axes."""
    says: str                                   # the claim in words, as the report quotes it
    axis: str
    test: Literal["not_worse", "better", "equivalent"]
    b: Scalar | None = None
    a: Scalar | None = None
    at: dict[str, Scalar] = {}
    # when it was written down relative to the data, e.g. "before the study ran" (a claim stated after
    # seeing results is weaker evidence, and the report says which)
    stated: str | None = None

    @model_validator(mode="after")
    def _pair(self):
        if (self.b is None) != (self.a is None) or (self.b is None and self.test != "equivalent"):
            raise ValueError(f"claim {self.says!r}: test={self.test} needs both b and a (two values of {self.axis})"
                             if self.test != "equivalent" else
                             f"claim {self.says!r}: give both b and a, or neither (every pair of {self.axis}'s values)")
        if self.b is not None and same_value(self.b, self.a):
            raise ValueError(f"claim {self.says!r}: b and a are the same value ({self.b})")
        return self


class FollowCfg(_Strict):
    """One of `sweep.follow`: a config key set from a searched axis's value instead of searched itself, e.g.
    each rank at the lr an earlier study picked for it: `train.lr: {axis: lora.r, values: {2: 1.0e-3, 8: 5.0e-4}}`.
    A confirmatory study fixes what an exploratory one tuned this way, so its seeds test, not select."""
    axis: str
    values: dict[Scalar, Scalar]

    def value_at(self, x):
        """The followed key's value where the axis is x (None where the file gives none)."""
        return next((v for k, v in self.values.items() if same_value(k, x)), None)


class SweepCfg(_Strict):
    """The `sweep:` block of sweeps/<name>.yaml: where to search and how (see harness/study/driver.py)."""
    name: str | None = None        # filled in by load(): the sweep group option
    file: str | None = None        # filled in by load(): the YAML it came from (named in errors)
    space: dict[str, ParamCfg]     # dotted config names -> axis; `lora.alpha_over_r` sets alpha = r x value
    objectives: dict[str, Literal["maximize", "minimize"]] = {"accuracy": "maximize"}
    sampler: Literal["tpe", "random", "grid", "nsga2", "motpe"] = "tpe"
    sampler_args: dict[str, Any] = {}
    sampler_seed: int = 0
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    pruner_args: dict[str, Any] = {}
    n_trials: int | None = Field(default=None, ge=1)   # trials (seed repeats count); grid: all points
    timeout: float | None = Field(default=None, gt=0)  # seconds for this invocation of the driver
    seeds: list[int] = [0]          # each configuration runs once per seed, one trial each
    enqueue: list[dict[str, Scalar]] = []   # configurations to run first (e.g. the reference)
    # reference arms outside the space, once per seed, e.g. {method: head_only, train.lr: 0.01}: their
    # overrides replace the searched axes; they never count as the study's best (harness/study/summary.py)
    references: list[dict[str, Scalar]] = []
    parallel: int = Field(default=1, ge=1)  # trials at once from one driver
    workers: Literal["warm", "cold"] = "warm"  # warm: K long-lived trial workers (harness/runners/warm.py); cold: a process per trial
    heartbeat_interval: int = Field(default=10, ge=1)  # seconds; RDB storages
    grace_period: int = Field(default=60, ge=1)        # a RUNNING trial this silent is stale: failed + retried
    max_retry: int = Field(default=2, ge=0)            # retries of a trial whose driver died
    allow_changes: list[str] = []   # config keys a resume may change (you vouch they cannot affect results)
    # racing (harness/study/racing.py): null = off (every configuration runs every seed); `true` or
    # {min_seeds, confidence, statistic} = on
    racing: RacingCfg | None = None
    # budget: run the grid (or n_trials / timeout); decided: also end once every comparison has a verdict
    # or no seed left can change it (harness/study/verdict.py)
    stop_when: Literal["budget", "decided"] = "budget"
    # equivalence margin ±δ as a fraction of accuracy (0.01 = 1 point): a difference inside ±margin is
    # "equivalent"; of `python -m analysis` verdicts (--margin overrides it; analysis/verdicts.py) and of
    # stop_when: decided (harness/study/verdict.py)
    margin: float = Field(default=0.01, gt=0, lt=1)
    # stop_when: decided gives up an undecided comparison once its predictive probability of ending
    # better / worse / equivalent with the seeds left is below this (harness/study/verdict.py
    # chance_of_a_verdict); 0 = only once no seed is left
    futility: float = Field(default=0.1, ge=0, lt=1)
    # compare each arm (a setting of the other axes) at its own best value of this axis, e.g. train.lr
    # (the analysis's --tune); racing then races each arm's values of it
    tune: str | None = None
    # which comparisons stop_when: decided (and the analysis's first section) name, with tune: `arms` the arms
    # at their own best values, pairwise one axis apart; `carry_over` for every arm the value that is best at
    # another arm against the arm's own best (the claim "the best lr does not depend on the rank"); `claims`
    # sweep.claims, each decided as worded (harness/study/claims.py)
    compare: Literal["arms", "carry_over", "claims"] = "arms"
    # what the study sets out to show, each tested as worded by `python -m analysis` (analysis/claims.py)
    claims: list[ClaimCfg] = []
    # config keys set from an axis's value, not searched (FollowCfg): each configuration of the axis at its own value
    follow: dict[str, FollowCfg] = {}

    @field_validator("racing", mode="before")
    @classmethod
    def _racing_switch(cls, v):
        return {} if v is True else None if v is False else v

    @field_validator("space")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("the search space is empty: add `sweep.space.<dotted.config.key>: {choices: [...]}`")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list of distinct integers (got {v})")
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be between 0 and 2**32-1 (numpy's range); got {bad}")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if self.sampler == "grid":
            ranges = [k for k, p in self.space.items() if p.choices is None and (p.type != "int" and p.step is None)]
            if ranges:
                raise ValueError(f"sampler=grid needs choices (or an int/stepped range) for {', '.join(ranges)}")
        multi = len(self.objectives) > 1
        if multi and self.pruner != "none":
            raise ValueError(f"pruner={self.pruner} needs one objective; Optuna cannot prune multi-objective studies")
        if not self.objectives:
            raise ValueError("objectives is empty: e.g. {accuracy: maximize}")
        self._racing_combinations()
        self._follows()
        if self.sampler != "grid" and self.n_trials is None and self.timeout is None:
            raise ValueError(f"sampler={self.sampler} needs a budget: set sweep.n_trials and/or sweep.timeout (seconds)")
        return self

    def _follows(self) -> None:
        """A followed key is set by exactly one value per choice of a searched categorical axis."""
        for key, f in self.follow.items():
            where = f"follow.{key}"
            if key in self.space or key == "lora.alpha" and "lora.alpha_over_r" in self.space:
                raise ValueError(f"{where}: {key} is searched (sweep.space); a key is searched or follows an axis")
            if f.axis not in self.space or self.space[f.axis].choices is None:
                raise ValueError(f"{where}: axis {f.axis} is not a searched axis with choices (the space has "
                                 f"{', '.join(self.space)})")
            choices = self.space[f.axis].choices
            missing = [c for c in choices if f.value_at(c) is None]
            extra = [k for k in f.values if not any(same_value(k, c) for c in choices)]
            if missing or extra:
                raise ValueError(f"{where}: give one value for each of {f.axis}'s choices {choices}"
                                 + (f"; none for {missing}" if missing else "")
                                 + (f"; {extra} are not choices" if extra else ""))

    def _claim_values(self, c: ClaimCfg) -> None:
        """A claim names searched axes and values they take (a typo would test nothing, silently)."""
        where = f"claim {c.says!r}"
        if c.axis not in self.space or c.axis == self.tune:
            raise ValueError(f"{where}: axis {c.axis} is not a searched axis other than sweep.tune (the space has "
                             f"{', '.join(self.space)})")
        for key in c.at:
            if key not in self.space or key in (c.axis, self.tune):
                raise ValueError(f"{where}: at.{key} is not another searched axis (nor sweep.tune; the space has "
                                 f"{', '.join(self.space)})")
        for key, values in ((c.axis, [v for v in (c.b, c.a) if v is not None]), *((k, [v]) for k, v in c.at.items())):
            choices = self.space[key].choices
            bad = [v for v in values if choices is not None and not any(same_value(v, x) for x in choices)]
            if bad:
                raise ValueError(f"{where}: {key}={bad[0]} is not one of its choices {choices}")

    def _racing_combinations(self) -> None:
        if self.tune is not None and self.tune not in self.space:
            raise ValueError(f"tune={self.tune} is not a searched axis (the space has {', '.join(self.space)})")
        if self.compare == "carry_over" and (self.tune is None or len(self.space) < 2):
            raise ValueError("compare=carry_over needs sweep.tune and another searched axis: it carries each arm's best "
                             "tuned value over to the other arms")
        for c in self.claims:
            self._claim_values(c)
        if self.compare == "claims" and not self.claims:
            raise ValueError("compare=claims needs sweep.claims: the claims stop_when: decided waits for")
        wants = [w for w, on in (("racing", self.racing is not None), ("stop_when=decided", self.stop_when == "decided"))
                 if on]
        for w in wants:
            if self.sampler != "grid":
                raise ValueError(f"{w} needs sampler=grid: its rounds and comparisons are over a known set of "
                                 f"configurations (got sampler={self.sampler})")
            if len(self.objectives) != 1:
                raise ValueError(f"{w} needs one objective (got {', '.join(self.objectives)}): which one is worse "
                                 "is undefined on a Pareto front")
        if self.racing is not None and len(self.seeds) <= self.racing.min_seeds:
            raise ValueError(f"racing needs more seeds than racing.min_seeds={self.racing.min_seeds} (got "
                             f"{len(self.seeds)}): with no later round there is nothing to save")
        if self.stop_when == "decided" and len(self.seeds) < 3:
            raise ValueError(f"stop_when=decided needs >= 3 seeds (got {len(self.seeds)}): a verdict needs 2 "
                             "and stopping early needs a round after it")
