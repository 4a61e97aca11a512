"""The load tests' run spec file (:data:`reliability.load_world.LOAD_RUN`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.load_world import LOAD_RUN


@pytest.fixture
def load_spec(tmp_path: Path) -> Path:
    path = tmp_path / "load-run.toml"
    path.write_text(LOAD_RUN, "utf-8")
    return path
