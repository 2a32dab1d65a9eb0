"""The pipeline: parameters checked before any work, and a chapter trained under a time budget, stopped and
resumed three times by the real papermill run, ends with the same weights and metrics as a run never stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
import yaml

from metalearn.core.train import DEADLINE_ENV
from metalearn.study import pipeline

ROOT = Path(__file__).resolve().parents[1]

TINY = '''
from pathlib import Path
import json
import torch
from metalearn.gradient.maml import train_maml
from metalearn.gradient.regression import SinusoidSampler, sinusoid_mlp
from metalearn.gradient.outer_loop import MetaTraining
from metalearn.study.experiment import FitContext, fit

torch.manual_seed(seed)
model = sinusoid_mlp(8)
curve, seconds = fit("sine", model, SinusoidSampler(5, 5), steps, train_maml,
                     MetaTraining(tasks=2, inner_steps=1, inner_lr=0.01, inner="all", regression=True),
                     FitContext("tiny", seed, checkpoint_dir, models_dir))
Path(out_dir).mkdir(parents=True, exist_ok=True)
(Path(out_dir) / "tiny.json").write_text(json.dumps({"loss": curve["loss"].tolist()}))
'''


def _project(root: Path, steps: int = 4) -> Path:
    """A project with one tiny chapter (a sinusoid MLP meta-trained for ``steps`` steps)."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('scale = "smoke"\nout_dir = "../scratch"\nmodels_dir = ""\n'
                                       'checkpoint_dir = ""\nseed = 0\nsteps = 2')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TINY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (root / "notebooks").mkdir(parents=True)
    nbformat.write(nb, root / "notebooks" / "tiny.ipynb")
    (root / "params.yaml").write_text(yaml.safe_dump({"tiny": {"steps": steps, "checkpoint_dir": "../checkpoints"}}))
    return root


def test_unknown_params_fail_before_any_work(tmp_path):
    root = _project(tmp_path)
    (root / "params.yaml").write_text("tiny:\n  steps: 3\n  stpes: 4\n")
    with pytest.raises(ValueError, match=r"params.yaml: tiny.stpes is not a parameter of notebooks/tiny.ipynb; "
                                         r"allowed keys: checkpoint_dir, seed, steps"):
        pipeline.run("tiny", "study", root=root)
    (root / "params.yaml").write_text("tiny:\n  steps: 3\ntinny:\n  steps: 3\n")
    with pytest.raises(ValueError, match="section 'tinny' is not a notebook's; sections: tiny"):
        pipeline.run("tiny", "study", root=root)
    assert not (root / "reports").exists() and not (root / "models").exists()


def test_nested_keys_are_checked(tmp_path):
    root = _project(tmp_path)
    nb = root / "notebooks" / "tiny.ipynb"
    nb.write_text(nb.read_text().replace("steps = 2", "steps = 2\\nsettings = {'a_5way': {'steps': 1}}"))
    (root / "params.yaml").write_text("tiny:\n  settings: {a_5way: {steps: 3, stesp: 4}}\n")
    with pytest.raises(ValueError, match=r"tiny.settings.a_5way.stesp is not a key of the notebook's default; "
                                         r"allowed keys: steps"):
        pipeline.check_params("study", root)


@pytest.mark.parametrize("scale", ["study", "paper"])
def test_the_real_params_files_are_valid(scale):
    params = pipeline.check_params(scale)
    assert set(params) == {pipeline.params_section(nb) for nb in pipeline.notebooks()}  # one per chapter


def test_budgeted_run_resumes_bit_identical(tmp_path, capfd):
    straight = _project(tmp_path / "straight")
    pipeline.run("tiny", "study", root=straight)
    shown = capfd.readouterr()
    assert "Executing" in shown.err  # the chapter's progress, in cells
    assert "WARNING" not in shown.out + shown.err  # the kernel talks over local sockets: no TCP warning to act on
    stopped = _project(tmp_path / "stopped")
    os.environ[DEADLINE_ENV] = "0"  # a shell's leftover deadline does not reach a run without --minutes
    try:
        pipeline.run("tiny", "study", root=_project(tmp_path / "unbudgeted"))
    finally:
        del os.environ[DEADLINE_ENV]
    for stop in (1, 2, 3):  # --minutes 0: every call makes one training step, saves, and stops
        with pytest.raises(pipeline.NotFinished, match=f"stopped at step {stop} of 4"):
            pipeline.run("tiny", "study", minutes=0, root=stopped)
        assert not (stopped / "reports" / "tiny.json").exists()  # no report until every model is trained
    pipeline.run("tiny", "study", minutes=0, root=stopped)
    a, b = (torch.load(r / "models" / "tiny" / "sine.pt", weights_only=True) for r in (straight, stopped))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert (straight / "reports" / "tiny.json").read_text() == (stopped / "reports" / "tiny.json").read_text()
    record = json.loads((stopped / "models" / "tiny" / "sine.json").read_text())
    assert record["steps"] == 4 and len(json.loads((stopped / "reports" / "tiny.json").read_text())["loss"]) == 4


def test_cli_says_not_finished_with_its_own_status(monkeypatch, capsys):
    def stopped(*args, **kwargs):
        raise pipeline.NotFinished("tiny: stopped at step 1 of 4")

    monkeypatch.setattr(pipeline, "run", stopped)
    assert pipeline.main(["00_background", "--minutes", "1"]) == pipeline.NOT_FINISHED == 75
    assert "NOT FINISHED (run the same command again to continue)" in capsys.readouterr().err


def test_plan_lists_the_stages_with_their_last_durations(tmp_path):
    root = _project(tmp_path)
    pipeline.run("tiny", "study", root=root)
    ran = pipeline.last_duration("tiny", root)
    assert ran is not None and ran > 0 and pipeline.last_duration("data", root) is None
    (root / "reports" / "metrics").mkdir(parents=True)
    (root / "reports" / "metrics" / "tiny.json").write_text(json.dumps({"seconds": {"training": 5400.0,
                                                                                   "evaluation": 600.0}}))
    assert pipeline.last_duration("tiny", root) == 6000.0  # a run that reused its models does not hide their cost
    text = pipeline.plan(["data", "tiny"], root)
    assert "will run 2 stages" in text and "tiny  1.7 h" in text and "plus 1 stage(s) without a record" in text
    assert pipeline.plan([], root).startswith("every stage is up to date")


def test_stages_to_run_reads_dvc_in_its_order():
    import re

    stages = pipeline.stages_to_run(ROOT)
    order = re.findall(r"^  (\S+):$", (ROOT / "dvc.yaml").read_text(), re.MULTILINE)
    assert stages == [s for s in order if s in stages]  # a sub-sequence of dvc.yaml's stages, in order


def test_prepare_only_injects_the_scale_and_runs_nothing(tmp_path):
    root = _project(tmp_path)
    out = pipeline.prepare("tiny", "study", root=root)
    assert out == root / "scratch" / "tiny.study.ipynb"
    cells = nbformat.read(out, as_version=4).cells
    injected = next(c for c in cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'models_dir = "../models"' in injected.source and 'out_dir = "../scratch"' in injected.source
    assert "steps = 4" in injected.source and not any(c.get("outputs") for c in cells if c.cell_type == "code")
    assert not (root / "models").exists()
