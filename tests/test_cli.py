"""A caller's mistake at a command line is one line and status 2, without a traceback; an unexpected failure keeps
its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn.core import cli
from metalearn.core.cli import UsageError
from metalearn.study import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _one_line_status_2(args: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_unknown_notebook_bad_scale_and_missing_mirror_are_one_line_and_status_2():
    assert "no notebook '04_protonet'" in _one_line_status_2(["metalearn.study.pipeline", "04_protonet"])
    assert "unknown scale 'huge'" in _one_line_status_2(["metalearn.study.pipeline", "04_prototypical_networks",
                                                         "--scale", "huge", "--prepare-only"])
    assert "--minutes must be >= 0" in _one_line_status_2(["metalearn.study.pipeline", "all", "--minutes", "-1"])
    missing = {"DATA_MIRROR": "no/such/mirror"}
    assert "is not a folder" in _one_line_status_2(["metalearn.datasets.fetch", "prepare", "omniglot"], missing)
    assert "unknown dataset 'omniglott'" in _one_line_status_2(["metalearn.datasets.fetch", "prepare", "omniglott"])


def test_unknown_params_key_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    nb = ROOT / "notebooks" / "01_siamese.ipynb"
    (tmp_path / "notebooks" / nb.name).write_bytes(nb.read_bytes())
    (tmp_path / "params.yaml").write_text("siamese:\n  stpes: 3\n")
    with pytest.raises(UsageError, match="params.yaml: siamese.stpes is not a parameter of notebooks/01_siamese"):
        pipeline.check_params("study", tmp_path)


def test_usage_errors_exit_2_and_other_failures_keep_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def mistaken(argv: list[str] | None) -> int:
        raise UsageError("no such thing; choose from a, b")

    def broken(argv: list[str] | None) -> int:
        raise RuntimeError("a bug")

    assert cli.run(mistaken) == 2
    assert capsys.readouterr().err == "error: no such thing; choose from a, b\n"
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(broken)
    assert cli.run(lambda argv: None) == 0
