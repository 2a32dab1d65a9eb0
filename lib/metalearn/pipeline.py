"""Run a study notebook through papermill at a given scale (what each DVC stage calls).

    python -m metalearn.pipeline 00_background                 # study scale: params.yaml -> reports/
    python -m metalearn.pipeline 00_background --scale paper   # papers' budgets: params_paper.yaml -> reports/paper/

The notebook's ``parameters`` cell holds the smoke scale (what nbval runs); the scale's parameter
file overrides it. The executed notebook and an HTML rendering land in ``<out_dir>/notebooks/``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from .files import atomic_path

ROOT = Path(__file__).resolve().parents[2]
SCALES = {"study": ("params.yaml", "reports"), "paper": ("params_paper.yaml", "reports/paper")}


def notebook_parameters(notebook: str, scale: str) -> dict:
    """The parameters a stage passes to ``notebook`` at ``scale`` (validated before anything runs)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)} (smoke = the notebook defaults)")
    params_file, out_dir = SCALES[scale]
    params = yaml.safe_load((ROOT / params_file).read_text()) or {}
    if notebook not in params:
        raise ValueError(f"{params_file} has no section {notebook!r}; sections: {', '.join(params)}")
    # papermill runs with notebooks/ as the working directory
    return {**params[notebook], "scale": scale, "out_dir": f"../{out_dir}"}


def run(notebook: str, scale: str = "study") -> Path:
    """Execute ``notebooks/<notebook>.ipynb`` at ``scale``; return the executed notebook's path."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    source = ROOT / "notebooks" / f"{notebook}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source.relative_to(ROOT)}")
    parameters = notebook_parameters(notebook, scale)
    out = ROOT / SCALES[scale][1] / "notebooks" / f"{notebook}.ipynb"
    failed = out.with_suffix(".failed.ipynb")
    with atomic_path(out, suffix=".ipynb") as tmp:
        try:
            papermill.execute_notebook(str(source), str(tmp), parameters=parameters, cwd=str(source.parent),
                                       kernel_name="python3", progress_bar=False)
        except Exception:
            if tmp.exists():  # keep the executed cells and the traceback for the reader
                shutil.copy(tmp, failed)
                print(f"the failed run is in {failed.relative_to(ROOT)}")
            raise
    failed.unlink(missing_ok=True)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(out, as_version=4))
    with atomic_path(out.with_suffix(".html")) as tmp:
        tmp.write_text(body)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalearn.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="e.g. 00_background")
    parser.add_argument("--scale", default="study", choices=sorted(SCALES))
    args = parser.parse_args(argv)
    print(run(args.notebook, args.scale))


if __name__ == "__main__":
    main()
