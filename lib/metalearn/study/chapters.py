"""The one table of chapters: each notebook's stage, family, main method, data sets and the library modules it runs.

What is typed here is what only a person can say (the family, the headline method and figure, the data sets, and
which method modules the chapter trains or scores); what the code can say is computed from it: the library modules a
chapter's stage runs are the import closure of its notebook's code and the pipeline (:func:`lib_modules`), never a
typed list. ``dvc.yaml``'s library dependencies are written from it (``python -m metalearn.study.chapters
dvc.yaml``; ``tests/test_chapters.py`` fails when they are stale), the report site's cards and the README's chapter
table read it, and the tests check it against the notebooks (the method modules a notebook reaches are those it
declares, so editing a method re-runs only the chapters that train or score it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from metalearn.core import source
from metalearn.core.files import atomic_path

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("baseline", "metric-based", "model-based", "gradient-based", "drug discovery", "summary")
_IMAGES = ("omniglot", "cifar_fs")


@dataclass(frozen=True)
class Chapter:
    """One notebook of the study (its DVC stage has the notebook's name)."""

    notebook: str  # "04_prototypical_networks"
    family: str  # one of FAMILIES
    method: str | None  # the results' method id of its headline rows (None: it has no rows of its own)
    metric: str | None  # the headline metric
    datasets: tuple[str, ...]  # results' dataset ids the chapter scores on
    methods: tuple[str, ...]  # the method modules it trains or scores ("metric.protonet"), sorted
    figure: str | None = None  # the figure its card shows (None: its first by name)

    @property
    def stage(self) -> str:
        return self.notebook

    @property
    def path(self) -> Path:
        return ROOT / "notebooks" / f"{self.notebook}.ipynb"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_background", "baseline", "pretrain_finetune", "accuracy", _IMAGES, ("background.pretrain",),
            "accuracy_vs_shots"),
    Chapter("01_siamese", "metric-based", "siamese", "accuracy", _IMAGES, ("metric.siamese",), "similarity"),
    Chapter("02_relation_network", "metric-based", "relation_net", "accuracy", _IMAGES, ("metric.relation_net",),
            "relation_scores"),
    Chapter("03_matching_network", "metric-based", "matching_net", "accuracy", _IMAGES, ("metric.matching_net",),
            "attention"),
    Chapter("04_prototypical_networks", "metric-based", "protonet", "accuracy", _IMAGES,
            ("metric.matching_net", "metric.protonet"), "train_ways"),
    Chapter("05_meta_gnn", "metric-based", "meta_gnn", "accuracy", _IMAGES, ("metric.meta_gnn",), "adjacency"),
    Chapter("06_mann", "model-based", "mann", "instance_accuracy", ("omniglot",), ("model_based.mann",),
            "accuracy_by_instance"),
    Chapter("07_meta_networks", "model-based", "meta_net", "accuracy", _IMAGES, ("model_based.meta_networks",),
            "attention"),
    Chapter("08_hypernetworks", "model-based", "hypernet", "accuracy", _IMAGES,
            ("metric.protonet", "model_based.hypernetwork"), "static_parameters"),
    Chapter("09_maml", "gradient-based", "maml", "accuracy", (*_IMAGES, "sinusoid"),
            ("gradient.maml", "gradient.regression"), "sinusoid"),
    Chapter("10_fomaml", "gradient-based", "fomaml", "accuracy", _IMAGES, ("gradient.fomaml", "gradient.maml"),
            "cost"),
    Chapter("11_reptile", "gradient-based", "reptile", "accuracy", (*_IMAGES, "sinusoid"),
            ("gradient.fomaml", "gradient.maml", "gradient.regression", "gradient.reptile"), "sinusoid"),
    Chapter("12_anil", "gradient-based", "anil", "accuracy", _IMAGES, ("gradient.anil", "gradient.maml")),
    Chapter("13_drug_discovery", "drug discovery", "maml", "delta_auprc", ("fsmol", "tox21", "sider", "muv", "toxcast"),
            ("drugs.multitask", "drugs.property_prediction", "gradient.anil", "gradient.fomaml", "gradient.maml",
             "metric.protonet"), "delta_auprc_vs_support_size"),
    Chapter("14_summary", "summary", None, None, (), ()),
)
BY_NOTEBOOK = {c.notebook: c for c in CHAPTERS}
# the stages that are not chapters, by the module their command runs
OTHER_STAGES = {"data": "datasets.fetch", "features": "datasets.fingerprints", "results": "core.results",
                "site": "study.site"}


