"""Weight files: where they are and whether they are the ones we expect (sha256 from the manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_PATH = WEIGHTS_DIR / "manifest.json"


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path | str, expected: str) -> Path:
    """Raise WeightsError unless ``path`` exists and hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    actual = sha256_of(path)
    if actual != expected.lower():
        raise WeightsError(
            f"{path.name}: sha256 {actual[:16]}… does not match the manifest's {expected[:16]}…; "
            "the file is corrupt or not the one this version of SAMBASegment was built for"
        )
    return path


def manifest_entry(name: str) -> dict:
    manifest = json.loads(MANIFEST_PATH.read_text())
    if name not in manifest:
        raise WeightsError(f"{name!r} is not in the weight manifest {MANIFEST_PATH}")
    return manifest[name]
