"""Config errors as one line a user can act on: pydantic's and Hydra's messages reworded (key, got,
did you mean), and the `???` values left unset. Split from harness/config/schema.py (re-exported there)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


def one_line(msg: str) -> str:
    """An error message as one line: a line ending in ':' introduces a list (Hydra's "Available
    options in 'model':" then one option a line), joined by commas; other lines by '; '."""
    out, listing = "", False
    for line in (x.strip() for x in str(msg).splitlines()):
        if not line:
            continue
        out += ("" if not out else " " if out.endswith(":") else ", " if listing else "; ") + line
        listing = listing or line.endswith(":")
    return out


def format_validation_error(err: ValidationError, schema: type[BaseModel], data: dict | None = None) -> str:
    lines = []
    sweep_file = ((data or {}).get("sweep") or {}).get("file") if isinstance(data, dict) else None
    for e in err.errors():
        # a tagged union puts the tag in the location (task.sft.template): not a key a user writes
        key = ".".join(str(p) for p in e["loc"] if not (e["loc"][0] == "task" and p in ("classification", "sft")))
        got = e.get("input")
        got = "" if isinstance(got, dict) else f" (got {got!r})"
        where = f"{sweep_file}: " if sweep_file and key.startswith("sweep") else ""
        if e["type"] == "extra_forbidden":
            from harness.config.keys import did_you_mean

            hint = f"; {did_you_mean(key, schema)}"
        else:
            hint = ""
        lines.append(f"{where}{key or '<config>'}: {e['msg']}{got}{hint}")
    return "invalid config: " + "; ".join(lines)


# What to write for a `???` (required) value, by key
_REQUIRED_HINTS = {
    "data.path": "data.path=FILE (a .csv, .tsv, .jsonl, .json or .parquet file; a hub dataset id for data=hub)",
    "model.path": "model.path=ORG/NAME (a hub model id) or model.path=DIR (a local model directory)",
}


def check_missing(cfg: DictConfig) -> None:
    """A `???` value (data.path of data=local, model.path of model=hub) left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        group = key.split(".")[0]
        option = OmegaConf.select(cfg, f"{group}.name", default=None) if "." in key else None
        needs = f"{group}={option} needs it" if option else "it is required"
        fix = _REQUIRED_HINTS.get(key, f"{key}=VALUE")
        more = f" (also unset: {', '.join(missing[1:])})" if missing[1:] else ""
        raise ConfigError(f"{key} is not set ({needs}): add {fix} to the command{more}")