def chapter(notebook: str) -> Chapter:
    """The chapter of ``notebook`` (``"04_prototypical_networks"``); an unknown name is a ``KeyError`` that lists
    the chapters."""
    if notebook not in BY_NOTEBOOK:
        raise KeyError(f"no chapter {notebook!r}; the chapters are {', '.join(BY_NOTEBOOK)}")
    return BY_NOTEBOOK[notebook]


def notebook_imports(path: Path) -> set[str]:
    """The library modules a notebook's code cells import."""
    cells = json.loads(path.read_text())["cells"]
    return source.code_imports("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))


def lib_modules(stage: str) -> list[str]:
    """The library modules a DVC stage runs (sorted dotted names): for a chapter, what its notebook imports and the
    pipeline that executes it, with everything those import; for another stage, the closure of its command's
    module."""
    if stage in OTHER_STAGES:
        return source.closure([OTHER_STAGES[stage]])
    return source.closure(notebook_imports(chapter(stage).path) | {"study.pipeline"})


METHOD_PACKAGES = ("background", "metric", "model_based", "gradient", "drugs")  # the sub-packages of the families
# each family's shared modules: what its methods may import besides core and datasets (the rest of a family are its
# methods, one per slide); tests/test_structure.py enforces it
SHARED = {"metric": {"metric.episodic"},
          "gradient": {"gradient.inner_loop", "gradient.batched", "gradient.evaluation", "gradient.networks",
                       "gradient.outer_loop", "gradient.task_batched", "gradient.distributed", "gradient.lean"}}
BORROWS = {"drugs": {"gradient"}}  # drugs scores the gradient family's meta-initialisations with its shared modules


def method_modules() -> set[str]:
    """The modules of the method families (not their shared modules): what :attr:`Chapter.methods` names."""
    shared = set().union(*SHARED.values())
    return {m for m in source.modules() if m.split(".")[0] in METHOD_PACKAGES and "." in m and m not in shared}


def dvc_deps(stage: str) -> list[str]:
    """A stage's library dependencies as ``dvc.yaml`` lists them: ``lib/metalearn/<path>``."""
    return [f"lib/{source.PACKAGE}/{source.path_of(m)}" for m in lib_modules(stage)]


_STAGE = re.compile(r"^  ([A-Za-z0-9_]+):\s*$")
_LIB_DEP = re.compile(rf"^      - lib/{source.PACKAGE}/\S+\.py\s*$")


def write_dvc_deps(text: str) -> str:
    """``dvc.yaml``'s text with each stage's ``lib/metalearn`` dependency lines replaced by :func:`dvc_deps` (in
    place of the first of them; everything else, comments included, kept)."""
    out: list[str] = []
    stage, written = None, False
    for line in text.splitlines(keepends=True):
        if m := _STAGE.match(line):
            stage, written = m[1], False
        if stage is not None and _LIB_DEP.match(line):
            if not written:
                out.extend(f"      - {d}\n" for d in dvc_deps(stage))
                written = True
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalearn.study.chapters",
                                     description="write each stage's library dependencies into dvc.yaml")
    parser.add_argument("dvc_yaml", type=Path, nargs="?", default=ROOT / "dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale, writing nothing")
    args = parser.parse_args(argv)
    text = args.dvc_yaml.read_text()
    new = write_dvc_deps(text)
    if args.check:
        if new != text:
            print(f"{args.dvc_yaml}: library dependencies are stale; run python -m metalearn.study.chapters",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        with atomic_path(args.dvc_yaml) as tmp:
            tmp.write_text(new)
        print(f"{args.dvc_yaml}: library dependencies written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
