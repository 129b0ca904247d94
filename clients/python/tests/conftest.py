"""The SDK's tests run against a live fabric: ENVFABRIC_URL (and ENVFABRIC_TOKEN, an admin
token) name it. controlplane/e2e/pysdk_test.go starts one on a local package index (packages
alpha, beta, gamma, delta, epsilon) and runs this suite; without ENVFABRIC_URL it is skipped."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

import envfabric


@pytest.fixture(scope="session")
def url() -> str:
    u = os.environ.get("ENVFABRIC_URL")
    if not u:
        pytest.skip("ENVFABRIC_URL is not set: these tests need a live fabric (go test ./controlplane/e2e -run TestPythonSDK)")
    return u


@pytest.fixture()
def fabric(url: str) -> Iterator[envfabric.Client]:
    with envfabric.Client(url, os.environ.get("ENVFABRIC_TOKEN")) as c:
        yield c


@pytest.fixture()
def wf() -> str:
    """A workflow id of its own for each test, so tests never share an environment."""
    return "wf-" + uuid.uuid4().hex[:12]
