"""The type checker holds a trainer and its settings together: handing a method's entry point another method's
settings is an error of ``mypy`` (run over the library by ``make test``), not a failure hours into a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL = '''
from metalearn.core.episodes import EpisodeSampler
from metalearn.core.models import mlp
from metalearn.gradient.inner_loop import Adaptation
from metalearn.gradient.maml import train_maml
from metalearn.gradient.outer_loop import MetaTraining
from metalearn.metric.episodic import Episodic
from metalearn.study.experiment import FitContext, fit


def run(sampler: EpisodeSampler) -> None:
    fit("m", mlp([2, 2]), sampler, 1, train_maml, {settings}, FitContext("t", 0))
'''
MAML = ('MetaTraining(tasks=1, inner_steps=1, inner_lr=0.1, inner="all", '
        'test=Adaptation(steps=1, lr=0.1, inner="all", protocol="transductive"))')


def _mypy(tmp_path: Path, settings: str) -> subprocess.CompletedProcess:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(CALL.format(settings=settings))
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", str(snippet)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_a_trainer_with_another_methods_settings_is_a_type_error(tmp_path: Path) -> None:
    good = _mypy(tmp_path, MAML)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(tmp_path, "Episodic(lr=1e-3)")
    assert bad.returncode == 1 and "snippet.py:12: error" in bad.stdout, bad.stdout + bad.stderr
