"""Project wiring: pins agree, README and CI agree, params match the notebooks, notebooks are clean."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from papermill.inspection import inspect_notebook

from metalearn.study.pipeline import notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _pins(reqs):
    out = {}
    for r in map(Requirement, reqs):
        (spec,) = r.specifier
        assert spec.operator == "==", f"{r} is not pinned exactly"
        out[r.name.lower()] = spec.version
    return out


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == py
    assert "python=3.11" in env["dependencies"]
    assert py["torch"] == "2.13.0" and py["torchvision"] == "0.28.0"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.M)
    assert commands == ["make reports", "make test"]
    assert re.search(r"^make test$", ci, flags=re.M)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_and_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "stored outputs"
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    declared = set(inspect_notebook(str(nb)))
    for scale in ("study", "paper"):
        passed = set(notebook_parameters(nb.stem, scale))
        assert passed <= declared, f"{scale} passes unknown parameters {passed - declared}"


def test_every_notebook_is_a_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for nb in NOTEBOOKS:
        assert nb.stem in stages and f"notebooks/{nb.name}" in stages[nb.stem]["deps"]


def test_bad_scale_and_section():
    with pytest.raises(ValueError, match="unknown scale"):
        notebook_parameters("00_background", "huge")
    with pytest.raises(ValueError, match="no section"):
        notebook_parameters("99_missing", "study")


def test_no_temporary_or_failed_outputs_are_tracked():
    """Atomic writes and failed papermill runs leave `.<name>.tmp*` / `*.failed.ipynb` files; none may be committed."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = [f for f in tracked if re.search(r"(^|/)\.[^/]*\.tmp(\.|$)|\.failed\.ipynb$", f)]
    assert not bad, f"temporary files are tracked: {bad}"
