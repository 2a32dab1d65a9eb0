"""Run study notebooks through papermill at a given scale (what each DVC stage and ``make paper`` call).

    python -m metalearn.study.pipeline 00_background                              # study scale: params.yaml -> reports/
    python -m metalearn.study.pipeline 00_background --scale paper                # papers' budgets -> reports/paper/
    python -m metalearn.study.pipeline all --scale paper --minutes 8              # every chapter, at most 8 min of training
    python -m metalearn.study.pipeline 04_prototypical_networks --prepare-only   # a study-scale copy to open in JupyterLab
    python -m metalearn.study.pipeline plan                                       # what `dvc repro` would run, and how long

The notebook's ``parameters`` cell holds the smoke scale (what nbval runs); the scale's parameter file overrides
it (section ``maml`` for ``09_maml``: the name without its number), and every key of that file is checked against
the notebooks' parameters before anything runs. The executed notebook and an HTML rendering land in
``<out_dir>/notebooks/``; trained models in ``models/`` (``models/paper/``).

With ``--minutes M`` training stops after M minutes (at least one step per model), saves its state and the command
exits with status 75, "not finished, run again"; run again, it continues where it stopped. A chapter writes its
reports once all its models are trained. ``all`` skips a chapter whose reports at that scale came from the same
notebook, parameters and library source (DVC does this for the study scale).

``plan`` (what ``make reports`` prints before it starts) lists the stages ``dvc repro`` would run, each with the
duration of its last recorded run (the executed notebook's papermill record), and their total. A running chapter shows
its progress in cells.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from metalearn.core import cli
from metalearn.core.cli import UsageError
from metalearn.core.files import atomic_path
from metalearn.core.source import closure, code_imports, source_hashes
from metalearn.core.train import DEADLINE_ENV
from metalearn.datasets.fetch import check_mirror

ROOT = Path(__file__).resolve().parents[3]
SCALES = {"study": ("params.yaml", "reports", "models"), "paper": ("params_paper.yaml", "reports/paper", "models/paper")}
NOT_FINISHED = 75  # EX_TEMPFAIL: the time budget ran out; the same command continues the work


class NotFinished(RuntimeError):
    """A notebook stopped at its time budget with its training state saved."""


def notebooks(root: Path = ROOT) -> list[str]:
    """The chapters in order (``notebooks/*.ipynb``)."""
    return sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))


def check_notebook(notebook: str, root: Path = ROOT) -> None:
    """A :class:`~metalearn.core.cli.UsageError` naming the chapters if ``notebook`` is not one of them."""
    if notebook not in notebooks(root):
        raise UsageError(f"no notebook {notebook!r} in notebooks/; the chapters are {', '.join(notebooks(root))} "
                         "(or all)")


def params_section(notebook: str) -> str:
    """A notebook's section in the parameter files: its name without the chapter number (``09_maml`` -> ``maml``),
    since DVC's ``dvc exp run -S section.key=value`` takes no key that starts with a digit."""
    number, _, name = notebook.partition("_")
    return name if number.isdigit() and name else notebook


def declared_parameters(notebook: str, root: Path = ROOT) -> dict:
    """The names and defaults of a notebook's ``parameters`` cell."""
    from papermill.inspection import inspect_notebook

    return inspect_notebook(str(root / "notebooks" / f"{notebook}.ipynb"))


def check_params(scale: str, root: Path = ROOT) -> dict[str, dict]:
    """The scale's parameter file, every section a notebook and every key one of its parameters; a ``ValueError``
    naming the section or key and the allowed ones otherwise (a :class:`~metalearn.core.cli.UsageError`)."""
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)} (smoke = the notebook defaults)")
    params_file = SCALES[scale][0]
    params = yaml.safe_load((root / params_file).read_text()) or {}
    chapters = {params_section(nb): nb for nb in notebooks(root)}
    for section, values in params.items():
        if section not in chapters:
            raise UsageError(f"{params_file}: section {section!r} is not a notebook's; sections: {', '.join(chapters)}")
        declared = declared_parameters(chapters[section], root)
        allowed = set(declared) - {"scale", "out_dir", "models_dir"}
        unknown = sorted(set(values or {}) - allowed)
        if unknown:
            raise UsageError(f"{params_file}: {section}.{unknown[0]} is not a parameter of "
                             f"notebooks/{chapters[section]}.ipynb; allowed keys: {', '.join(sorted(allowed))}")
        for key, value in (values or {}).items():
            try:
                default = ast.literal_eval(declared[key]["default"])
            except (ValueError, SyntaxError):  # a default that is an expression: nothing to compare with
                continue
            _check_nested(f"{params_file}: {section}.{key}", value, default)
    return params


def _check_nested(where: str, value: object, default: object) -> None:
    """A dict-valued parameter has the keys of the notebook's default, level by level (e.g. the gradient chapters'
    ``settings.omniglot_5way.inner_lr``)."""
    if not isinstance(value, dict) or not isinstance(default, dict):
        return
    unknown = sorted(set(value) - set(default))
    if unknown:
        raise UsageError(f"{where}.{unknown[0]} is not a key of the notebook's default; allowed keys: "
                         f"{', '.join(sorted(default))}")
    for k, v in value.items():
        _check_nested(f"{where}.{k}", v, default[k])


def notebook_parameters(notebook: str, scale: str, root: Path = ROOT) -> dict:
    """The parameters a stage passes to ``notebook`` at ``scale`` (validated before anything runs)."""
    params = check_params(scale, root)
    params_file, out_dir, models_dir = SCALES[scale]
    section = params_section(notebook)
    if section not in params:
        raise UsageError(f"{params_file} has no section {section!r} (notebook {notebook}); sections: "
                         f"{', '.join(params)}")
    # papermill runs with notebooks/ as the working directory
    return {**params[section], "scale": scale, "out_dir": f"../{out_dir}", "models_dir": f"../{models_dir}"}


def inputs_digest(notebook: str, scale: str, root: Path = ROOT) -> str:
    """A hash of what a chapter's reports at ``scale`` come from: the notebook, its parameters, the contents of the
    files its parameters name (e.g. another chapter's rows), the data manifest, the source of the library modules it
    imports, and the torch version."""
    import torch

    source = root / "notebooks" / f"{notebook}.ipynb"
    cells = json.loads(source.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    params = notebook_parameters(notebook, scale, root)
    named = {v: hashlib.sha256((source.parent / v).read_bytes()).hexdigest() for v in params.values()
             if isinstance(v, str) and (source.parent / v).is_file()}
    manifest = root / "data" / "manifest.json"
    blob = json.dumps({"notebook": hashlib.sha256(source.read_bytes()).hexdigest(), "params": params, "files": named,
                       "data": manifest.read_text() if manifest.exists() else None, "torch": torch.__version__,
                       "lib": source_hashes(closure(code_imports(code) | {"study.pipeline"}))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def run(notebook: str, scale: str = "study", minutes: float | None = None, root: Path = ROOT) -> Path:
    """Execute ``notebooks/<notebook>.ipynb`` at ``scale``; return the executed notebook's path. With ``minutes``,
    training stops and saves after that long (:class:`NotFinished`)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_notebook(notebook, root)
    check_mirror()
    source = root / "notebooks" / f"{notebook}.ipynb"
    parameters = notebook_parameters(notebook, scale, root)
    digest = inputs_digest(notebook, scale, root) if scale != "study" else ""  # what this run starts from
    out = root / SCALES[scale][1] / "notebooks" / f"{notebook}.ipynb"
    failed = out.with_suffix(".failed.ipynb")
    env_before = os.environ.get(DEADLINE_ENV)
    if minutes is not None:  # the kernel inherits the environment
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * minutes)
    else:  # no budget, whatever the calling shell had set
        os.environ.pop(DEADLINE_ENV, None)
    try:
        with atomic_path(out, suffix=".ipynb") as tmp, tempfile.TemporaryDirectory() as sockets:
            try:
                papermill.execute_notebook(str(source), str(tmp), parameters=parameters, cwd=str(source.parent),
                                           kernel_name="python3", progress_bar=True, km=_local_kernel(sockets))
            except PapermillExecutionError as e:
                if e.ename == "BudgetExhausted":
                    raise NotFinished(f"{notebook}: {e.evalue}") from None
                if tmp.exists():  # keep the executed cells and the traceback for the reader
                    shutil.copy(tmp, failed)
                    print(f"the failed run is in {failed.relative_to(root)}")
                raise
    finally:
        if env_before is None:
            os.environ.pop(DEADLINE_ENV, None)
        else:
            os.environ[DEADLINE_ENV] = env_before
    failed.unlink(missing_ok=True)
    if digest:  # DVC tracks the study scale's inputs in dvc.lock
        with atomic_path(out.with_suffix(".inputs")) as tmp:
            tmp.write_text(digest + "\n")
    return out


def _local_kernel(folder: str) -> object:
    """A kernel manager that talks to its kernel over local sockets in ``folder`` (IPC): nothing leaves the machine,
    and the kernel has no reason to warn about unencrypted TCP."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3", transport="ipc")
    km.ip = str(Path(folder) / "kernel")
    return km


def last_duration(stage: str, root: Path = ROOT) -> float | None:
    """Seconds the last recorded run of a chapter's stage took (papermill's record in its executed notebook), or
    None (never run, or not a chapter). A run that reused trained models was quick: where the chapter's metrics
    record the training and evaluation seconds of its models, the estimate is never below their sum."""
    reports = root / "reports"
    try:
        ran = float(json.loads((reports / "notebooks" / f"{stage}.ipynb").read_text())["metadata"]["papermill"]
                    ["duration"])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None
    try:
        seconds = json.loads((reports / "metrics" / f"{stage}.json").read_text())["seconds"]
        return max(ran, float(seconds["training"]) + float(seconds["evaluation"]))
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return ran


def stages_to_run(root: Path = ROOT) -> list[str]:
    """The stages ``dvc repro`` would run now, in its order (``dvc repro --dry``)."""
    dry = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry"], cwd=root, capture_output=True, text=True)
    if dry.returncode:
        raise UsageError(f"dvc repro --dry failed: {dry.stderr.strip() or dry.stdout.strip()}")
    return re.findall(r"^Running stage '([^']+)'", dry.stdout, re.MULTILINE)


def plan(stages: list[str], root: Path = ROOT) -> str:
    """What ``make reports`` is about to do: the stages it will run, each with its last recorded duration, and the
    total (a lower bound where a stage has no record)."""
    if not stages:
        return "every stage is up to date: dvc repro has nothing to run"
    durations = {s: last_duration(s, root) for s in stages}
    width = max(map(len, stages))
    lines = [f"dvc repro will run {len(stages)} stage{'s' if len(stages) > 1 else ''} (estimates: each stage's last "
             "recorded run on this project's machine):"]
    lines += [f"  {s:{width}s}  {_minutes(d) if d is not None else 'no record (data stages: minutes)'}"
              for s, d in durations.items()]
    known = sum(d for d in durations.values() if d is not None)
    unknown = sum(d is None for d in durations.values())
    lines.append(f"  {'total':{width}s}  about {_minutes(known)}" + (f" plus {unknown} stage(s) without a record"
                                                                   if unknown else ""))
    lines.append("Each finished stage is kept (dvc.lock); stop with Ctrl-C and run again to go on from the next one.")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def prepare(notebook: str, scale: str = "study", root: Path = ROOT) -> Path:
    """A copy of ``notebooks/<notebook>.ipynb`` with the scale's parameters injected and nothing run, to open in
    JupyterLab: ``scratch/<notebook>.<scale>.ipynb``. It reads and writes the scale's models (so a run reuses the
    committed ones) but writes its reports into ``scratch/``, leaving ``reports/`` to the pipeline."""
    import papermill

    out = root / "scratch" / f"{notebook}.{scale}.ipynb"
    parameters = {**notebook_parameters(notebook, scale, root), "out_dir": "../scratch"}
    with atomic_path(out, suffix=".ipynb") as tmp:
        papermill.execute_notebook(str(root / "notebooks" / f"{notebook}.ipynb"), str(tmp), parameters=parameters,
                                   prepare_only=True, kernel_name="python3", progress_bar=False)
    return out


def run_all(scale: str, minutes: float | None = None, root: Path = ROOT) -> list[str]:
    """Every chapter in order within one budget of ``minutes``, skipping those whose reports are up to date;
    return the chapters that ran. Raises :class:`NotFinished` at the first chapter the budget stops."""
    check_params(scale, root)
    start, ran = time.time(), []
    for notebook in notebooks(root):
        done = root / SCALES[scale][1] / "notebooks" / f"{notebook}.inputs"
        if done.exists() and done.read_text().strip() == inputs_digest(notebook, scale, root):
            print(f"{notebook}: up to date at the {scale} scale")
            continue
        left = None if minutes is None else max(0.0, minutes - (time.time() - start) / 60)
        print(f"{notebook}: running at the {scale} scale" + (f", {left:.1f} min of budget left" if left is not None
                                                          else ""))
        print(run(notebook, scale, left, root))
        ran.append(notebook)
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalearn.study.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="e.g. 00_background, or all, or plan (what dvc repro would run)")
    parser.add_argument("--scale", default="study", help=", ".join(SCALES))
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop training after this many minutes, save, and exit with status 75 (run again)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write scratch/<notebook>.<scale>.ipynb with the scale's parameters, to run in JupyterLab")
    args = parser.parse_args(argv)
    if args.minutes is not None and args.minutes < 0:
        raise UsageError(f"--minutes must be >= 0, got {args.minutes}")
    if args.notebook == "plan":
        print(plan(stages_to_run()))
        return 0
    check_params(args.scale)
    if args.notebook != "all":
        check_notebook(args.notebook)
    if args.prepare_only:
        print(prepare(args.notebook, args.scale))
        return 0
    try:
        if args.notebook == "all":
            run_all(args.scale, args.minutes)
        else:
            print(run(args.notebook, args.scale, args.minutes))
    except NotFinished as e:
        print(f"NOT FINISHED (run the same command again to continue): {e}", file=sys.stderr)
        return NOT_FINISHED
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
