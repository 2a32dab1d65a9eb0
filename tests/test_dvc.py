"""The DVC pipeline (its library dependencies are generated and tested in ``test_chapters.py``): every notebook is a
stage whose rows the ``results`` stage collects (but the summary, which reads them), the report site is built
from every executed chapter, trained models are persistent outputs, and a second
``dvc repro`` started while one runs fails on DVC's lock without losing anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from papermill.inspection import inspect_notebook

from metalearn.study.pipeline import params_section

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# chapters that read the others' results and train nothing: no rows, curves, metrics or models of their own
READING = {"14_summary"}
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def _paths(entries: list[str | dict]) -> dict[str, dict]:
    """dvc.yaml's list of paths (``"a"`` or ``{"a": {options}}``) as ``{path: options}``."""
    out = {}
    for entry in entries:
        if isinstance(entry, str):
            out[entry] = {}
        else:
            ((path, options),) = entry.items()
            out[path] = options or {}
    return out


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_stage_outputs(nb: Path) -> None:
    stage = STAGES[nb.stem]
    assert not [p for p in _paths(stage["outs"]) if p.endswith(".html")], "a chapter's one HTML is the site's page"
    if nb.stem in READING:
        assert set(_paths(stage["outs"])) == {f"reports/notebooks/{nb.name}",
                                               f"reports/figures/{nb.stem}"}
        assert "metrics" not in stage
        return
    outs, metrics = _paths(stage["outs"]), _paths(stage["metrics"])
    for path in (f"reports/rows/{nb.stem}.csv", f"reports/curves/{nb.stem}.csv",
                 f"reports/curves/{nb.stem}_validation.csv", f"reports/notebooks/{nb.name}"):
        assert outs[path] == {"cache": False}
    assert metrics == {f"reports/metrics/{nb.stem}.json": {"cache": False}}
    if "models_dir" in inspect_notebook(str(nb)):  # a training stage: its weights are committed and kept
        assert outs[f"models/{nb.stem}"] == {"cache": False, "persist": True}
    assert params_section(nb.stem) in stage["params"]


def test_every_notebook_is_staged_collected_and_plotted() -> None:
    assert set(STAGES) == {"data", "features", "results", "site", *(nb.stem for nb in NOTEBOOKS)}
    names = [nb.stem for nb in NOTEBOOKS if nb.stem not in READING]
    assert {f"reports/rows/{n}.csv" for n in names} <= set(_paths(STAGES["results"]["deps"]))
    assert {f"reports/curves/{n}.csv" for n in names} <= set(_paths(DVC["plots"]))
    validation_plots = {next(iter(p["y"])) for p in _paths(DVC["plots"]).values() if isinstance(p.get("y"), dict)}
    assert {f"reports/curves/{n}_validation.csv" for n in names} <= validation_plots


def test_metric_chapters_pair_with_the_baseline_episodes_chapter_00_writes() -> None:
    episodes = "reports/episodes/00_background.csv"
    assert episodes in _paths(STAGES["00_background"]["outs"])
    for nb in NOTEBOOKS:
        if nb.stem[:2] in {"01", "02", "03", "04", "05"}:
            assert episodes in _paths(STAGES[nb.stem]["deps"]), nb.stem
            assert inspect_notebook(str(nb))["baseline_episodes"]["default"] == '"../scratch/episodes/00_background.csv"'
            assert yaml.safe_load((ROOT / "params.yaml").read_text())[params_section(nb.stem)]["baseline_episodes"] \
                == f"../{episodes}"


def test_chapters_on_the_shared_episodes_write_them_and_the_summary_pairs_on_them() -> None:
    """Chapters 00, 02-05 and 08 score the same test episodes and write every episode's accuracy; the summary reads
    them all to pair the families (a chapter that writes them without declaring the output would go stale unseen)."""
    writers = {nb.stem for nb in NOTEBOOKS if "results.write_episodes(" in nb.read_text()}
    assert {"00_background", "02_relation_network", "03_matching_network", "04_prototypical_networks", "05_meta_gnn",
            "08_hypernetworks"} <= writers
    for name in writers:
        assert _paths(STAGES[name]["outs"])[f"reports/episodes/{name}.csv"] == {"cache": False}, name
    assert "reports/episodes" in _paths(STAGES["14_summary"]["deps"])
    assert inspect_notebook(str(ROOT / "notebooks/14_summary.ipynb"))["episodes_dir"]["default"] \
        == '"../reports/episodes"'


def test_gradient_chapters_depend_on_the_models_they_pair_with() -> None:
    """10 and 12 score chapter 09's MAML models on their own test episodes, 11 chapter 10's FOMAML models."""
    pairs = {"10_fomaml": "models/09_maml", "12_anil": "models/09_maml", "11_reptile": "models/10_fomaml"}
    for stage, models in pairs.items():
        assert models in _paths(STAGES[stage]["deps"]), stage


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def test_concurrent_repro_fails_on_the_lock_and_loses_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    subprocess.run(["git", "init", "-q"], check=True, **run)
    subprocess.run(_dvc("init", "-q"), check=True, **run)
    subprocess.run(_dvc("config", "core.analytics", "false"), check=True, **run)
    # long enough for a second dvc process to start while the first one's stage runs
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": {
        "cmd": "touch started && sleep 4 && echo done > out.txt", "outs": ["out.txt"]}}}))
    first = subprocess.Popen(_dvc("repro"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first repro did not start its stage"
            time.sleep(0.05)
        second = subprocess.run(_dvc("repro"), **run)
        assert first.poll() is None, "the first repro ended before the second was refused"
        assert second.returncode != 0
        message = second.stdout + second.stderr
        assert "out.txt' is busy" in message and ".dvc/tmp/rwlock" in message, message  # DVC's read/write lock
        out, _ = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert (tmp_path / "out.txt").read_text() == "done\n"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert [o["path"] for o in lock["stages"]["slow"]["outs"]] == ["out.txt"]
    status = subprocess.run(_dvc("status"), **run)
    assert status.returncode == 0 and "up to date" in status.stdout


def test_site_is_built_from_every_executed_chapter() -> None:
    stage = STAGES["site"]
    deps = set(_paths(stage["deps"]))
    assert {f"reports/notebooks/{nb.name}" for nb in NOTEBOOKS} <= deps
    assert {"reports/results.csv", "lib/metalearn/study/site.py", "reports/figures"} <= deps
    assert {"reports/index.html", "reports/site"} <= set(_paths(stage["outs"]))
