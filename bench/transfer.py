"""Data sync: the trainer's S3 transfers against awscli, s5cmd and the AWS CRT client.

Both directions (a prefix down to an empty folder, a folder up to an empty prefix), two
shapes (many small files, a few large ones), on two local S3 servers: moto (one request
at a time) and SeaweedFS (concurrent, as S3 is). Clients run in turn within each round
(interleaved) and every result is checked (file count, bytes, SHA-256 of a sample) before
its time counts, so a fast wrong client is no win. See :mod:`bench.transfer_clients`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import s3servers
from bench.core import Section, Settings, Table, median, rate, ratio, timed
from bench.transfer_checks import SAMPLE, Expected, check_folder, check_prefix, delete_prefix, make_source
from bench.transfer_clients import Client, clients
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.transfers import Transfers

log = logging.getLogger(__name__)

BUCKET = "bench-transfer"
KiB, MiB = 1024, 1024 * 1024
KEEP_BYTES = 64 * 1024 * 1024  # uploads up to this size stay in the server until it stops
SERVER_NAMES = ("moto", "SeaweedFS")
DIRECTIONS = ("download", "upload")
COLUMNS = ["direction", "client", "MB/s", "files/s", "trainer vs this (x)", "check"]


@dataclass(frozen=True, kw_only=True)
class Shape:
    """``files`` files of ``size`` bytes, in 10 partition folders."""

    files: int
    size: int

    @property
    def label(self) -> str:
        unit = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // KiB} KiB"
        return f"{self.files} x {unit}"

    @property
    def total_bytes(self) -> int:
        return self.files * self.size


FULL_SHAPES = (Shape(files=1000, size=10 * KiB), Shape(files=25, size=8 * MiB))
QUICK_SHAPES = (Shape(files=50, size=10 * KiB), Shape(files=3, size=8 * MiB))


@dataclass(kw_only=True)
class Measured:
    """One client in one direction: its verified times, or why it has none."""

    client: str
    direction: str
    trainer: bool = False
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return median(self.seconds)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One server and shape, staged: the source folder, its copy under ``source_prefix``."""

    server: s3servers.S3Server
    shape: Shape
    src: Path
    source_prefix: str
    expected: Expected
    scratch: Path


def measure(stage: Stage, direction: str, rows: list[Client], rounds: int) -> list[Measured]:
    """Each client once per round, in turn; a time counts only once its result checks out."""
    out = [Measured(client=c.name, direction=direction, trainer=c.trainer, error=c.missing) for c in rows]
    s3 = stage.server.client()
    for r in range(rounds):
        for i, (client, m) in enumerate(zip(rows, out, strict=True)):
            if m.error is not None:
                continue
            dest, prefix = (
                stage.scratch / f"down-{r}-{i}",
                f"up/{stage.shape.files}x{stage.shape.size}/{r}-{i}/",
            )
            try:
                if direction == "download":
                    seconds = timed(
                        lambda c=client, d=dest: c.run(stage.server, BUCKET, stage.source_prefix, d)
                    )
                    problem = check_folder(dest, stage.expected)
                else:
                    seconds = timed(lambda c=client, p=prefix: c.run(stage.server, BUCKET, p, stage.src))
                    problem = check_prefix(s3, BUCKET, prefix, stage.expected)
            except Exception as exc:  # noqa: BLE001 - one client failing is a row saying so, not a crash
                m.error = f"failed: {first_line(exc)}"
                continue
            finally:
                shutil.rmtree(dest, ignore_errors=True)
                if direction == "upload" and stage.shape.total_bytes > KEEP_BYTES:
                    delete_prefix(s3, BUCKET, prefix)  # small uploads stay: deleting them costs more time
            if problem:
                m.error = f"wrong result: {problem}"
            else:
                m.seconds.append(seconds)
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def table_rows(measured: Sequence[Measured], shape: Shape) -> list[list[Any]]:
    """Rows of one direction: rates from the median time, the trainer's speed over each client's."""
    trainer = next((m for m in measured if m.trainer and m.seconds), None)
    rows: list[list[Any]] = []
    for m in measured:
        if not m.seconds:
            rows.append([m.direction, m.client, None, None, None, m.error or "no run"])
            continue
        t = m.median
        speedup = ratio(t, trainer.median) if trainer is not None else None
        check = f"ok ({len(m.seconds)} runs)"
        rows.append(
            [m.direction, m.client, rate(shape.total_bytes / 1e6, t), rate(shape.files, t), speedup, check]
        )
    return rows


