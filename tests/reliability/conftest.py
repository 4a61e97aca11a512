"""Fixtures of the fault matrix: a local world per test (reliability/harness.py)."""

from __future__ import annotations

import pytest

from reliability.harness import open_world


@pytest.fixture
def world(tmp_path, local_aws):
    """``dev`` provisioned in a clean local AWS behind the harness's gate, a small dataset staged."""
    with open_world(tmp_path, local_aws) as w:
        yield w
