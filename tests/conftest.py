"""Shared fixtures: the Vulkan device (lavapipe in CI), seeded RNG, an isolated cache dir."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def device():
    from vkinfer.vk.device import get_device

    return get_device()


@pytest.fixture(scope="module", autouse=True)
def _release_pipelines():
    """Each test module's pipelines are destroyed after it: the whole suite compiles a few
    thousand specializations, more than some drivers hold at once."""
    yield
    from vkinfer.vk import device as vkdev

    if vkdev._default is not None:
        vkdev._default.clear_pipelines()


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
