"""Control-plane cost: the AWS API requests of one run, what ``invoke monitor`` polls, their price.

A whole run is :mod:`control.demo`'s calls (``local.up``, launch, ``monitor --follow``, verify,
fetch) in a fresh local folder; its requests are counted from local mode's audit log of every
call (:mod:`localaws.audit`), the monitor's bytes by botocore hooks (:class:`Traffic`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import Section, Settings, Table, interleave, median, ratio
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import Market, RunStatus
from common.timeutil import iso, utc_now
from control.backend import Backend
from control.monitor import watch
from infra.outputs import StackOutputs
from localaws import audit as recorder

log = logging.getLogger(__name__)

# S3 Standard request prices, us-east-1, https://aws.amazon.com/s3/pricing/ ("Requests & data
# retrievals"), read 2026-12-01: PUT, COPY, POST, LIST $0.005 per 1,000; GET, SELECT and all
# other requests $0.0004 per 1,000; DELETE and CANCEL requests are free.
S3_PRICE_PAGE, S3_PRICES_READ_ON = "https://aws.amazon.com/s3/pricing/", "2026-12-01"
S3_PUT_USD_PER_1000, S3_GET_USD_PER_1000 = 0.005, 0.0004
# EC2 bills instance time, EBS and data transfer, not API requests; its API is throttled instead.
EC2_THROTTLING_PAGE = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"
PUT_CLASS, GET_CLASS = "S3 PUT/COPY/POST/LIST", "S3 GET and other"
FREE, UNBILLED, STAND_IN = "free (DELETE)", "no charge", "local stand-in"
OPERATOR, INSTANCE, RECOVERY = "operator (laptop)", "instance role", "recovery role"
PRINCIPALS = (OPERATOR, INSTANCE, RECOVERY)
MONITOR_INTERVAL_S = float(inspect.signature(watch).parameters["interval_s"].default)  # invoke's too
ENV, RUN_STEPS = "dev", 10
Records = Iterable[Mapping[str, Any]]  # audit log lines
Calls = dict[str, Counter[str]]  # principal -> service:Operation -> calls


# ---------------------------------------------------------------- pricing
def price_class(kind: str) -> str:
    """The S3 request price class of ``service:Operation`` (other services: no per-request charge)."""
    service, _, operation = kind.partition(":")
    if service != "s3":
        return UNBILLED
    if operation.startswith(("Delete", "Abort")):
        return FREE
    if operation.startswith(("Put", "Copy", "Post", "List", "Create", "Complete", "UploadPart", "Restore")):
        return PUT_CLASS
    return GET_CLASS


def request_cost(counts: Mapping[str, int]) -> float:
    """USD for these requests (kind -> count) at S3 Standard prices; a 304 is a billed GET."""
    per = {PUT_CLASS: S3_PUT_USD_PER_1000 / 1000, GET_CLASS: S3_GET_USD_PER_1000 / 1000}
    return sum(n * per.get(price_class(kind), 0.0) for kind, n in counts.items())


def principals_of(records: Records, identities: Mapping[str, Any], env: str) -> dict[str, str]:
    """Access key -> principal, from ``identities.json`` and the log's ``credentials`` lines.

    The operator is the env's operator user; an assumed-role key is the instance or recovery
    role's by its role ARN. Other keys (the admin: the local supervisor and the audit; the host
    users' ``AssumeRole``, which EC2 and Lambda make on AWS) are local stand-ins.
    """
    ids = (identities.get("envs") or {}).get(env) or {}
    out = {str(ids["operator"]["access_key_id"]): OPERATOR} if ids.get("operator") else {}
    roles = {ids.get("instance_role_arn"): INSTANCE, ids.get("recovery_role_arn"): RECOVERY}
    for r in records:
        if r.get("kind") == "credentials" and r.get("role_arn") in roles:
            out[str(r["access_key_id"])] = roles[r["role_arn"]]
    return out


def count_calls(records: Records, principal_of: Mapping[str, str]) -> Calls:
    """Principal -> (``service:Operation`` -> calls) of every call record (unknown keys: stand-ins)."""
    out: Calls = {}
    for r in records:
        if r.get("kind", "call") == "call":
            who = principal_of.get(str(r.get("access_key_id")), STAND_IN)
            out.setdefault(who, Counter())[f"{r['service']}:{r['operation']}"] += 1
    return out


@dataclass(frozen=True)
class Response:
    """One API response a hooked client received."""

    kind: str
    status: int
    body_bytes: int
    received: int  # status line, headers and body
    at: float


def header_bytes(status: int, headers: Mapping[str, str]) -> int:
    """Bytes of an HTTP/1.1 status line and headers on the wire (``Name: value\\r\\n`` each)."""
    return len(f"HTTP/1.1 {status} X\r\n") + sum(len(k) + len(str(v)) + 4 for k, v in headers.items()) + 2


class Traffic:
    """Every response of the clients :meth:`attach` was given (botocore ``after-call`` hooks)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.responses: list[Response] = []
        self.clock = clock

    def attach(self, client: Any) -> None:
        service = client.meta.service_model.service_name

        def after(http_response: Any, model: Any, **_: Any) -> None:
            headers = dict(http_response.headers)
            length = {k.lower(): v for k, v in headers.items()}.get("content-length")
            status, body = int(http_response.status_code), int(length or 0)
            if length is None and not model.has_streaming_output:
                body = len(http_response.content or b"")
            if status == 304 or model.http.get("method") == "HEAD":
                body = 0  # no body follows, whatever Content-Length says
            received = body + header_bytes(status, headers)
            self.responses.append(Response(f"{service}:{model.name}", status, body, received, self.clock()))

        client.meta.events.register("after-call", after, unique_id=f"bench-traffic-{id(self)}-{id(client)}")

    def between(self, start: float, end: float) -> list[Response]:
        return [r for r in self.responses if start <= r.at <= end]


