"""The command line as Hydra users know it, kept on purpose where it fits and replaced where not.

Kept: `key=value` overrides, `group=option`, `-m/--multirun` with Hydra's sweep syntax
(`lora.r=4,8`, `range(2,10,2)`, `choice(a,b)`), `--cfg job|all`, `--config-dir DIR`,
`hydra.searchpath=[file://DIR]`. Replaced: a multirun is not N unrelated jobs under
multirun/<date>/ but one grid study (Optuna storage, resume, one table at the end); outputs go
to `out_dir=` (runs/<study>/trials/<n>/), so Hydra's own `hydra.run.dir` & co. are refused
rather than silently ignored.
"""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.config.schema import CONF_DIR, ConfigError

USAGE = """usage: python -m harness [-m] [--cfg [job|all]] [sweep=NAME] [group=option ...] [key=value ...]

  (no sweep)          one trial on the composed config (runs/<study>/trials/<n>/)
  sweep=NAME          the Optuna study in sweeps/NAME.yaml; rerun the same command to resume it
  -m, --multirun      comma lists, range(start,stop[,step]) and choice(...) values become one grid study,
                      e.g. python -m harness -m lora.r=4,8,16 lora.targets=attn_qv,all_linear
  --cfg [job|all]     print the resolved config and exit (job and all are the same: there is no hydra part)
  --config-dir DIR    also read groups and sweeps from DIR (DIR/<group>/<option>.yaml, DIR/sweep/NAME.yaml)
  -h, --help          this text; --version the harness version
  key=value           any key of `--cfg` (lora.r=16); +key=value adds, ~key removes, as in Hydra
  out_dir=DIR         where runs go (default runs/); study=NAME names runs/<study>/ and the Optuna study"""

# Hydra flags that make no sense here, and what to do instead
REFUSED = {
    "--config-name": "the harness composes conf/config.yaml; put your groups and sweeps in a directory "
                     "and pass --config-dir DIR",
    "--config-path": "pass --config-dir DIR (groups and sweeps in DIR are added to conf/)",
    "--shell-completion": "shell completion is not supported; `python -m harness --help` lists groups and sweeps",
    "--hydra-help": "Hydra's own settings are not used: `python -m harness --help`",
    "--experimental-rerun": "rerun a study trial with the command its summary prints (or its trials/<n>/config.yaml)",
}
SHORT = {"-cn": "--config-name", "-cp": "--config-path", "-cd": "--config-dir", "-sc": "--shell-completion",
         "-c": "--cfg", "-m": "--multirun", "-h": "--help", "-i": "--info", "-r": "--run"}


@dataclass
class Args:
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    show: str | None = None       # --cfg: "job" or "all"
    help: bool = False
    version: bool = False


def parse(argv: list[str]) -> Args:
    """Flags and overrides; a bad flag or a hydra.* override is a ConfigError (one line, exit 2)."""
    a, it = Args(), iter(enumerate(argv))
    search: list[str] = []
    for i, arg in it:
        flag, eq, val = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = SHORT.get(flag, flag)
        if not flag.startswith("-"):
            a.overrides.append(arg)
        elif flag in ("--help", "--info"):
            a.help = True
        elif flag == "--version":
            a.version = True
        elif flag == "--multirun":
            a.multirun = True
        elif flag == "--run" or flag == "--resolve":
            pass  # a single run is the default; configs are always printed resolved
        elif flag == "--cfg":
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if not eq and nxt in ("job", "all", "hydra"):
                val = next(it)[1]
            if (val or "job") == "hydra":
                raise ConfigError("--cfg hydra: Hydra's own config is not used here; outputs go to out_dir=DIR "
                                  "(runs/<study>/trials/<n>/); --cfg job prints the run's config")
            if (val or "job") not in ("job", "all"):
                raise ConfigError(f"--cfg {val}: expected --cfg, --cfg job or --cfg all")
            a.show = val or "job"
        elif flag == "--config-dir":
            d = val or (next(it, (0, ""))[1])
            if not d or not Path(d).is_dir():
                raise ConfigError(f"--config-dir {d or '(missing)'}: not a directory")
            search.append(f"file://{Path(d).resolve()}")
        elif flag in REFUSED:
            raise ConfigError(f"{arg}: {REFUSED[flag]}")
        else:
            raise ConfigError(f"{arg}: unknown option; options: -m/--multirun, --cfg [job|all], --config-dir DIR, "
                              "--help, --version; everything else is key=value (`python -m harness --help`)")
    for o in a.overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.startswith(("hydra.", "hydra/")) and key != "hydra.searchpath":
            raise ConfigError(f"{o}: Hydra's run/output settings are not used here; outputs go to out_dir=DIR "
                              "(default runs/: runs/<study>/trials/<n>/{config.yaml,log.txt,result.json}); "
                              "hydra.searchpath=[file://DIR] (or --config-dir DIR) adds config groups and sweeps")
    if search:
        a.overrides.append(_merge_searchpath(a.overrides, search))
    return a


def _merge_searchpath(overrides: list[str], extra: list[str]) -> str:
    """--config-dir DIR adds to any hydra.searchpath=[...] already given (Hydra takes one list)."""
    given = [o for o in overrides if o.startswith("hydra.searchpath=")]
    for o in given:
        overrides.remove(o)
        extra = [*re.findall(r"file://[^,\]]+|pkg://[^,\]]+", o), *extra]
    return f"hydra.searchpath=[{','.join(extra)}]"


# ---------------------------------------------------------------------------- multirun


