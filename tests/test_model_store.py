"""Trained models: keyed by what their fit imports, kept as plain state_dicts, reused, refused when damaged,
and trained under a time budget that stops and resumes to bit-identical weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from metalearn.core import source
from metalearn.core.episodes import EpisodeSampler
from metalearn.core.model_store import fit_modules, model_key
from metalearn.core.models import Classifier, conv4_for
from metalearn.core.train import DEADLINE_ENV, BudgetExhausted
from metalearn.gradient.maml import train_maml
from metalearn.gradient.outer_loop import MetaTraining
from metalearn.metric.episodic import Episodic, train_episodic
from metalearn.metric.protonet import ProtoNet
from metalearn.study.experiment import FitContext, fit


def _protonet_key(sampler):
    from metalearn.metric.episodic import train_episodic

    model = ProtoNet(conv4_for((1, 28, 28), hidden=8))
    return model_key({"name": "p"}, train_episodic, model, sampler)


def _maml_key(sampler):
    model = Classifier(conv4_for((1, 28, 28), hidden=8), 5)
    return model_key({"name": "m"}, train_maml, model, sampler)


@pytest.fixture()
def lib_copy(tmp_path, monkeypatch):
    """Edit a module of a copy of the library's source that keys are read from (the source is read once per
    process and folder, so every edit makes a new copy)."""
    copies = iter(range(100))
    monkeypatch.setattr(source, "LIB", source.LIB)

    def edit(module: str) -> None:
        copy = tmp_path / f"lib{next(copies)}"
        shutil.copytree(source.LIB, copy, ignore=shutil.ignore_patterns("__pycache__"))
        path = copy / source.path_of(module)
        path.write_text(path.read_text() + "\n# an edit\n")
        monkeypatch.setattr(source, "LIB", copy)

    return edit


@pytest.mark.parametrize("module, protonet_changes, maml_changes", [
    ("study.plotting", False, False), ("core.results", False, False), ("study.maml_benchmark", False, False),
    ("metric.protonet", True, False), ("gradient.maml", False, True), ("gradient.fomaml", False, False),
    ("gradient.outer_loop", False, True), ("core.models", True, True), ("core.train", True, True),
])
def test_key_follows_the_fits_imports(omniglot_train, lib_copy, module, protonet_changes, maml_changes):
    sampler = EpisodeSampler(omniglot_train, 5, 1, 1)
    before = _protonet_key(sampler).digest, _maml_key(sampler).digest
    lib_copy(module)
    after = _protonet_key(sampler).digest, _maml_key(sampler).digest
    assert (before[0] != after[0], before[1] != after[1]) == (protonet_changes, maml_changes)


def test_source_is_a_snapshot(lib_copy, tmp_path):
    """A file edited after the process read it does not change the key: the key describes the code that runs."""
    lib_copy("study.plotting")
    before = source.source_hashes(["metric.protonet"])
    (source.LIB / "metric" / "protonet.py").write_text("# edited while a run goes on\n")
    assert source.source_hashes(["metric.protonet"]) == before


def test_fit_modules_are_the_closure():
    from metalearn.metric.episodic import train_episodic

    mods = fit_modules(train_episodic, ProtoNet(conv4_for((1, 28, 28), hidden=8)))
    assert {"metric.episodic", "core.train", "metric.protonet", "core.models", "core.episodes"} <= set(mods)
    assert not {"study.plotting", "core.results", "gradient.maml", "study.maml_benchmark", "datasets.fetch",
                "study.pipeline"} & set(mods)
    assert model_key({"f": len}, len).config == {"f": "builtins.len"}  # a callable by name, not by address
    assert model_key({"s": {3, 1, 2}}).config == {"s": [1, 2, 3]}
    with pytest.raises(TypeError, match="cannot be part of a model's key"):
        model_key({"f": lambda x: x})
    with pytest.raises(TypeError, match="cannot be part of a model's key"):
        model_key({"o": object()})


def _fit(sampler, steps, **where):
    torch.manual_seed(0)
    model = ProtoNet(conv4_for((1, 28, 28), hidden=8))
    curve, seconds = fit("proto", model, sampler, steps, train_episodic, Episodic(halve_lr_every=2),
                         FitContext("nb", 1, **where))
    return model, curve


def _same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=f"{name} differs")


def test_models_are_stored_reused_and_retrained(omniglot_train, tmp_path, capsys):
    sampler, models = EpisodeSampler(omniglot_train, 5, 1, 2), tmp_path / "models"
    first, curve = _fit(sampler, 4, models_dir=str(models))
    assert "proto: training (no stored model" in capsys.readouterr().out
    record = json.loads((models / "nb" / "proto.json").read_text())
    assert record["steps"] == 4 and record["history"][-1]["step"] == 4 and "metric/protonet.py" in record["sources"]
    assert "study/plotting.py" not in record["sources"]
    state = torch.load(models / "nb" / "proto.pt", weights_only=True)
    assert set(state) == set(first.state_dict())  # a plain state_dict
    # in half precision, and the model fit returns holds exactly the stored weights
    assert {v.dtype for k, v in state.items() if "num_batches" not in k} == {torch.float16}
    for k, v in first.state_dict().items():
        assert v.dtype == torch.float32 or "num_batches" in k
        torch.testing.assert_close(v, state[k].to(v.dtype), rtol=0, atol=0)

    again, again_curve = _fit(sampler, 4, models_dir=str(models))
    assert "proto: reused" in capsys.readouterr().out
    _same_weights(first, again)
    assert again_curve.equals(curve)

    _fit(sampler, 5, models_dir=str(models))
    assert "proto: training (steps: 4 -> 5)" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_damaged_weights_are_refused_and_retrained(omniglot_train, tmp_path, capsys, damage):
    sampler, models = EpisodeSampler(omniglot_train, 5, 1, 2), tmp_path / "models"
    first, _ = _fit(sampler, 3, models_dir=str(models))
    weights, record_path = models / "nb" / "proto.pt", models / "nb" / "proto.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
        reason = "sha256 does not match"
    else:  # a pickle that runs code on load; its record claims it is the right file
        import hashlib
        import pickle

        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        weights.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
        record = json.loads(record_path.read_text())
        record["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        record_path.write_text(json.dumps(record))
        reason = "UnpicklingError"
    capsys.readouterr()
    again, _ = _fit(sampler, 3, models_dir=str(models))
    out = capsys.readouterr().out
    assert "refused" in out and reason in out and "pwned" not in out and "proto: training" in out
    _same_weights(first, again)  # retrained to the same weights (seeded), and stored again
    assert torch.load(weights, weights_only=True).keys() == first.state_dict().keys()


def test_read_only_needs_the_other_notebooks_model(omniglot_train, tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro nb"):
        _fit(EpisodeSampler(omniglot_train, 5, 1, 2), 3, models_dir=str(tmp_path), read_only=True)


def test_budget_stops_and_resumes_bit_identical(omniglot_train, tmp_path, monkeypatch, capsys):
    """Stopped by the time budget three times (every call makes one step), resumed each time: the same weights,
    curve and record as a run that was never stopped."""
    sampler = EpisodeSampler(omniglot_train, 5, 1, 2)
    straight, straight_curve = _fit(sampler, 4, models_dir=str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "ca"))
    monkeypatch.setenv(DEADLINE_ENV, "0")  # already past: stop after each step
    for stop in (1, 2, 3):
        with pytest.raises(BudgetExhausted, match=f"stopped at step {stop} of 4"):
            _fit(sampler, 4, models_dir=str(tmp_path / "b"), checkpoint_dir=str(tmp_path / "cb"))
        assert not (tmp_path / "b" / "nb" / "proto.pt").exists()  # no final model until training ends
    resumed, resumed_curve = _fit(sampler, 4, models_dir=str(tmp_path / "b"), checkpoint_dir=str(tmp_path / "cb"))
    assert "resumed at 3" in capsys.readouterr().out
    _same_weights(straight, resumed)
    assert resumed_curve.drop(columns="seconds").equals(straight_curve.drop(columns="seconds"))  # but wall time
    a, b = (json.loads((tmp_path / d / "nb" / "proto.json").read_text()) for d in ("a", "b"))
    assert a["sha256"] == b["sha256"] and a["key"] == b["key"]
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


def _key_line(capsys, sampler, models, model, name="proto", train_fn=train_episodic, settings=None):
    fit(name, model, sampler, 2, train_fn, settings or Episodic(), FitContext("nb", 1, models_dir=str(models)))
    return capsys.readouterr().out.splitlines()[0]


def test_what_the_key_sees(omniglot_train, omniglot_test, tmp_path, capsys):
    """The data's contents, the model's plain settings and initial weights, and a generated task's settings are
    part of the key, not only names and layers."""
    from metalearn.gradient.maml import train_maml
    from metalearn.gradient.regression import SinusoidSampler, sinusoid_mlp
    from metalearn.metric.matching_net import MatchingNet

    models = tmp_path / "models"
    torch.manual_seed(0)
    _key_line(capsys, EpisodeSampler(omniglot_train, 5, 1, 2), models, ProtoNet(conv4_for((1, 28, 28), hidden=8)))
    renamed = type(omniglot_test)(omniglot_test.images, omniglot_test.class_names, omniglot_train.name)
    torch.manual_seed(0)
    line = _key_line(capsys, EpisodeSampler(renamed, 5, 1, 2), models, ProtoNet(conv4_for((1, 28, 28), hidden=8)))
    assert "data_contents" in line and "training" in line  # same name, other images
    torch.manual_seed(1)
    line = _key_line(capsys, EpisodeSampler(renamed, 5, 1, 2), models, ProtoNet(conv4_for((1, 28, 28), hidden=8)))
    assert "model.initial_weights changed" in line  # another seed
    torch.manual_seed(0)
    line = _key_line(capsys, EpisodeSampler(renamed, 5, 1, 2), models,
                     MatchingNet(conv4_for((1, 28, 28), hidden=8), distance="cosine"), name="match")
    torch.manual_seed(0)
    line = _key_line(capsys, EpisodeSampler(renamed, 5, 1, 2), models,
                     MatchingNet(conv4_for((1, 28, 28), hidden=8), distance="euclidean"), name="match")
    assert "model.settings changed" in line  # a setting that the layers' repr does not show
    torch.manual_seed(0)
    line = _key_line(capsys, EpisodeSampler(renamed, 5, 1, 2), models,
                     MatchingNet(conv4_for((1, 28, 28), hidden=8), distance="euclidean"), name="match",
                     settings=Episodic(lr=2e-3))
    assert "settings.lr changed" in line  # the trainer's settings are the key's, field by field
    sine = dict(train_fn=train_maml,
                settings=MetaTraining(tasks=2, inner_steps=1, inner_lr=0.01, inner="all", regression=True))
    for shots, expected in ((5, "no stored model"), (10, "data_contents")):
        torch.manual_seed(0)
        line = _key_line(capsys, SinusoidSampler(shots, 5), models, sinusoid_mlp(8), name="sine", **sine)
        assert expected in line


def test_a_record_that_is_not_an_object_is_refused(omniglot_train, tmp_path, capsys):
    sampler, models = EpisodeSampler(omniglot_train, 5, 1, 2), tmp_path / "models"
    _fit(sampler, 2, models_dir=str(models))
    (models / "nb" / "proto.json").write_text("[]")
    capsys.readouterr()
    _fit(sampler, 2, models_dir=str(models))
    assert "refused" in capsys.readouterr().out


def test_half_state_keeps_what_float16_cannot_hold():
    from metalearn.core.model_store import half_state

    state = {"w": torch.tensor([1.0, 1 / 3]), "big": torch.tensor([1e6]), "n": torch.tensor(7)}
    half = half_state(state)
    assert half["w"].dtype == torch.float16 and abs(float(half["w"][1]) - 1 / 3) < 2**-11
    assert half["big"].dtype == torch.float32 and half["n"].dtype == torch.int64