def server_table(server: str, shape: Shape, results: Sequence[Sequence[Measured]]) -> Table:
    table = Table(title=f"{server}, {shape.label} ({shape.total_bytes / 1e6:.0f} MB)", columns=list(COLUMNS))
    for measured in results:
        for row in table_rows(measured, shape):
            table.add(*row)
    return table


def files_per_s(measured: Sequence[Measured], shape: Shape, client_start: str) -> float | None:
    m = next((m for m in measured if m.client.startswith(client_start) and m.seconds), None)
    return rate(shape.files, m.median) if m is not None else None


def stage_server(server: s3servers.S3Server, shape: Shape, workdir: Path) -> Stage:
    """The shape's files on disk and under ``data/<shape>/`` in the server (staged by boto3, untimed)."""
    base = workdir / f"{server.name}-{shape.files}x{shape.size}"
    src = base / "src"
    expected = make_source(src, shape)
    prefix = f"data/{shape.files}x{shape.size}/"
    transfers = Transfers(
        server.client(), BUCKET, Retrier(ExponentialBackoff(max_retries=3), errors=ErrorLog())
    )
    try:
        transfers.upload_tree(src, prefix, component="bench")
    finally:
        transfers.close()
    return Stage(server=server, shape=shape, src=src, source_prefix=prefix, expected=expected, scratch=base)


def row_set(direction: str, *, wide: bool, lean: bool) -> list[Client]:
    """The clients of one table; ``lean`` (quick, after the first shape): awscli only says it was left out."""
    rows = clients(direction, candidates=wide)
    if not lean:
        return rows
    why = "left out after the first shape of the quick run (a Python start per call)"
    return [replace(c, missing=c.missing or why) if c.name == "aws s3 sync" else c for c in rows]


def run_server(
    name: str, settings: Settings, shapes: Sequence[Shape], rounds: int, *, candidates: bool
) -> list[tuple[Shape, list[list[Measured]]]]:
    """Every shape on one server: ``[(shape, [download rows, upload rows])]``."""
    out = []
    with s3servers.running(name, settings.workdir / "servers") as server:
        s3servers.make_bucket(server, BUCKET)
        for shape in shapes:
            stage = stage_server(server, shape, settings.workdir)
            try:
                # the engines matter for many small files, on a server that serves them concurrently
                wide = candidates and server.concurrent and shape.size < MiB
                lean = settings.quick and shape is not shapes[0]
                results = [measure(stage, d, row_set(d, wide=wide, lean=lean), rounds) for d in DIRECTIONS]
            finally:
                shutil.rmtree(stage.scratch, ignore_errors=True)
                delete_prefix(server.client(), BUCKET, stage.source_prefix)
            out.append((shape, results))
    return out


Results = dict[str, list[tuple[Shape, list[list[Measured]]]]]  # server -> shapes -> [down, up]


