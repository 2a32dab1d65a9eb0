"""The library's floors and families, read from each module's imports (top level and inside functions).

    core/          files, source, episodes, models, training, evaluation, the model store, results: imports only core
    datasets/      fetching, verifying and loading the data sets: core and datasets
    <family>/      background, metric, model_based, gradient, drugs: one module per method of the survey's slides;
                   a method imports only core, datasets and its family's shared modules, never another method
                   (drugs, which scores the gradient family's meta-initialisations, may also import the gradient
                   family's shared modules)
    study/         the chapters' glue (pipeline, papers, claims, site, plots): the only floor above the methods

No module below ``study`` imports it, and there is no import circle. ``core`` holds no method's code: each of its
modules serves the floors themselves, the study, or more than one family.
"""

from __future__ import annotations

import ast

import pytest

from metalearn.core import source
from metalearn.study.chapters import BORROWS, SHARED
from metalearn.study.chapters import METHOD_PACKAGES as FAMILIES

FLOORS = ("core", "datasets")
# each family's shared modules (what its methods may import besides the floors) and the families that may borrow
# another's shared modules: one home, metalearn.study.chapters (which also keys the chapters' DVC stages on them)
MODULES = [m for m in source.modules() if "." in m]


def family(module: str) -> str:
    return module.split(".")[0]


def methods() -> list[str]:
    return [m for m in MODULES if family(m) in FAMILIES and m not in SHARED.get(family(m), set())]


def test_every_module_sits_on_a_floor_or_in_a_family():
    assert {family(m) for m in MODULES} == {*FLOORS, *FAMILIES, "study"}
    assert all(m in source.modules() for shared in SHARED.values() for m in shared)
    # a shared module is no slide's method: none is what a chapter trains or scores, nor named after a slide
    from metalearn.study.chapters import CHAPTERS

    trained = {m for c in CHAPTERS for m in c.methods}
    shared = set().union(*SHARED.values())
    assert not shared & trained, sorted(shared & trained)
    slides = {"maml", "fomaml", "reptile", "anil", "protonet", "siamese", "relation_net", "matching_net", "meta_gnn"}
    assert not {m.split(".")[1] for m in shared} & slides


def test_no_import_circle():
    assert source.cycles() == [], "import circles in lib/metalearn"


@pytest.mark.parametrize("module", MODULES)
def test_floors(module: str) -> None:
    """core imports core; datasets imports core and datasets; a family's module imports the floors and its family's
    shared modules; only study imports study."""
    allowed = {"core": {"core"}, "datasets": {"core", "datasets"}}.get(family(module))
    imported = source.imports(module)
    if family(module) == "study":
        return
    if allowed is not None:
        assert {family(m) for m in imported} <= allowed, f"{module} imports {sorted(imported)}"
        return
    families = {family(module), *BORROWS.get(family(module), set())}
    shared = {m for f in families for m in SHARED.get(f, set())}
    outside = {m for m in imported if family(m) not in FLOORS and m not in shared}
    assert not outside, f"the method module {module} imports {sorted(outside)}: methods share only the floors " \
                        f"and the shared modules {sorted(shared)}"


@pytest.mark.parametrize("module", [m for m in MODULES if family(m) == "core"])
def test_core_holds_no_single_familys_code(module: str) -> None:
    """A core module serves the floors, the study or several families: a module whose only users outside core (direct
    or through other core modules; the study aside) are one family, or one family and a family that borrows from it
    (drugs from gradient), belongs in that family."""
    users = {family(m) for m in MODULES if family(m) not in ("core", "study") and module in source.closure([m])}
    users -= {f for f in users if BORROWS.get(f, set()) & users}
    assert len(users) != 1, f"{module} is used only by {sorted(users)}: move it into that family"


def test_no_method_imports_another_method():
    for m in methods():
        assert not set(methods()) & source.imports(m), m


def test_package_inits_import_nothing():
    """A package's ``__init__`` is its map (docstring), so importing ``metalearn.core.episodes`` runs no other code."""
    for m in source.modules():
        if "." not in m:
            tree = ast.parse(source._source(m))
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], m


def test_each_slide_finds_its_module():
    """The package docstring maps every slide of the survey to its module, and each of those modules exists."""
    import metalearn

    doc = metalearn.__doc__ or ""
    for slide, module in (("Siamese", "metric.siamese"), ("Relation Network", "metric.relation_net"),
                          ("Matching Network", "metric.matching_net"), ("Prototypical", "metric.protonet"),
                          ("Meta-GNN", "metric.meta_gnn"), ("MANN", "model_based.mann"),
                          ("Meta Networks", "model_based.meta_networks"), ("HyperNetworks", "model_based.hypernetwork"),
                          ("MAML", "gradient.maml"), ("FOMAML", "gradient.fomaml"), ("Reptile", "gradient.reptile"),
                          ("ANIL", "gradient.anil"), ("drug discovery", "drugs.property_prediction"),
                          ("pre-training & fine-tuning", "background.pretrain")):
        assert slide in doc and f"metalearn.{module}" in doc, slide
        assert module in source.modules(), module


def test_imports_are_read_from_the_source():
    code = ("import metalearn.gradient.maml\nfrom metalearn.core import episodes\n"
            "from metalearn.core.models import conv4_for\ndef f():\n    from metalearn.core.train import train\n")
    assert source.code_imports(code) == {"gradient.maml", "core.episodes", "core.models", "core.train"}
    assert {"gradient.inner_loop", "core.train"} <= source.imports("gradient.outer_loop")
    assert source.closure(["core.files"]) == ["core.files"]  # the bottom floor imports nothing of the lib
    assert source.closure(["core.models"]) == ["core.models"]
    assert source.path_of("gradient.maml") == "gradient/maml.py" and source.path_of("core") == "core/__init__.py"
