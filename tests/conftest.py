"""Shared pytest fixtures and settings for pixrank's tests.

- ``rng``: a numpy Generator seeded from the test's node id (deterministic per test,
  different across tests).
- ``threads``: runs the test once with the kernels on 1 thread and once on 2
  (``pixrank.set_num_threads``), restoring the previous count afterwards.
- ``simd_path``: runs the test once per SIMD path the compiled module reports as
  available on this CPU (``pixrank._kernels.available_simd()``), restoring the default.
- Hypothesis: the ``pixrank`` profile (modest ``max_examples``, no deadline, derandomised
  so every run draws the same examples, no example database, and its other files kept in
  the temporary directory: nothing is written to the working directory).
  ``HYPOTHESIS_PROFILE=thorough`` draws more examples.
- ``@pytest.mark.slow`` tests are skipped unless ``PIXRANK_SLOW=1``.
"""
from __future__ import annotations

import os
import tempfile
import zlib

import numpy as np
import pytest

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    settings = None

if settings is not None:
    # Hypothesis keeps its files (failing-example patches) under ./.hypothesis by default:
    # send them to the temporary directory instead, never into the working directory.
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        from hypothesis import configuration as _hypothesis_configuration

        _hypothesis_configuration.set_hypothesis_home_dir(
            os.path.join(tempfile.gettempdir(), "pixrank-hypothesis")
        )
    settings.register_profile(
        "pixrank", max_examples=40, deadline=None, derandomize=True, database=None
    )
    settings.register_profile(
        "thorough", max_examples=400, deadline=None, derandomize=False, database=None
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pixrank"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests, run only with PIXRANK_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PIXRANK_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set PIXRANK_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "simd_path" in metafunc.fixturenames:
        try:
            from pixrank import _kernels

            paths = list(_kernels.available_simd())
        except (ImportError, AttributeError):
            paths = []
        metafunc.parametrize("simd_path", paths or ["default"], indirect=True)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A Generator seeded from the test's node id."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test with the kernels on 1 and on 2 threads."""
    import pixrank

    old = pixrank.get_num_threads()
    pixrank.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        pixrank.set_num_threads(old)


@pytest.fixture
def simd_path(request):
    """Force one SIMD path (``set_simd``) for the test; restore the detected one after."""
    if request.param == "default":
        yield "default"
        return
    from pixrank import _kernels

    old = _kernels.info()["simd"]
    _kernels.set_simd(request.param)
    try:
        yield request.param
    finally:
        _kernels.set_simd(old)