def _small(results: Results, server: str) -> tuple[Shape, list[list[Measured]]] | None:
    shapes = results.get(server) or []
    return min(shapes, key=lambda s: s[0].size) if shapes else None


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def engine_note(results: Results) -> str | None:
    """Why s5cmd is the engine: the candidates' small-file download speeds from this run."""
    server = "SeaweedFS" if _small(results, "SeaweedFS") else "moto"
    small = _small(results, server)
    if small is None:
        return None
    shape, (down, _) = small
    names = {
        "s5cmd (the trainer's engine)": "trainer (s5cmd",
        "the AWS CRT client": "AWS CRT",
        "a boto3 process pool": "boto3 process pool",
        "boto3 threads (the trainer before)": "trainer, boto3 path",
    }
    speeds = {label: files_per_s(down, shape, start) for label, start in names.items()}
    measured = ", ".join(f"{label} {v:.0f}" for label, v in speeds.items() if v is not None)
    return (
        f"**Engine: s5cmd.** Downloading {shape.label} from {server}, in files/s: {measured}. s5cmd lists "
        "the prefix once and GETs each object from Go on every core; the CRT client and the pool still "
        "build and sign each request in Python (a few ms of CPU per file, on 2 cores the S3 server also "
        "needs). The trainer runs `s5cmd cp s3://BUCKET/PREFIX*.parquet` with the instance's own "
        "credentials in its environment, then checks every file against the manifest as before; boto3 "
        "threads download whatever s5cmd did not deliver (no binary, an error, a timeout), and "
        "training.json's data_sync details name the engine (`engine`, `fallback_reason`)."
    )


def target_note(results: Results) -> str | None:
    """The issue's target on SeaweedFS: at least s5cmd's speed and twice awscli's, small files down."""
    small = _small(results, "SeaweedFS")
    if small is None:
        return None
    shape, (down, _) = small
    trainer = files_per_s(down, shape, "trainer (")
    vs_s5, vs_aws = files_per_s(down, shape, "s5cmd sync"), files_per_s(down, shape, "aws s3 sync")
    if trainer is None:
        return None
    r_s5 = trainer / vs_s5 if vs_s5 else None
    r_aws = trainer / vs_aws if vs_aws else None
    met = r_s5 is not None and r_aws is not None and r_s5 >= 0.95 and r_aws >= 2.0
    return (
        f"Target (SeaweedFS, {shape.label} down: at least s5cmd's speed and twice awscli's): the trainer is "
        f"{_x(r_s5)} s5cmd sync and {_x(r_aws)} aws s3 sync: {'met' if met else 'not met'} in this run "
        "(within 5% counts as s5cmd's speed). The trainer drives s5cmd's `cp` on the prefix it listed: "
        "one GET per object, where `s5cmd sync` first HEADs each object (two requests per file)."
    )


def large_note(results: Results) -> str | None:
    """Why the trainer trails s5cmd on large files: it hashes every byte it downloaded."""
    server = "SeaweedFS" if results.get("SeaweedFS") else "moto"
    shapes = results.get(server) or []
    if not shapes:
        return None
    shape, (down, _) = max(shapes, key=lambda s: s[0].size)
    trainer, s5 = files_per_s(down, shape, "trainer ("), files_per_s(down, shape, "s5cmd sync")
    vs = _x(trainer / s5 if trainer and s5 else None)
    return (
        f"Large files ({shape.label} down on {server}): the trainer is {vs} s5cmd sync. The same binary "
        "moves the bytes; the difference is mostly the manifest check, which reads every downloaded "
        "byte again for its MD5 (the ETag of a single-part upload), kept as strict as before."
    )


def spread(measured: Sequence[Measured], shape: Shape) -> float | None:
    """Fastest over slowest files/s among the clients that ran."""
    speeds = [rate(shape.files, m.median) for m in measured if m.seconds]
    return max(speeds) / min(speeds) if len(speeds) > 1 and min(speeds) > 0 else None


def server_note(results: Results) -> str:
    """moto's one-request-at-a-time limit against SeaweedFS, with the spreads measured."""
    parts = []
    for server in SERVER_NAMES:
        small = _small(results, server)
        if small is not None:
            parts.append(f"{server} {_x(spread(small[1][0], small[0]))}")
    measured = f" Fastest over slowest client, small files down: {', '.join(parts)}." if parts else ""
    return (
        "moto is one Python process that serves about one request at a time, so on moto every client "
        "waits on the server and the rows converge (no client can show what concurrency buys); "
        "SeaweedFS serves requests concurrently, as S3 does, and separates them. Both servers share the "
        "2 cores with the client, so a client that spends less CPU per request leaves more to the "
        f"server.{measured}"
    )


