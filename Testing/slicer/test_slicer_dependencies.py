"""The packages the module asks Slicer for: taken from pyproject's pins, checked without importing anything."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from SAMBASegmentMRML import dependencies

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_requirements_are_the_engine_pins_widened_to_their_minor_series():
    pins = {canonicalize_name(Requirement(line).name): Requirement(line)
            for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]}
    requirements = dependencies.moduleRequirements()
    assert dependencies.pyprojectPath() == PYPROJECT
    assert [r.name for r in requirements] == list(dependencies.MODULE_PACKAGES)
    for requirement in requirements:
        (pinned,) = pins[canonicalize_name(requirement.name)].specifier
        release = pinned.version.split(".")
        nextMinor = f"{release[0]}.{int(release[1]) + 1}"
        assert requirement.specifier.contains(pinned.version)
        assert not requirement.specifier.contains(nextMinor)
        assert set(map(str, requirement.specifier)) == {f">={pinned.version}", f"<{nextMinor}"}


def test_packages_slicer_ships_are_never_requested():
    requested = {canonicalize_name(r.name) for r in dependencies.moduleRequirements()}
    assert not requested & {canonicalize_name(name) for name in dependencies.SLICER_BUNDLED}


def test_this_environment_built_from_the_pins_satisfies_the_module():
    assert dependencies.unsatisfied(dependencies.moduleRequirements()) == []
    assert dependencies.missingBundled() == []


def test_absent_or_out_of_range_packages_are_reported_with_what_is_installed():
    absent, tooOld = Requirement("sambasegment-no-such-package>=1"), Requirement("numpy<1")
    assert dependencies.unsatisfied([absent, tooOld, Requirement("numpy>=1")]) == [absent, tooOld]
    assert dependencies.describe(absent).endswith("(not installed)")
    assert "installed: " + dependencies.installedVersion("numpy") in dependencies.describe(tooOld)


def test_torch_goes_through_the_pytorch_extension_when_it_is_there():
    requirements = dependencies.moduleRequirements()
    torch, pip = dependencies.installPlan(requirements, torchExtension=True)
    assert torch.name == "torch"
    assert [r.name for r in pip] == [n for n in dependencies.MODULE_PACKAGES if n not in ("torch", "torchvision")]
    torch, pip = dependencies.installPlan(requirements, torchExtension=False)
    assert torch is None and [r.name for r in pip] == list(dependencies.MODULE_PACKAGES)
    torch, pip = dependencies.installPlan(requirements[2:], torchExtension=True)
    assert torch is None and len(pip) == len(requirements) - 2
