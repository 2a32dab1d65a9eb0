"""Trained models: what identifies one, where its final weights live, and when they can be reused.

A model's **key** is a hash of three things, and nothing else:

* its fit configuration: name, data (with a digest of its contents), steps, learning rate, seed, the model (its
  layers, their plain settings and a digest of its initial weights), the trainer and its settings;
* the source of the ``metalearn`` modules the fit imports: the closure of the trainer's, the model's and the
  sampler's modules (:mod:`metalearn.core.source`), not the whole library, so editing ``plotting.py`` or a benchmark
  keeps every model, while editing ``protonet.py`` retrains the ProtoNets;
* the torch version.

Layout (``<models_dir>`` is ``models/`` at study scale, ``models/paper/`` at paper scale)::

    <models_dir>/<notebook>/<name>.pt     the final weights: a plain state_dict, loaded with weights_only=True
    <models_dir>/<notebook>/<name>.json   its key, config, source hashes, torch version, steps, seconds,
                                          training curve and final training metrics, and the .pt's sha256

The resume state of an unfinished run (optimizer, scheduler, curve so far) is a separate, git-ignored file in the
checkpoint folder, named by the key, so it is never resumed into a model with another key.
"""

from __future__ import annotations

import hashlib
import io
import json
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metalearn.core.files import atomic_path
from metalearn.core.source import PACKAGE, closure, source_hashes
from metalearn.core.train import TrainResult


@dataclass(frozen=True)
class ModelKey:
    """What identifies a trained model: its configuration, the source hashes of the modules its fit imports, and
    the torch version."""

    config: dict[str, Any]
    sources: dict[str, str]  # {"maml.py": sha256, ...}
    torch: str

    @property
    def digest(self) -> str:
        blob = json.dumps({"config": self.config, "sources": self.sources, "torch": self.torch}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _module_of(obj: object) -> Iterable[str]:
    if isinstance(obj, nn.Module):
        return {type(m).__module__ for m in obj.modules()}
    if isinstance(obj, (types.FunctionType, type)):
        return {obj.__module__}
    return {type(obj).__module__}


def fit_modules(*objects: object) -> list[str]:
    """The ``metalearn`` modules a fit imports: the closure of the modules that define ``objects`` (the trainer
    function, the model and each of its layers, the data sampler, any callable setting)."""
    names = {m.split(".", 1)[1] for obj in objects for m in _module_of(obj) if m.startswith(f"{PACKAGE}.")}
    return closure(names)


def _plain(obj: object) -> object:
    """A stable JSON form of a setting JSON cannot hold: a set sorted, a named function by its qualified name. A
    value whose repr would differ between processes (a lambda, a partial, an object at a memory address) is refused:
    it cannot identify a model."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    name = getattr(obj, "__qualname__", "")
    if callable(obj) and name and "<lambda>" not in name and "<locals>" not in name:
        return f"{obj.__module__}.{name}"
    text = repr(obj)
    if " at 0x" in text or "<lambda>" in name or "<locals>" in name:
        raise TypeError(f"the fit setting {text[:80]} cannot be part of a model's key (its text differs between "
                        "processes): pass a plain value or a module-level function")
    return text


def describe_model(model: nn.Module) -> dict[str, Any]:
    """What a model's key records of it: its layers (``repr``), each layer's plain settings that the repr may not
    show (e.g. a distance's name), and a digest of its initial weights (its seed and initialisation)."""
    settings = {}
    for name, m in model.named_modules():
        plain = {k: v for k, v in vars(m).items()
                 if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, type(None)))}
        if plain:
            settings[name or "."] = plain
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return {"layers": repr(model), "settings": settings, "initial_weights": h.hexdigest()}


def model_key(config: dict[str, Any], *objects: object) -> ModelKey:
    """The key of a model fitted with ``config`` by code defined in ``objects`` (see :func:`fit_modules`)."""
    config = json.loads(json.dumps(config, sort_keys=True, default=_plain))  # what the JSON record will hold
    return ModelKey(config, source_hashes(fit_modules(*objects)), torch.__version__.split("+")[0])


