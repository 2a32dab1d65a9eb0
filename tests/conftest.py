"""Shared fixtures. Data come from the project's data folder, prepared on first use from $DATA_MIRROR
(CI: ../shared/data) or the official URLs."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from metalearn.core.episodes import ClassDataset
from metalearn.datasets.fetch import load_cifar_fs, load_omniglot

ROOT = Path(__file__).resolve().parents[1]
# the mirror as a local folder (the tests serve it over loopback HTTP, corrupt copies of it, and compare
# against its files): $DATA_MIRROR when that is a folder, else the shared folder beside the checkout
_mirror = os.environ.get("DATA_MIRROR", "")
SHARED_DATA = (ROOT / _mirror).resolve() if _mirror and "://" not in _mirror else ROOT.parent / "shared" / "data"
requires_mirror = pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir(),
                                     reason="needs a local data mirror folder (DATA_MIRROR)")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def omniglot_train() -> ClassDataset:
    return ClassDataset.from_numpy(*load_omniglot("train"), name="omniglot/train")


@pytest.fixture(scope="session")
def omniglot_test() -> ClassDataset:
    return ClassDataset.from_numpy(*load_omniglot("test"), name="omniglot/test")


@pytest.fixture(scope="session")
def cifar_splits() -> dict[str, tuple]:
    return {s: load_cifar_fs(s) for s in ("train", "val", "test")}


@pytest.fixture()
def http_mirror():
    """Serve a folder on a loopback HTTP server; yields ``serve(folder) -> base URL``."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass
