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
)  # fmt: skip