def upload_note(results: Results) -> str | None:
    server = "SeaweedFS" if _small(results, "SeaweedFS") else "moto"
    small = _small(results, server)
    if small is None:
        return None
    shape, (_, up) = small
    trainer, s5 = files_per_s(up, shape, "trainer"), files_per_s(up, shape, "s5cmd")
    mine = f" ({shape.label} up on {server}: {_x(trainer / s5 if trainer and s5 else None)} s5cmd)"
    return (
        "Uploads stay on boto3 threads: the trainer uploads checkpoints (a few large files, "
        "trainer_state.json last, each hashed for training.json) and results, never thousands of small "
        f"files, so s5cmd's lead on many small uploads{mine} does not touch a run."
    )


STATIC_NOTES = (
    "Every result is checked before its time counts: file count, total bytes and the SHA-256 of "
    f"{SAMPLE} files spread over the set (a download's folder; an upload's listing and objects). "
    "The trainer's download rows include its own checks (the listing, and the MD5 of every file "
    "against its ETag), which the other clients do not do.",
    "The AWS CRT client talks to a plain-HTTP endpoint once its TLS mode is off (`use_ssl=False` "
    "in `s3transfer.crt.create_s3_crt_client`) and botocore serializes path-style requests.",
    "These machines are noisy (2 cores shared with other work): read the ratios of one run, "
    "interleaved rounds, medians; absolute MB/s move from run to run.",
)


def build_section(
    results: Results, *, rounds: dict[str, int], skipped: dict[str, str], quick: bool
) -> Section:
    tables = [
        server_table(server, shape, measured)
        for server, shapes in results.items()
        for shape, measured in shapes
    ]
    notes = [n for n in (engine_note(results), target_note(results), large_note(results)) if n]
    notes += [server_note(results)] + [n for n in (upload_note(results),) if n] + list(STATIC_NOTES)
    notes += [f"{server}: not measured here ({why})." for server, why in skipped.items()]
    shapes = " and ".join(s.label for s in (QUICK_SHAPES if quick else FULL_SHAPES))
    intro = (
        f"A prefix of {shapes} files down to an empty folder, and the same files up to an empty prefix, "
        "by each client in turn, "
        f"interleaved rounds ({', '.join(f'{k} {v}' for k, v in rounds.items()) or 'none'}), medians. "
        "The trainer's rows are what the instance runs: "
        "`trainer.sync.sync_data` (listing, download engine, manifest check) down and "
        "`Transfers.upload_tree` up. *trainer vs this* is the trainer's speed over the row's "
        "(above 1: the trainer is faster)."
    )
    return Section(name="data-sync", title="Data sync", intro=intro, tables=tables, notes=notes)


def server_rounds(server: str, settings: Settings) -> int:
    """Rounds on ``server``: at most 2 on SeaweedFS; 1 on moto (slow, and its rows converge anyway).

    The section's share of ``make bench``'s 10 minutes: ~2-3 minutes on an idle 2-core machine.
    """
    if settings.quick or server != "SeaweedFS":
        return 1
    return max(1, min(settings.rounds, 2))


def run(settings: Settings) -> Section:
    """The data-sync section (quick: the small shapes on moto only, one round)."""
    shapes = QUICK_SHAPES if settings.quick else FULL_SHAPES
    names = ("moto",) if settings.quick else SERVER_NAMES
    results: Results = {}
    skipped: dict[str, str] = {}
    if settings.quick:
        skipped["SeaweedFS"] = "left out of the quick run; `make bench` measures it"
    for name in names:
        try:
            rounds = server_rounds(name, settings)
            results[name] = run_server(name, settings, shapes, rounds, candidates=not settings.quick)
        except s3servers.ServerUnavailable as exc:
            skipped[name] = str(exc)
    rounds = {name: server_rounds(name, settings) for name in results}
    section = build_section(results, rounds=rounds, skipped=skipped, quick=settings.quick)
    if not results:
        section.skipped = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    return section
