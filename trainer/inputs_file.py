"""The training child's inputs files: Chronos-2 input dicts and windows in ``.npz``, no pickling.

The trainer writes the validated training inputs once (:func:`save_inputs`) and the
training child reads them back (:func:`load_inputs`), so the child need not reload
and revalidate the parquet files. The validation window travels the same way
(:func:`save_window`, :func:`load_window`): inputs, actual future, item ids and the
window's start timestamps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data_validation import DataValidationError
from trainer.windows import EvalSet


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
    arrays, meta = _input_arrays(inputs)
    return _write(path, arrays, meta)


def save_window(window: EvalSet, path: Path) -> Path:
    """Write one forecast window (an :class:`~trainer.windows.EvalSet`) to one ``.npz`` file.

    Returns:
        ``path``.
    """
    arrays, meta = _input_arrays(window.inputs)
    shared = len(window.past) == len(window.inputs) and all(
        p is entry["target"] or np.array_equal(p, entry["target"], equal_nan=True)
        for p, entry in zip(window.past, window.inputs, strict=True)
    )
    if not shared:
        arrays.update({f"past{n}": np.asarray(p) for n, p in enumerate(window.past)})
    arrays["future"] = np.asarray(window.future)
    meta["window"] = {
        "name": window.name,
        "item_ids": list(window.item_ids),
        "starts": list(window.starts),
        "prediction_length": int(window.prediction_length),
        "frequency": window.frequency,
        "past_is_target": shared,
        "n_past": len(window.past),
    }
    return _write(path, arrays, meta)


def _input_arrays(inputs: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
    return arrays, meta


def _write(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
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
            return _inputs(data, json.loads(str(data["meta"])))
    except (OSError, KeyError, ValueError) as exc:
        raise DataValidationError(f"{path}: not a saved inputs file ({exc})", file=Path(path)) from exc


def load_window(path: Path) -> EvalSet:
    """Read a window written by :func:`save_window`.

    Raises:
        DataValidationError: the file is missing or not such a file.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            info = meta["window"]
            inputs = _inputs(data, meta)
            if info["past_is_target"]:
                past = [entry["target"] for entry in inputs]
            else:
                past = [data[f"past{n}"] for n in range(int(info["n_past"]))]
            return EvalSet(
                name=str(info["name"]),
                item_ids=tuple(str(x) for x in info["item_ids"]),
                inputs=inputs,
                past=past,
                future=data["future"],
                starts=tuple(str(x) for x in info["starts"]),
                prediction_length=int(info["prediction_length"]),
                frequency=str(info["frequency"]),
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataValidationError(f"{path}: not a saved window file ({exc})", file=Path(path)) from exc


def _inputs(data: Any, meta: dict[str, Any]) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = []
    for n in range(int(meta["n"])):
        entry: dict[str, Any] = {"target": data[f"t{n}"]}
        if meta["past"]:
            entry["past_covariates"] = {name: data[f"p{n}_{j}"] for j, name in enumerate(meta["past"])}
        future = {name: data[f"f{n}_{j}"] for j, name in enumerate(meta["future"])}
        future.update({name: None for name in meta["unavailable"]})
        if future:
            entry["future_covariates"] = future
        inputs.append(entry)
    return inputs