@dataclass(frozen=True, kw_only=True)
class Watched:
    """What one ``monitor --follow`` received: ``seconds`` from its first call to its last poll."""

    label: str
    polls: int
    seconds: float
    responses: list[Response] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        """Count -> count per minute of steady polling (each poll is followed by one interval)."""
        return 60.0 / (self.seconds + MONITOR_INTERVAL_S) if self.polls else 0.0

    def counts(self) -> Counter[str]:  # service:Operation -> responses
        return Counter(r.kind for r in self.responses)


def monitor_row(w: Watched) -> list[Any]:
    """polls, per minute: polls, S3 200s and 304s, EC2 calls, KiB from S3 and EC2; S3 USD per hour."""
    m, gets = w.per_minute, [r for r in w.responses if r.kind == "s3:GetObject"]
    s3, ec2 = ([r for r in w.responses if r.kind.startswith(p)] for p in ("s3:", "ec2:"))
    full, unchanged = (sum(r.status == code for r in gets) for code in (200, 304))
    kib = [sum(r.received for r in rs) / 1024 for rs in (s3, ec2)]
    per_minute = [n * m for n in (w.polls, full, unchanged, len(ec2), *kib)]
    return [w.label, w.polls, *per_minute, request_cost(w.counts()) * m * 60]


def requests_table(title: str, calls: Calls, monitor: Counter[str]) -> Table:
    """Requests by kind: price class, per principal (and the monitor's share of the operator's)."""
    columns = ["request", "price class", OPERATOR, "of which monitor", INSTANCE, RECOVERY, "all three"]
    t = Table(title=title, columns=columns)
    for kind in sorted({k for p in PRINCIPALS for k in calls.get(p, {})}):
        per = [calls.get(p, Counter())[kind] for p in PRINCIPALS]
        t.add(f"`{kind}`", price_class(kind), per[0], monitor[kind], per[1], per[2], sum(per))
    return t


def cost_rows(calls: Calls, monitor: Counter[str]) -> list[tuple[str, Counter[str]]]:
    """(who, kind counts): the operator without the monitor, the monitor, each role, all of them."""
    rows = [(f"{OPERATOR} without monitor", calls.get(OPERATOR, Counter()) - monitor)]
    rows += [("`invoke monitor --follow`", monitor)] + [(p, calls.get(p, Counter())) for p in PRINCIPALS[1:]]
    return [*rows, ("one run, all principals", sum((c for _, c in rows), Counter()))]


