"""RELIABILITY.md rows of the input group (see :mod:`reliability.matrix`): bad input, fuzzed."""

from __future__ import annotations

from reliability.matrix import Row

ROWS: tuple[Row, ...] = (
    Row(id="runspec-mutated", section="Bad input",
        fault="run spec documents (the stored JSON), random and mutated: keys dropped, wrong types, "
        "huge and non-finite numbers, unicode, edge values of every bounded field",
        expected="a spec the launch and the trainer can use, or ConfigError: one line with the JSON path"),
    Row(id="runspec-toml-file", section="Bad input",
        fault="--spec TOML files: mutated documents, truncated or non-UTF-8 bytes, a folder, a missing file",
        expected="a usable spec, or one line naming the file (and the JSON path when the TOML parsed)"),
    Row(id="state-file-bytes", section="Bad input",
        fault="{env}/system-state.json as any bytes: truncated, invalid UTF-8, flipped, not JSON, "
        "mutated documents",
        expected="a valid state, or CorruptStateError: one line naming the state file, the JSON path "
        "and `invoke verify --fix --yes`"),
    Row(id="state-file-readers", section="Bad input",
        fault="state documents the schema accepts, at the edges of its patterns and bounds (timestamps "
        "like 0000-00-00T00:00:00Z, run ids like 20261399-999999, 70-bit numbers)",
        expected="monitor, the run history, the ledger and the recovery handler read them without a "
        "traceback"),
    Row(id="artifact-readers", section="Bad input",
        fault="a run's documents in S3 (training.json, _SUCCESS, cleanup_status.json, the launch record, "
        "the stored run spec) each kept, missing, mutated or damaged below JSON",
        expected="invoke runs / monitor / cost summarise the run: invalid with the S3 key and JSON path, "
        "or the unusable informative document ignored; table and JSON render; nothing raises"),
    Row(id="launch-request-reader", section="Bad input",
        fault="user-configs/launch-request.json (what the recovery handler relaunches from), mutated",
        expected="the stored request exactly, or SchemaValidationError: one line with the JSON path"),
    Row(id="checkpoint-reader", section="Bad input",
        fault="a checkpoint's trainer_state.json mutated or damaged (truncated, not UTF-8, wrong step)",
        expected="the checkpoint is complete, or skipped with a one-line problem; the newest complete "
        "one is chosen, never a crash"),
    Row(id="cli-arguments", section="Bad input",
        fault="invoke tasks (launch, runs, cost, monitor, kill, verify --fix, logs, fetch, data.check) "
        "with random and mutated arguments against a provisioned local env, data staged",
        expected="an exit code and one error line, never a traceback; no RunInstances (every API call "
        "counted) and a failed launch creates no object"),
    Row(id="parquet-data-check", section="Bad input",
        fault="random parquet files under data.prefix (ids, timestamps and targets of every type, nulls, "
        "columns missing, unsorted, jittered, truncated or flipped bytes, CSV named .parquet), odd "
        "frequencies",
        expected="the launch's data check never raises; every error is one line naming the S3 file"),
    Row(id="parquet-trainer-loader", section="Bad input",
        fault="the same random files given to the trainer's loader and validator",
        expected="a dataset, or DataValidationError in one line (an unknown frequency: its ValueError)"),
)  # fmt: skip