def _parse_overrides(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"a command-line override: {str(e).splitlines()[0]}") from None


def reject_sweeps(overrides: list[str]) -> None:
    """Without -m, `lora.r=4,8` is a sweep by mistake (or a list without brackets): say both ways."""
    for o in _parse_overrides(overrides):
        if o.is_sweep_override():
            raise ConfigError(f"{o.input_line} sweeps several values: add -m to run them as a grid study "
                              f"(python -m harness -m {o.input_line} ...), or write {o.key_or_group}=[...] for a list "
                              "value, or quote it for a string")


def study_name(axes: dict[str, list], base: list[str]) -> str:
    """`multirun-lora.r_4-8-16` (+ a hash of the other overrides, so another base config is another study)."""
    def part(v) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "", str(v)) or "x"

    name = "multirun-" + "__".join(f"{part(k)}_{'-'.join(part(v) for v in vals)}" for k, vals in axes.items())
    if base:
        name = name[:120] + "-" + hashlib.sha1(" ".join(sorted(base)).encode()).hexdigest()[:6]
    return name[:128]


def multirun(overrides: list[str]) -> tuple[list[str], str | None]:
    """-m: overrides with several values become `sweep.space` axes of one grid study run through
    harness.study.run_study (the same driver, storage, resume and summary as sweep=NAME). Returns the
    overrides of that study and a note naming it; no sweep override: the overrides unchanged."""
    from harness.study.space import format_value

    parsed = _parse_overrides(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if not sweeps:
        return overrides, None
    if any(o.key_or_group == "sweep" for o in parsed):
        raise ConfigError("-m with comma/range/choice values builds its own study: drop sweep=NAME, or add the "
                          "axes to a copy of that sweep file (sweep.space)")
    axes, seeds = {}, [0]
    for o in sweeps:
        if o.is_add() or o.is_delete():
            raise ConfigError(f"{o.input_line}: -m searches keys of the config; drop the + or ~")
        try:
            vals = list(o.sweep_iterator())
        except Exception:  # noqa: BLE001 - Hydra raises a bare Exception for interval()
            raise ConfigError(f"{o.input_line}: interval() has no grid; write a sweep file with "
                              f"sweep.space.{o.key_or_group}: {{low: ..., high: ...}} and a sampler (see sweeps/)") \
                from None
        if o.key_or_group == "seed":
            seeds = vals
        else:
            axes[o.key_or_group] = vals
    base = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("sweep.")
            and o.key_or_group != "study"]
    fixed_seed = [o for o in parsed if o.key_or_group == "seed" and not o.is_sweep_override()]
    if fixed_seed:  # the driver sets seed= per trial from sweep.seeds
        seeds = [fixed_seed[-1].value()]
        base = [b for b in base if b.split("=", 1)[0] != "seed"]
    if not axes:
        raise ConfigError("-m seed=...: a study needs an axis besides the seed; add one, e.g. lora.r=choice(8) "
                          "for a single value")
    study = next((o.value() for o in reversed(parsed) if o.key_or_group == "study"), None) or study_name(axes, base)
    space = ",".join(f"{k}:{{choices:{format_value(v)}}}" for k, v in axes.items())
    # file: what errors name as the sweep's source (there is no file)
    block = (f"+sweep={{name:multirun,file:'-m (command line)',space:{{{space}}},sampler:grid,"
             f"seeds:{format_value(seeds)}}}")
    # sweep.parallel=2 etc. on the command line: set inside the block (++ adds or replaces)
    extra = [f"++{o.input_line.lstrip('+')}" for o in parsed if o.key_or_group.startswith("sweep.")]
    n = len(seeds)
    for vals in axes.values():
        n *= len(vals)
    note = (f"multirun: study {study}, a grid of {n} trial(s) over {', '.join(axes)}"
            + (f" x seeds {seeds}" if len(seeds) > 1 else "") + "; the same command resumes it")
    return [*base, f"study={study}", block, *extra], note


# ---------------------------------------------------------------------------- --help


def _defaults() -> dict[str, str | None]:
    out = {}
    for d in yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", []):
        if isinstance(d, dict):
            out.update(d)
    return out


def description(path: Path) -> str:
    """A config file's first line of prose: after `# @package`, the command and the blank `#` line."""
    lines = [ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")]
    prose = [ln for ln in lines if ln and not ln.startswith(("@package", "python -m harness"))]
    after_blank = lines[lines.index("") + 1:] if "" in lines else []
    first = next((ln for ln in after_blank if ln), None) or next(iter(prose), "")
    return first


def help_text() -> str:
    defaults = _defaults()
    groups = sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir() and d.name != "sweep")
    width = max(map(len, groups))
    lines = [USAGE, "", "config groups (group=option; * = the default):"]
    for g in groups:
        opts = sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
        lines.append(f"  {g:<{width}}  " + "  ".join(("*" if o == defaults.get(g) else "") + o for o in opts))
    sweeps = sorted((CONF_DIR / "sweep").glob("*.yaml"))
    width = max((len(p.stem) for p in sweeps), default=0)
    lines += ["", f"sweeps (sweep=NAME; files in {CONF_DIR / 'sweep'}):"]
    lines += [f"  {p.stem:<{width}}  {description(p)}" for p in sweeps]
    return "\n".join(lines)


def version() -> str:
    from importlib import metadata

    try:
        return f"harness {metadata.version('harness')}"
    except metadata.PackageNotFoundError:
        return "harness (not installed: a checkout on PYTHONPATH)"


def say(msg: str) -> None:
    print(msg, file=sys.stderr)