def cost_table(title: str, calls: Calls, monitor: Counter[str]) -> Table:
    t = Table(title=title, columns=["who", PUT_CLASS, GET_CLASS, "EC2 requests", "USD", "USD per 1,000"])
    for who, counts in cost_rows(calls, monitor):
        put, get = (sum(n for k, n in counts.items() if price_class(k) == c) for c in (PUT_CLASS, GET_CLASS))
        ec2, usd = sum(n for k, n in counts.items() if k.startswith("ec2:")), request_cost(counts)
        t.add(who, put, get, ec2, usd, usd * 1000)
    return t


def monitor_table(watched: list[Watched]) -> Table:
    t = Table(
        title=f"What `invoke monitor --follow` receives per minute (its interval: {MONITOR_INTERVAL_S:g} s)",
        columns=["watching", "polls", "polls/min", "S3 full GETs/min", "S3 304s/min", "EC2 calls/min",
                 "S3 KiB/min", "EC2 KiB/min", "S3 USD per hour"],
    )  # fmt: skip
    for w in watched:
        t.add(*monitor_row(w))
    return t


# ---------------------------------------------------------------- the monitor against moto
class _MotoBackend(Backend):
    """The monitor's view of a moto server: its session and one bucket's outputs."""

    name, local, device = "bench", True, "cpu"

    def __init__(self, aws: Any, bucket: str) -> None:
        super().__init__(session=aws.session(), endpoint_url=aws.endpoint_url)
        self.outputs = StackOutputs(
            bucket=bucket, region="us-east-1", env=ENV, account_id="123456789012", subnets_by_az={},
            security_group_id="", launch_template_id="", instance_profile_arn="", instance_role_arn="",
            operator_policy_arn="",
        )  # fmt: skip

    def stack_outputs(self, env: str) -> StackOutputs:
        return self.outputs


def _instance(ec2: Any) -> str:
    return str(
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    )


def live_doc(instance_id: str | None, history: int = 40) -> dict[str, Any]:
    """The state document of a run in its middle (training, a long history)."""
    now = iso(utc_now())
    doc = new_state(env=ENV, run_id="20261125-140502", market=Market.SPOT, total_steps=1000, now=now)
    doc["history"] += [{"status": RunStatus.TRAINING.value, "at": now, "reason": "resumed"}] * history
    doc.update(status=RunStatus.TRAINING.value, instance_id=instance_id, instance_type="g5.xlarge")
    doc["progress"].update(step=400, loss=0.5, eta_s=120.0)
    return doc


def follow(backend: Backend, traffic: Traffic, label: str, max_polls: int = 300) -> Watched:
    """``invoke monitor --follow`` (:func:`control.monitor.watch`, its interval) until the run
    ends or ``max_polls`` (ten minutes at the default interval)."""
    start, polls = time.monotonic(), 0
    for _ in watch(backend, env=ENV, follow=True, interval_s=MONITOR_INTERVAL_S, max_polls=max_polls):
        polls += 1
    end = time.monotonic()
    return Watched(label=label, polls=polls, seconds=end - start, responses=traffic.between(start, end))


@dataclass
class _Moto:
    watched: Watched
    reads: Table
    state_bytes: int
    records: list[dict[str, Any]]  # the audit log of the monitor's polls


def _moto_part(settings: Settings, audit_log: Path) -> _Moto:
    """moto in a thread and a hand-made live state file: the monitor (recorded), then the reads."""
    from localaws import moto

    aws = moto.start()
    try:
        with _environment():
            recorder.install(audit_log)  # before the clients exist: it hooks their creation
            backend, traffic = _MotoBackend(aws, "bench-control-plane"), Traffic()
            clients = backend.clients()
            for client in vars(clients).values():
                traffic.attach(client)
            clients.s3.create_bucket(Bucket=backend.outputs.bucket)
            store = StateStore(clients.s3, backend.outputs.bucket, ENV)
            doc = live_doc(None if settings.quick else _instance(clients.ec2))  # moto's EC2: ~5 s to import
            etag = store.acquire(doc).etag
            before, label = len(recorder.read_log(audit_log)), "a run whose state does not change (hand-made)"
            watched = follow(backend, traffic, label, max_polls=3 if settings.quick else 8)
            records = recorder.read_log(audit_log)[before:]
        rounds = min(max(settings.rounds, 2), 3)  # a few: the bench's whole budget is 10 minutes
        reads = reads_table(store, etag, traffic, 10 if settings.quick else 50, rounds)
        size = len(json.dumps(doc, indent=2, sort_keys=True))
        return _Moto(watched=watched, reads=reads, state_bytes=size, records=records)
    finally:
        aws.stop()


