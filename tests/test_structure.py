"""The library's floors: no import circles, read from each module's imports (top level and inside functions)."""

from __future__ import annotations

from metalearn import source


def test_no_import_circle():
    assert source.cycles() == [], "import circles in lib/metalearn"


def test_imports_are_read_from_the_source():
    code = "import metalearn.maml\nfrom metalearn import anil\nfrom metalearn.models import conv4_for\n" \
           "def f():\n    from metalearn.train import train\n"
    assert source.code_imports(code) == {"maml", "anil", "models", "train"}
    assert {"inner_loop", "train"} <= source.imports("meta_train")
    assert "maml" not in source.imports("anil") and "maml" not in source.imports("fast_maml")
    assert source.closure(["files"]) == ["files"]  # the bottom floor imports nothing of the lib


def test_methods_do_not_reach_into_each_other():
    """Gradient-based methods share the inner loop, not each other's modules; models need no method."""
    assert not {"maml", "anil", "fast_maml", "reptile"} & source.imports("reptile") - {"reptile"}
    assert not {"pretrain", "protonet"} & set(source.closure(["meta_train", "gradient_study"]))
    assert source.closure(["models"]) == ["models"]