def key_changes(record: dict[str, Any], key: ModelKey) -> str:
    """In words, what differs between a stored model's record and ``key`` (e.g. ``"gradient/maml.py changed"``)."""
    changes = []
    old_config, old_sources = record.get("config", {}), record.get("sources", {})
    for k in sorted(set(old_config) | set(key.config)):
        old, new = old_config.get(k), key.config.get(k)
        if old != new and isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{k}.{sub} changed" for sub in sorted(set(old) | set(new)) if old.get(sub) != new.get(sub)]
        elif old != new:
            changes.append(f"{k}: {old!r} -> {new!r}"[:160])
    for f in sorted(set(old_sources) | set(key.sources)):
        if f not in key.sources:
            changes.append(f"{f} no longer used")
        elif f not in old_sources:
            changes.append(f"{f} now used")
        elif old_sources[f] != key.sources[f]:
            changes.append(f"{f} changed")
    if record.get("torch") != key.torch:
        changes.append(f"torch {record.get('torch')} -> {key.torch}")
    return ", ".join(changes) or "the key differs"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``state_dict`` as the store keeps it: every float32 or float64 tensor in float16 (half the bytes of float32;
    a relative rounding of at most 2^-11), on the CPU; a tensor whose values float16 cannot hold (beyond ±65504)
    keeps its dtype, and integer buffers (BatchNorm's step count) are kept as they are."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        half = v.half() if v.dtype in (torch.float32, torch.float64) else None
        overflows = half is not None and bool((torch.isinf(half) & torch.isfinite(v)).any())
        out[k] = half if half is not None and not overflows else v.clone()
    return out


class ModelStore:
    """The final weights of one notebook's models under ``<models_dir>/<notebook>/``, in half precision."""

    def __init__(self, models_dir: str | Path, notebook: str) -> None:
        self.folder = Path(models_dir) / notebook

    def weights(self, name: str) -> Path:
        return self.folder / f"{name}.pt"

    def record_path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str, model: nn.Module, key: ModelKey) -> tuple[dict[str, Any] | None, str]:
        """Load the stored weights of ``name`` into ``model`` if they exist, verify and have ``key``: return
        (their record, "") — or (None, why they cannot be used). A damaged or foreign file is refused, never used."""
        weights, record_path = self.weights(name), self.record_path(name)
        if not record_path.exists() or not weights.exists():
            return None, f"no stored model in {self.folder}"
        try:
            record = json.loads(record_path.read_text())
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as e:
            return None, f"refused {record_path}: not a model record ({e})"
        if record.get("key") != key.digest:
            return None, key_changes(record, key)
        if record.get("sha256") != file_sha256(weights):
            return None, f"refused {weights}: its sha256 does not match its record (truncated or corrupted)"
        try:
            state = torch.load(weights, map_location=next(model.parameters()).device, weights_only=True)
            own = model.state_dict()
            if not isinstance(state, dict) or {k: tuple(v.shape) for k, v in state.items()} != {
                    k: tuple(v.shape) for k, v in own.items()}:
                raise ValueError("not a state_dict of this model (other names or shapes)")
            model.load_state_dict(state)  # checked first, so a refused file never half-loads
        except Exception as e:  # unpickling refused, not a state_dict, or shapes that do not fit the model
            return None, f"refused {weights}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return record, ""

    def save(self, name: str, model: nn.Module, key: ModelKey, steps: int, result: TrainResult) -> Path:
        """Write the final weights of ``name`` in half precision (:func:`half_state`) and their record, each
        atomically (weights first); ``model`` then holds the stored weights, so that a model used right after its
        training and the same model reused later give the same numbers."""
        weights = self.weights(name)
        state = half_state(model.state_dict())
        model.load_state_dict(state)  # float16 -> the model's own dtype: the weights every later run reads
        buffer = io.BytesIO()  # saved through a buffer, the bytes do not depend on the file's (temporary) name
        torch.save(state, buffer)
        with atomic_path(weights) as tmp:
            tmp.write_bytes(buffer.getvalue())
        record = {"name": name, "key": key.digest, "sha256": file_sha256(weights), "steps": steps,
                  "seconds": round(result.seconds, 1), "torch": key.torch,
                  "final": result.history[-1] if result.history else {}, "history": result.history,
                  "validation": result.validation, "best_step": result.best_step,
                  "config": key.config, "sources": key.sources}
        with atomic_path(self.record_path(name)) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        return weights
