"""Shared fixtures: the Vulkan device (lavapipe in CI), seeded RNG, an isolated cache dir."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def device():
    from vkinfer.vk.device import get_device

    return get_device()


@pytest.fixture
def rng(request):
    # A different but reproducible stream per test.
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


def pytest_configure(config):
    # Tests must not read a developer's tuning database or SPIR-V cache by accident.
    if "VKINFER_CACHE" not in os.environ:
        import tempfile

        os.environ["VKINFER_CACHE"] = tempfile.mkdtemp(prefix="vkinfer-test-cache-")