def reads_table(store: StateStore, etag: str, traffic: Traffic, polls: int, rounds: int) -> Table:
    """The state file read ``polls`` times each way, interleaved: time, then one read's bytes."""
    full, cond = "full GET + parse + validate", "conditional GET (If-None-Match)"
    once: dict[str, Callable[[], object]] = {full: store.read, cond: lambda: store.read_if_changed(etag)}
    times = interleave({k: lambda f=f: [f() for _ in range(polls)] for k, f in once.items()}, rounds)
    t = Table(
        title=f"{polls} polls of an unchanged state file, {rounds} interleaved rounds",
        columns=["read", f"{polls} polls (s, median)", "speed-up ratio", "body bytes/poll",
                 "bytes received/poll", "S3 USD per 1M polls"],
    )  # fmt: skip
    for name, fn in once.items():
        before = len(traffic.responses)
        fn()
        got = traffic.responses[before:]
        cost, took = request_cost(Counter(r.kind for r in got)) * 1e6, median(times[name])
        body, received = sum(r.body_bytes for r in got), sum(r.received for r in got)
        t.add(name, took, ratio(median(times[full]), took), body, received, cost)
    return t


# ---------------------------------------------------------------- a whole local run
@dataclass
class _Run:
    records: list[dict[str, Any]]
    principal_of: dict[str, str]
    watched: Watched
    seconds: float


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them and the audit recorder."""
    saved = {k: os.environ.get(k) for k in (*values, recorder.ENV_VAR)}
    recording = recorder.installed_path()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        for k in [k for k, v in saved.items() if v is None]:
            os.environ.pop(k, None)
        recorder.uninstall()
        if recording is not None:
            recorder.install(recording)


def _whole_run(workdir: Path, steps: int) -> _Run:
    """The user's day in a fresh local folder: up, launch, follow, verify, fetch; then down."""
    from control import demo, fetch, launch, local_audit, local_backend, localdir, localenv, verify

    local_dir, t0 = localdir.LocalDir(workdir / "local"), time.monotonic()
    # the recovery schedule as on AWS (rate(5 minutes)), not local mode's 5 s
    with _environment(CHRONOS_LOCAL_DIR=str(local_dir.root), CHRONOS_RECOVERY_TICK_S="300"):
        try:
            localenv.up(env=ENV, local_dir=local_dir)
            calls = local_audit.start(local_dir.root / "audit" / "run.jsonl")
            backend = local_backend.LocalBackend.open(local_dir)
            spec = local_dir.root / "bench-run.toml"
            spec.write_text(demo.demo_spec(steps), "utf-8")
            result = launch.launch(backend, env=ENV, spec_path=spec).result
            monitor, traffic = local_backend.LocalBackend.open(local_dir, env=ENV), Traffic()
            for client in vars(monitor.clients()).values():
                traffic.attach(client)
            watched = follow(monitor, traffic, f"a live run ({steps} steps), launch to end")
            verify.verify(backend, env=ENV)
            run_id = result.run_id if result else None
            fetch.fetch_run(backend, env=ENV, run_id=run_id, dest_root=workdir / "runs")
            records = recorder.read_log(calls)
            principal_of = principals_of(records, localdir.read_json(local_dir.identities_file) or {}, ENV)
        finally:
            localenv.down(local_dir=local_dir)
    return _Run(records=records, principal_of=principal_of, watched=watched, seconds=time.monotonic() - t0)


