"""Export a trial's adapter: as a ready-to-use adapter folder, or merged into its base model.

    python -m harness.export runs/<study>/trials/<n>                 adapter folder -> <trial>/export/
    python -m harness.export runs/<study>/trials/<n> --merge         base + adapter as one model
    python -m harness.export runs/<study>/trials/<n> --out DIR --push-to-hub USER/NAME

Without --merge: the trial's adapter/ (adapter_model.safetensors, adapter_config.json, tokenizer,
harness_adapter.json), for `peft.PeftModel.from_pretrained(base, DIR)` or
`peft.AutoPeftModelForSequenceClassification.from_pretrained(DIR)`.
With --merge: the base loaded exactly as the trial loaded it (same quantization), de-quantized
(transformers' `dequantize()`: the 4-bit weights the adapter was trained against, not the original
fp32 ones), the adapter applied and merged (`merge_and_unload`), saved in float32 safetensors with the
tokenizer and the label names, loadable with AutoModelForSequenceClassification / AutoModelForCausalLM.
A merged NF4 export is not bit-exact with the trial (the trial computed in quant.compute_dtype through
the 4-bit kernels, the merged model in float32): tests/trial/test_export.py states the tolerance.
--push-to-hub uploads the exported folder with huggingface_hub (needs a token and the network; both
are checked before any work).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from harness.record import ADAPTER, META, read_record


class ExportError(ValueError):
    """An export that cannot be done; one line, exit code 2."""


def _adapter_dir(trial: Path) -> Path:
    src = trial / ADAPTER
    if not (src / "adapter_config.json").is_file():
        raise ExportError(f"{src}: no saved adapter; the trial ran with train.save_adapter=none, or its study kept only "
                          "the best configuration's adapters (save_adapter=best): export one of the kept trials")
    if not (trial / "result.json").is_file():
        raise ExportError(f"{trial}: no result.json; give a finished trial's directory runs/<study>/trials/<n>")
    return src


def merge(trial: Path, out: Path) -> Path:
    """De-quantized base + merged adapter, saved as float32 safetensors in out."""
    import torch
    import transformers
    from peft import PeftModel

    from harness.config import schema as config_mod
    from harness.trial.models import load_base, load_tokenizer

    transformers.utils.logging.set_verbosity_error()  # the "newly initialized head" note: the adapter brings it
    transformers.utils.logging.disable_progress_bar()
    src = _adapter_dir(trial)
    meta = json.loads((src / META).read_text())
    # the resolved config the trial ran (result.json has it whichever way the trial was started)
    rec = read_record(trial / "result.json")
    if rec is None or rec.config is None:
        raise ExportError(f"{trial}/result.json is unreadable or holds no config")
    cfg = config_mod.complete(rec.config)
    tokenizer = load_tokenizer(cfg)
    labels = meta.get("labels") or []
    base = load_base(cfg, len(labels), "cpu", tokenizer)
    if getattr(base, "hf_quantizer", None) is not None:
        base = base.dequantize()
    base = base.to(torch.float32)
    model = PeftModel.from_pretrained(base, str(src)).merge_and_unload()
    if cfg.task.type == "classification":
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {v: k for k, v in enumerate(labels)}
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / META).write_text(json.dumps({**meta, "merged": True}, indent=1) + "\n")
    return out


def push_check(repo_id: str) -> None:
    """Before any work: offline mode or no token is one line, not a traceback after the merge."""
    from huggingface_hub import get_token
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise ExportError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it (and be online) to upload")
    if not get_token():
        raise ExportError(f"--push-to-hub {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN")


def push(folder: Path, repo_id: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id).commit_url
    except (HfHubHTTPError, OSError) as e:  # requests' ConnectionError is an OSError
        raise ExportError(f"--push-to-hub {repo_id}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def export(trial: Path, out: Path | None = None, merged: bool = False, push_to: str | None = None) -> Path:
    trial = Path(trial)
    src = _adapter_dir(trial)
    if push_to:
        push_check(push_to)
    out = Path(out) if out else trial / ("merged" if merged else "export")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; pass --out to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    if merged:
        merge(trial, out)
    else:
        shutil.copytree(src, out, dirs_exist_ok=True)
    if push_to:
        print(f"[harness] pushed: {push(out, push_to)}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__.split("\n\n")[0])
    p.add_argument("trial", type=Path, help="runs/<study>/trials/<n>")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the de-quantized base")
    p.add_argument("--out", type=Path, help="output directory (default <trial>/export or <trial>/merged)")
    p.add_argument("--push-to-hub", metavar="ID", help="upload the result to this hub repo (needs a token)")
    a = p.parse_args(argv)
    try:
        out = export(a.trial, a.out, a.merge, a.push_to_hub)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
