"""Shared test configuration.

Parity tests read ``../shared`` (fixtures and sample media) beside the checkout. In a
user's clone it is absent and those tests skip with a reason; ``.ci/run`` sets
``ANYSEG_REQUIRE_SHARED=1`` so that its absence fails the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANYSEG_SHARED", REPO.parent / "shared"))


def _shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        if os.environ.get("ANYSEG_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing, and ANYSEG_REQUIRE_SHARED=1 requires it")
        pytest.skip(f"{path} is absent (parity fixtures and samples live beside the checkout)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures``: official-format checkpoints and official outputs."""
    return _shared_dir("fixtures")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """``../shared/samples``: real images, videos and annotations."""
    return _shared_dir("samples")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ``ANYSEG_HOME`` so nothing touches ``~/.cache``."""
    monkeypatch.setenv("ANYSEG_HOME", str(tmp_path_factory.mktemp("anyseg_home")))


@pytest.fixture(params=["serial", "team of 3"])
def loop_threads(request, monkeypatch):
    """The compiled loops of :mod:`anyseg.kernels` on this thread alone, or split in three
    parts on torch's OpenMP team (on a real click: two parts, where the team is found)."""
    from anyseg import kernels

    if request.param == "serial":
        monkeypatch.setattr(kernels, "_team", lambda: None)
    else:
        if kernels._team() is None:
            pytest.skip("torch does not run on GNU OpenMP here: the loops run on the calling thread")
        monkeypatch.setattr(kernels.torch, "get_num_threads", lambda: 3)
    return request.param