# ---------------------------------------------------------------- the section
INTRO = (
    "The AWS API requests of one run, by kind and principal, counted from local mode's audit log of "
    "every call both sides make (`CHRONOS_IAM_AUDIT_LOG`); what `invoke monitor --follow` receives "
    "per minute (botocore hooks on its clients); and their price at S3 Standard request prices, "
    f"us-east-1 ([S3 pricing]({S3_PRICE_PAGE}), read {S3_PRICES_READ_ON}: PUT, COPY, POST, LIST "
    f"${S3_PUT_USD_PER_1000} per 1,000; GET and all other ${S3_GET_USD_PER_1000} per 1,000; DELETE "
    "free). EC2 API requests are free (EC2 bills instances, EBS and transfer, and "
    f"[throttles]({EC2_THROTTLING_PAGE}) its API instead), as are STS and IAM calls."
)


def run(settings: Settings) -> Section:
    """The control-plane section: requests per run, monitor bytes per minute, their price."""
    section = Section(name="control-plane", title="Control-plane cost: API requests and monitor traffic",
                      intro=INTRO)  # fmt: skip
    moto_part, whole = _moto_part(settings, settings.workdir / "audit" / "monitor.jsonl"), None
    if not settings.quick:
        try:
            whole = _whole_run(settings.workdir / "run", RUN_STEPS)
        except Exception as exc:  # noqa: BLE001 - the section reports a failed run, the bench goes on
            log.exception("the whole local run failed")
            section.notes.append(f"The whole local run failed ({type(exc).__name__}: {exc}).")
    if whole is not None:
        calls, monitor = count_calls(whole.records, whole.principal_of), whole.watched.counts()
        what = f"one whole local run ({RUN_STEPS} steps, {whole.seconds:.0f} s from `local.up` to `down`)"
    else:
        calls = count_calls(moto_part.records, {"testing": OPERATOR})  # moto's own key signs here
        monitor = Counter(calls.get(OPERATOR, Counter()))
        what = f"{moto_part.watched.polls} monitor polls of a hand-made state file (quick: no whole run)"
    watched = [moto_part.watched] if whole is None else [whole.watched, moto_part.watched]
    section.tables += [
        requests_table(f"API requests of {what}", calls, monitor),
        cost_table(f"S3 request cost of {what}", calls, monitor),
        monitor_table(watched),
        moto_part.reads,
    ]
    section.notes += notes(calls, moto_part, whole)
    return section


def notes(calls: Calls, moto_part: _Moto, whole: _Run | None) -> list[str]:
    """What the tables mean, and what was not measured here."""
    usd_day = monitor_row(moto_part.watched)[-1] * 24
    out = [
        f"Watching an unchanged run costs {usd_day:.4f} USD per day: each poll is one S3 GET (a 304 Not "
        "Modified when nothing changed, still billed as a GET) and one free EC2 `DescribeInstances`.",
        "The conditional GET saves bytes and parsing, not money: a 304 has no body (the full GET "
        f"carries the {moto_part.state_bytes} B state file) and S3 prices both as one GET. Bytes are "
        "moto's responses (status line, headers, body); AWS's headers and EC2's XML differ a little.",
    ]
    if whole is None:
        quick = "Quick mode measured the monitor only (moto, a hand-made state file, no instance): the "
        return [*out, quick + "per-run tables count its polls alone; `make bench` counts a whole run."]
    stand_in = sum(calls.get(STAND_IN, Counter()).values())
    return [*out,
        f"Left out: {stand_in} call(s) signed by local stand-ins (the admin, the host users' "
        "`AssumeRole`, which EC2 and Lambda make on AWS for the instance and recovery roles).",
        "The recovery role's `DescribeInstances` are mostly local mode's event pump looking for ended "
        "instances every second; on AWS EventBridge pushes those events, and the `rate(5 minutes)` "
        "schedule (set here too) makes a few calls per delivery.",
        f"The monitor watched the live run for {whole.watched.seconds:.0f} s: its requests grow with "
        "the time you watch, the rest with the run's length (heartbeats every 20 s, checkpoints).",
    ]  # fmt: skip
