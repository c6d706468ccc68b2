"""The install story: pyproject.toml declares ranges, constraints.txt pins the tested set, and the
two agree (a pin outside its range would make `pip install -c constraints.txt -e .` fail)."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt has no pin for {req.name}; regenerate it with scripts/make_constraints.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt pins {req.name}=={pins[name]}, outside {req}"


def test_core_dependencies_are_ranges_and_torch_is_not_pinned_to_a_build():
    core = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    exact = [str(r) for r in core if any(s.operator == "==" for s in r.specifier)]
    assert not exact, f"a library declares ranges, not pins: {exact} (pins go in constraints.txt)"
    assert "+" not in str(_pins()[canonicalize_name("torch")]), "pin torch==X, not X+cpu: a local label fails where no CPU index is configured"
