"""A parameter sweep on DVC's experiment queue, at smoke scale: ProtoNet's training ways, two points.

A throw-away DVC project runs the real notebooks through papermill: chapter 00 (its test episodes, which chapter 04
pairs with) and chapter 04 with ``omniglot_train_ways`` from its ``params.yaml``. Two experiments are queued with
``dvc exp run --queue -S``, run by ``dvc queue start``, and tabulated by ``dvc exp show`` (the README's worked
example, on the study's stage).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = """\
stages:
  background:
    cmd: papermill notebooks/00_background.ipynb bg.ipynb --cwd notebooks -k python3 -p out_dir ../bg
    deps: [notebooks/00_background.ipynb]
    outs: [bg, bg.ipynb]
  protonet:
    cmd: >-
      papermill notebooks/04_prototypical_networks.ipynb pn.ipynb --cwd notebooks -k python3 -p out_dir ../pn
      -p baseline_episodes ../bg/episodes/00_background.csv
      -p omniglot_train_ways ${prototypical_networks.omniglot_train_ways}
    deps: [notebooks/04_prototypical_networks.ipynb, bg/episodes/00_background.csv]
    params: [prototypical_networks.omniglot_train_ways]
    outs: [pn.ipynb]
    metrics:
      - pn/metrics/04_prototypical_networks.json:
          cache: false
"""


def _run(args: list[str], cwd: Path, timeout: int = 600) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_a_two_point_sweep_of_protonet_training_ways_on_the_dvc_queue(tmp_path: Path, monkeypatch):
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")  # DVC runs cmd with the caller's PATH
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    project = tmp_path / "sweep"
    (project / "notebooks").mkdir(parents=True)
    for nb in ("00_background", "04_prototypical_networks"):
        shutil.copy(ROOT / "notebooks" / f"{nb}.ipynb", project / "notebooks")
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "params.yaml").write_text("prototypical_networks:\n  omniglot_train_ways: 20\n")
    (project / ".gitignore").write_text("pn/*\n!pn/metrics/\n")
    dvc, git = [str(bin_dir / "dvc")], ["git", "-c", "user.name=sweep", "-c", "user.email=sweep@localhost"]
    _run([*git, "init", "-q"], project)
    _run([*dvc, "init", "-q"], project)
    _run([*dvc, "repro"], project)  # the baseline: both stages at ways 20
    _run([*git, "add", "-A"], project)
    _run([*git, "commit", "-qm", "baseline"], project)

    _run([*dvc, "exp", "run", "--queue", "-S", "prototypical_networks.omniglot_train_ways=5,10"], project)
    try:
        _run([*dvc, "queue", "start", "-j", "1"], project)
        deadline = time.time() + 900
        while True:
            status = _run([*dvc, "queue", "status"], project)
            if not any(state in status for state in ("Queued", "Running")):
                break
            assert time.time() < deadline, f"the queue did not finish:\n{status}"
            time.sleep(2)
    finally:
        subprocess.run([*dvc, "queue", "stop", "--kill"], cwd=project, capture_output=True, timeout=60)
    assert status.count("Success") == 2 and "Failed" not in status, status

    table = pd.read_csv(io.StringIO(_run([*dvc, "exp", "show", "--csv"], project)))
    ways = "prototypical_networks.omniglot_train_ways"
    accuracy = [c for c in table.columns if "accuracy" in c]
    assert ways in table.columns and accuracy, f"no sweep parameter or metrics in {list(table.columns)}"
    exps = table[table["typ"].isin(["branch_commit", "branch_base"])].set_index(ways)  # the experiments
    assert sorted(exps.index) == [5, 10], table[["Experiment", "typ", ways]]
    assert exps[accuracy].notna().all().all() and exps[accuracy].map(lambda v: 0 <= v <= 100).all().all()
    baseline = table[table["typ"] == "baseline"]  # the commit the experiments branch from
    assert len(baseline) and set(baseline[ways]) == {20}, table[["Experiment", "typ", ways]]
