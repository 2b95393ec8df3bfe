"""Shared test helpers. Real data is read in place from ``FIELDFORGE_DATA`` (default, in the
tests only: ../shared/data beside the repository) and skipped when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.setdefault("FIELDFORGE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))


def shared_path(name: str) -> Path:
    """Path of a dataset in ../shared/data; skips the calling test when it is absent."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
