"""Morgan (ECFP) fingerprints of the molecular data sets, computed once with RDKit and cached on disk.

A molecule's ECFP of radius r (Rogers & Hahn 2010) hashes every circular atom neighbourhood up to r bonds into one
of ``bits`` positions: x ∈ {0, 1}^2048 for r = 2, the "ECFP4" of the FS-Mol and Nguyen et al. baselines.

A SMILES string that RDKit cannot parse gets no fingerprint: it is marked ``parsed = False`` here and every
method skips the same rows (FS-Mol's hypervalent phosphorus, e.g. ``[PH](=O)(=O)``, and Tox21's ``[AlH3]``); the
counts are in the manifest and in chapter 13. Nothing is dropped silently, nothing crashes.

Cache (``<data_dir>/prepared/ecfp/``, each file written atomically)::

    <set>.npz   bits uint8 [n, bits/8] (np.packbits of the 0/1 vector) and parsed bool [n] of the set's n distinct
                SMILES in order of first appearance (:func:`distinct_smiles`), with their digest, checked at load

Command line (the DVC ``features`` stage)::

    python -m metalearn.datasets.fingerprints [--manifest data/features.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalearn.core.files import atomic_path
from metalearn.datasets.fetch import default_data_dir, load_molecules

if TYPE_CHECKING:
    import pandas as pd

RADIUS, BITS = 2, 2048
MOLECULE_SETS = ("tox21", "sider", "muv", "toxcast", "fsmol_train", "fsmol_valid", "fsmol_test")
CACHE = "ecfp"


def morgan_fingerprints(smiles: Sequence[str] | np.ndarray, radius: int = RADIUS,
                        bits: int = BITS) -> tuple[np.ndarray, np.ndarray]:
    """ECFP bit vectors of ``smiles``: packed bits uint8 ``[n, bits/8]`` (zeros where unparsable) and the mask
    ``parsed`` bool ``[n]``."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    if radius < 0 or bits < 8 or bits % 8:
        raise ValueError(f"need radius >= 0 and a positive multiple of 8 bits, got radius={radius}, bits={bits}")
    # one warning per unparsable SMILES otherwise; they are counted instead (rdkit-stubs miss this re-export of rdBase's)
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    packed = np.zeros((len(smiles), bits // 8), dtype=np.uint8)
    parsed = np.zeros(len(smiles), dtype=bool)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s) if isinstance(s, str) else None
        if mol is not None:
            packed[i] = np.packbits(generator.GetFingerprintAsNumPy(mol).astype(np.uint8))
            parsed[i] = True
    return packed, parsed


def distinct_smiles(table: pd.DataFrame) -> np.ndarray:
    """Each SMILES of a molecular table once, in order of first appearance: the rows of its fingerprint cache."""
    return table["smiles"].drop_duplicates().to_numpy(dtype=object)


def smiles_digest(smiles: Sequence[str] | np.ndarray) -> str:
    return hashlib.sha256("\n".join(smiles).encode()).hexdigest()


def featurise_set(name: str, data_dir: Path | None = None) -> dict[str, int]:
    """Fingerprint the distinct SMILES of ``name`` into ``prepared/ecfp/<name>.npz`` (atomically); return its
    counts: distinct molecules, unparsable ones, labels (measurements) and the labels of unparsable molecules."""
    if name not in MOLECULE_SETS:
        raise ValueError(f"unknown molecular data set {name!r}; choose from {', '.join(MOLECULE_SETS)}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    table = load_molecules(name, data_dir)
    smiles = distinct_smiles(table)
    packed, parsed = morgan_fingerprints(smiles)
    with atomic_path(data_dir / "prepared" / CACHE / f"{name}.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, bits=packed, parsed=parsed, smiles_sha256=smiles_digest(smiles))
    bad = set(smiles[~parsed])
    if "assay_id" in table:  # FS-Mol: one row per measurement
        labels, bad_labels = len(table), int(table["smiles"].isin(bad).sum())
    else:  # MoleculeNet: one row per molecule, one column per task
        measured = table.drop(columns="smiles").notna()
        labels, bad_labels = int(measured.to_numpy().sum()), int(measured[table["smiles"].isin(bad)].to_numpy().sum())
    return {"molecules": len(smiles), "unparsable": int((~parsed).sum()), "labels": labels,
            "unparsable_labels": bad_labels}


def featurise(data_dir: Path | None = None) -> dict:
    """:func:`featurise_set` for every set of :data:`MOLECULE_SETS`: the manifest of the fingerprint cache."""
    return {"radius": RADIUS, "bits": BITS, **{name: featurise_set(name, data_dir) for name in MOLECULE_SETS}}


def load_fingerprints(name: str, smiles: Sequence[str] | np.ndarray,
                      data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cached ``(bits [n, bits/8], parsed [n])`` of ``name``, whose distinct SMILES are ``smiles``
    (:func:`distinct_smiles` of its table), computed first if the cache is missing. A cache made from other SMILES
    is refused with the fix."""
    if name not in MOLECULE_SETS:
        raise ValueError(f"unknown molecular data set {name!r}; choose from {', '.join(MOLECULE_SETS)}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    path = data_dir / "prepared" / CACHE / f"{name}.npz"
    if not path.exists():
        featurise_set(name, data_dir)
    with np.load(path, allow_pickle=False) as z:
        if str(z["smiles_sha256"]) != smiles_digest(smiles):
            raise ValueError(f"{path} was computed from other {name} molecules than the prepared table: run "
                             "`python -m metalearn.datasets.fingerprints` (the DVC features stage) to recompute it")
        return z["bits"], z["parsed"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalearn.datasets.fingerprints", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--manifest", type=Path, default=None, help="write a JSON manifest of the fingerprints")
    args = parser.parse_args(argv)
    text = json.dumps(featurise(args.data_dir), indent=2, sort_keys=True)
    if args.manifest:
        with atomic_path(args.manifest) as tmp:
            tmp.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
