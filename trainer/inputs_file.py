"""The training child's inputs file: Chronos-2 input dicts in one ``.npz``, no pickling.

The trainer writes the validated training inputs once (:func:`save_inputs`) and the
training child reads them back (:func:`load_inputs`), so the child need not reload
and revalidate the parquet files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data_validation import DataValidationError


def save_inputs(inputs: list[dict[str, Any]], path: Path) -> Path:
    """Write Chronos-2 input dicts (as built by :func:`load_dataset`) to one ``.npz`` file.

    No pickling: numeric and string arrays only; a known covariate without future
    values (``None``) is recorded in the metadata.

    Args:
        inputs: dicts with ``target`` and optional ``past_covariates``/``future_covariates``.
        path: destination (``.npz``).

    Returns:
        ``path``.
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"n": len(inputs), "past": [], "future": [], "unavailable": []}
    if inputs:
        first = inputs[0]
        meta["past"] = list(first.get("past_covariates", {}))
        future = first.get("future_covariates", {})
        meta["future"] = [k for k, v in future.items() if v is not None]
        meta["unavailable"] = [k for k, v in future.items() if v is None]
    for n, entry in enumerate(inputs):
        arrays[f"t{n}"] = np.asarray(entry["target"])
        for j, name in enumerate(meta["past"]):
            arrays[f"p{n}_{j}"] = np.asarray(entry["past_covariates"][name])
        for j, name in enumerate(meta["future"]):
            arrays[f"f{n}_{j}"] = np.asarray(entry["future_covariates"][name])
    arrays["meta"] = np.asarray(json.dumps(meta))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_inputs(path: Path) -> list[dict[str, Any]]:
    """Read input dicts written by :func:`save_inputs`.

    Raises:
        DataValidationError: the file is missing or not such a file.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            inputs: list[dict[str, Any]] = []
            for n in range(int(meta["n"])):
                entry: dict[str, Any] = {"target": data[f"t{n}"]}
                if meta["past"]:
                    entry["past_covariates"] = {
                        name: data[f"p{n}_{j}"] for j, name in enumerate(meta["past"])
                    }
                future = {name: data[f"f{n}_{j}"] for j, name in enumerate(meta["future"])}
                future.update({name: None for name in meta["unavailable"]})
                if future:
                    entry["future_covariates"] = future
                inputs.append(entry)
    except (OSError, KeyError, ValueError) as exc:
        raise DataValidationError(f"{path}: not a saved inputs file ({exc})", file=Path(path)) from exc
    return inputs
