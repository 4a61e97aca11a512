"""Fixtures for the training-core tests: small synthetic data on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.runspec import DataSpec
from trainer.synthetic import KNOWN_COVARIATE, PAST_COVARIATE, generate_dataset


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """8 hourly items of two weeks with both covariates (a few parquet files)."""
    root = tmp_path_factory.mktemp("small-synthetic")
    return generate_dataset(root, n_items=8, length=24 * 14, items_per_file=4)


@pytest.fixture(scope="session")
def small_spec() -> DataSpec:
    """The run spec's data section matching ``small_files`` (load with ``prediction_length=24``)."""
    return DataSpec.from_dict(
        {"frequency": "h", "past_covariates": [PAST_COVARIATE], "known_covariates": [KNOWN_COVARIATE]}
    )
