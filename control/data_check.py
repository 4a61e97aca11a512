"""The training data in S3 against the run spec, checked before a GPU is rented.

``invoke data check`` and ``invoke launch`` read no whole file. Every parquet object
under ``data.prefix`` gives its footer (the schema and row counts) through ranged
``GetObject`` requests: the last 64 KiB, more only when the footer says so. A sample
adds the item id and timestamp columns of the first row group of a few files, at most
:data:`SAMPLE_BYTES` in all, read through the same ranged reader.

Errors are only what would make the run fail on the instance: no parquet data, a file
that is not parquet, a missing column, a column of the wrong type, timestamps that do
not parse, a duplicate timestamp, a frequency the data does not have, or too few rows
for one usable series. What the trainer repairs or drops (gaps, short series, unsorted
rows) is at most a warning. Each error names the S3 key and the column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import UserError
from common.runspec import RunSpec
from control.data_check_schema import NotParquet, RangedObject, across_files, open_parquet, schema_errors
from control.data_check_series import SampledSeries, series_findings

SAMPLE_BYTES = 16 * 1024 * 1024  # item ids and timestamps read for the sample, all files together
SAMPLE_ROWS = 2_000_000  # rows of the sample, all files together (the time it takes)
SAMPLE_FILES = 8  # files the sample may come from (first, last and evenly between)
MAX_FOOTERS = 1000  # more files: an even sample of this many footers
FOOTER_THREADS = 8

Guard = Callable[[str, str], AbstractContextManager[Any]]


class DataCheckError(UserError):
    """The training data cannot be used with the run spec; every error in one line (exit 2)."""

    def __init__(self, result: DataCheckResult, *, listed: bool = False) -> None:
        self.result = result
        n = len(result.errors)
        errors = f"{n} error{'s' if n != 1 else ''}"
        super().__init__(
            f"the training data does not fit the run spec: {errors} listed above; fix the data or the "
            "run spec's [data] and [model] and check again"
            if listed
            else f"the training data does not fit the run spec ({errors}), nothing was launched: "
            + " | ".join(result.errors)
            + " (check with `invoke data.check`, or launch with --skip-data-check)"
        )


@dataclass(frozen=True, kw_only=True)
class DataCheckResult:
    """What the check read and found. ``ok`` when there is no error (warnings do not stop a run)."""

    bucket: str
    prefix: str
    files: int  # .parquet objects under the prefix
    files_checked: int  # footers read
    bytes_total: int
    bytes_read: int
    rows: int  # from the footers read
    sampled_files: tuple[str, ...]
    sampled_rows: int
    sampled_items: int
    long_enough: int  # sampled items with at least min_length steps
    min_length: int
    frequency: str | None  # the spec's; None: auto
    inferred_frequency: str | None
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "location": f"s3://{self.bucket}/{self.prefix}",
            "files": self.files,
            "files_checked": self.files_checked,
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "rows": self.rows,
            "sampled_files": list(self.sampled_files),
            "sampled_rows": self.sampled_rows,
            "sampled_items": self.sampled_items,
            "long_enough": self.long_enough,
            "min_length": self.min_length,
            "frequency": self.frequency or "auto",
            "inferred_frequency": self.inferred_frequency,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


@dataclass(kw_only=True)
class _Footer:
    key: str
    size: int
    parquet: pq.ParquetFile | None = field(default=None, repr=False)
    obj: RangedObject | None = field(default=None, repr=False)
    rows: int = 0
    problems: list[str] = field(default_factory=list)


def _read_footer(s3: Any, bucket: str, key: str, size: int, spec: RunSpec) -> _Footer:
    footer = _Footer(key=key, size=size)
    try:
        footer.parquet, footer.obj = open_parquet(s3, bucket, key, size)
    except NotParquet as exc:
        footer.problems.append(f"not a parquet file: {exc} (replace it, or move it out of data.prefix)")
        return footer
    footer.rows = footer.parquet.metadata.num_rows
    footer.problems += schema_errors(footer.parquet.schema_arrow, spec)
    return footer


def _spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return list(items)
    if n == 1:
        return items[:1]
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def _list(s3: Any, bucket: str, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
    parquet, other = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                parquet.append(obj)
            elif not obj["Key"].endswith("/"):
                other.append(obj["Key"])
    return sorted(parquet, key=lambda o: o["Key"]), other


def _grouped(bucket: str, footers: list[_Footer]) -> list[str]:
    """Each distinct problem once, naming the first file it was found in and how many more."""
    by_problem: dict[str, list[str]] = {}
    for f in footers:
        for problem in f.problems:
            by_problem.setdefault(problem, []).append(f.key)
    out = []
    for problem, keys in by_problem.items():
        more = f" (and {len(keys) - 1} other file{'s' if len(keys) > 2 else ''})" if len(keys) > 1 else ""
        out.append(f"s3://{bucket}/{keys[0]}{more}: {problem}")
    return out


def _sample(footers: list[_Footer], spec: RunSpec) -> Iterator[SampledSeries]:
    """The item ids, timestamps and targets of the first row group of a few files, within the byte budget."""
    columns = [spec.data.item_id_column, spec.data.timestamp_column, spec.data.target_column]
    budget, rows_left = SAMPLE_BYTES, SAMPLE_ROWS
    for f in _spread(footers, SAMPLE_FILES):
        meta = f.parquet.metadata if f.parquet is not None else None
        if meta is None or meta.num_row_groups == 0 or meta.num_rows == 0:
            continue
        group = meta.row_group(0)
        try:  # a damaged footer may name a row group's column chunk in bytes that are not UTF-8
            wanted = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        except UnicodeDecodeError as exc:
            f.problems.append(f"not readable parquet (a column name in its footer is not UTF-8: {exc})")
            continue
        if any(c not in wanted for c in columns):
            continue  # the schema check names the missing column
        cost = sum(wanted[c].total_compressed_size for c in columns)
        if cost > budget:
            continue
        budget -= cost
        try:
            table = f.parquet.read_row_group(0, columns=columns)
            # arrow checks a string page's UTF-8 only when asked (as the trainer's loader does):
            # a flipped byte in one would surface later as a UnicodeDecodeError with no file named
            table.validate(full=True)
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            f.problems.append(f"not readable parquet ({' '.join(str(exc).split())})")
            continue
        if table.num_rows > rows_left:
            table = table.slice(0, rows_left)
        rows_left -= table.num_rows
        yield SampledSeries(key=f.key, table=table, complete=table.num_rows == meta.num_rows)
        if rows_left <= 0:
            return


def check_data(s3: Any, bucket: str, spec: RunSpec, *, guard: Guard | None = None) -> DataCheckResult:
    """Check the parquet data under ``spec.data.prefix`` against ``spec``: footers and a sample.

    ``guard(action, resource)`` wraps the AWS calls (a backend's ``errors``: access
    denied becomes a one-line user error). Never raises for the data itself: every
    problem is in the result's ``errors`` or ``warnings``.
    """
    guard = guard or (lambda action, resource: nullcontext())
    prefix, data = spec.data.prefix, spec.data
    h, k = spec.model.prediction_length, spec.model.backtest_windows
    min_length = (k + 1) * h + h + h
    where = f"s3://{bucket}/{prefix}"
    with guard("s3:ListBucket", where):
        listed, other = _list(s3, bucket, prefix)
    warnings: list[str] = []
    if other:
        n = len(other)
        warnings.append(
            f"{n} object{'s' if n != 1 else ''} under {where} not ending in .parquet "
            f"(e.g. {other[0]}) {'are' if n != 1 else 'is'} ignored"
        )
    base = dict(
        bucket=bucket, prefix=prefix, files=len(listed), frequency=data.frequency, min_length=min_length
    )
    if not listed:
        return DataCheckResult(
            **base, files_checked=0, bytes_total=0, bytes_read=0, rows=0, sampled_files=(), sampled_rows=0,
            sampled_items=0, long_enough=0, inferred_frequency=None, warnings=tuple(warnings),
            errors=(
                f"no .parquet object under {where}; upload your data there "
                f"(aws s3 cp --recursive DIR {where}) or set data.prefix in the run spec",
            ),
        )  # fmt: skip
    chosen = _spread(listed, MAX_FOOTERS)
    if len(chosen) < len(listed):
        warnings.append(f"read the footers of {len(chosen)} of the {len(listed)} files (an even sample)")
    with guard("s3:GetObject", where), ThreadPoolExecutor(FOOTER_THREADS) as pool:
        footers = list(
            pool.map(lambda o: _read_footer(s3, bucket, o["Key"], int(o.get("Size", 0)), spec), chosen)
        )
        usable = [f for f in footers if not f.problems]
        sample = list(_sample(usable, spec))
    rows = sum(f.rows for f in footers)
    if usable and rows and not sample:
        warnings.append(
            f"no sample read: the first row groups' {data.item_id_column} and {data.timestamp_column} "
            f"columns exceed {SAMPLE_BYTES // 2**20} MiB; timestamps, frequency and lengths are not checked"
        )
    every_row = len(chosen) == len(listed) and sum(s.table.num_rows for s in sample if s.complete) == rows
    findings = series_findings(
        sample, spec, bucket=bucket, where=where, min_length=min_length,
        exhaustive=every_row and rows >= min_length and not any(f.problems for f in footers),
    )  # fmt: skip
    errors = _grouped(bucket, footers)
    errors += across_files([(f"s3://{bucket}/{f.key}", f.parquet.schema_arrow) for f in usable], spec)
    if len(chosen) == len(listed) and rows < min_length and not errors:
        errors.append(
            f"the {rows} rows under {where} cannot hold one series of the {min_length} steps a run needs "
            f"(validation and {k} test windows of {h}, {h} to train on, {h} of context: "
            f"(model.backtest_windows + 1) x model.prediction_length + 2 x model.prediction_length); "
            "add data or lower model.prediction_length or model.backtest_windows"
        )
    return DataCheckResult(
        **base,
        files_checked=len(footers),
        bytes_total=sum(int(o.get("Size", 0)) for o in listed),
        bytes_read=sum(f.obj.fetched for f in footers if f.obj is not None),
        rows=rows,
        sampled_files=tuple(s.key for s in sample),
        sampled_rows=sum(s.table.num_rows for s in sample),
        sampled_items=findings.items,
        long_enough=findings.long_enough,
        inferred_frequency=findings.inferred_frequency,
        warnings=tuple(warnings + findings.warnings),
        errors=tuple(errors + findings.errors),
    )


def require_data(s3: Any, bucket: str, spec: RunSpec, *, guard: Guard | None = None) -> DataCheckResult:
    """:func:`check_data`, raising :class:`DataCheckError` (exit 2) when there is an error."""
    result = check_data(s3, bucket, spec, guard=guard)
    if not result.ok:
        raise DataCheckError(result)
    return result


def data_check(backend: Any, *, env: str, spec_path: Path | None = None) -> DataCheckResult:
    """``invoke data check``: the env's training data against the run spec at ``spec_path``.

    ``backend`` may be a factory, called once the env name and the spec are valid.

    Raises:
        ConfigError: a bad env name or run spec; the errors of the backend (credentials, outputs).
    """
    from control.backend import Backend, check_env
    from control.launch import load_spec

    check_env(env)
    spec = load_spec(spec_path, env=env)
    if not isinstance(backend, Backend):
        backend = backend()
    outputs = backend.stack_outputs(env)
    return check_data(backend.clients().s3, outputs.bucket, spec, guard=backend.errors)
