"""What ``invoke data check`` prints: what was read, what was found, and whether a run can start."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from control.cli.tables import kv_table


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def data_check(out: Console, result: Any, *, as_json: bool) -> None:
    """The data check's table, its warnings and errors (``--json``: the result's document)."""
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    r = result
    freq = r.frequency or "auto"
    inferred = r.inferred_frequency or "-"
    out.print(
        kv_table(
            "training data",
            [
                ("location", f"s3://{r.bucket}/{r.prefix}"),
                ("files", f"{r.files} parquet ({_bytes(r.bytes_total)}), {r.files_checked} footers read"),
                ("rows", f"{r.rows} (from the footers)"),
                ("read", f"{_bytes(r.bytes_read)} in ranged requests"),
                (
                    "sample",
                    f"{r.sampled_rows} rows, {r.sampled_items} items from {len(r.sampled_files)} file(s)",
                ),
                ("frequency", f"spec {freq}, sample looks like {inferred}"),
                (
                    "series length",
                    f"{r.long_enough} of {r.sampled_items} sampled items have >= {r.min_length} steps",
                ),
            ],
        )
    )
    for warning in r.warnings:
        out.print(Text.assemble(("warning", "yellow"), ": ", warning), soft_wrap=True)
    for error in r.errors:
        out.print(Text.assemble(("error", "red"), ": ", error), soft_wrap=True)
    if r.ok:
        out.print("[green]data ok[/] for the run spec (warnings do not stop a launch)")
