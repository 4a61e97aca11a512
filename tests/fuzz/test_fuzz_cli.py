"""The invoke tasks with random and mutated arguments, run in-process against a provisioned local env.

Property: whatever the arguments, a task ends with an exit code and, when it fails, one
``error:`` line (or invoke's own one-line parse error); it never raises a traceback, and no
instance is requested (every botocore API call of the process is counted: RunInstances,
RequestSpotInstances and CreateFleet stay at zero). A failed launch creates no S3 object.
Only ``--dry-run`` may let a launch exit 0, and it creates nothing.
"""

from __future__ import annotations

import os
from collections import Counter

import botocore.client
import fuzzkit
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from invoke import Program

ROW = "cli-arguments"
LAUNCHING = {"RunInstances", "RequestSpotInstances", "CreateFleet", "StartInstances"}
CREATING = {"PutObject", "CreateMultipartUpload", "CopyObject", "DeleteObject", "DeleteObjects", "CreateTags"}
CALLS: Counter = Counter()


class WouldStartAnInstanceError(RuntimeError):
    """The local backend was asked to start an instance: the arguments launched."""


@pytest.fixture(scope="module")
def provisioned(moto_server, tmp_path_factory):
    """``dev`` provisioned with its data staged, local mode pointed at it, every API call counted."""
    from control import local_backend
    from control.local_backend import LocalBackend
    from control.localdir import LocalDir, write_json
    from control.localenv import provision, stage_dataset

    moto_server.reset()
    root = tmp_path_factory.mktemp("cli")
    folder = LocalDir(root / ".local")
    write_json(
        folder.aws_file, {"endpoint_url": moto_server.endpoint_url, "pid": None, "region": "us-east-1"}
    )
    saved = {k: os.environ.get(k) for k in ("CHRONOS_LOCAL_DIR", "COLUMNS")}
    os.environ.update(CHRONOS_LOCAL_DIR=str(folder.root), COLUMNS="200")
    backend = LocalBackend.open(folder)
    outputs = provision(backend, "dev")
    stage_dataset(backend.clients().s3, outputs["bucket"], _tiny_dataset(root / "data"))
    original_call, original_start = (
        botocore.client.BaseClient._make_api_call,
        local_backend.LocalBackend.start_instance,
    )

    def counted(client, operation, params):
        if not params.get("DryRun"):  # the doctor's RunInstances dry run asks, it does not launch
            CALLS[operation] += 1
        return original_call(client, operation, params)

    def refuse(self, **kwargs):
        raise WouldStartAnInstanceError(kwargs.get("instance_id"))

    botocore.client.BaseClient._make_api_call = counted
    local_backend.LocalBackend.start_instance = refuse
    yield {"root": root, "bucket": outputs["bucket"], "admin": moto_server}
    botocore.client.BaseClient._make_api_call = original_call
    local_backend.LocalBackend.start_instance = original_start
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    moto_server.reset()


def _tiny_dataset(folder):
    """One item of 400 hourly points: data a launch accepts (the synthetic set takes far longer to make)."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True)
    times = pd.date_range("2026-01-01", periods=400, freq="h", tz="UTC")
    frame = pd.DataFrame({"item_id": "a", "timestamp": times, "target": np.sin(np.arange(400) / 4.0)})
    frame.to_parquet(folder / "part-000.parquet", index=False)
    return folder


def invoke(*args: str) -> int:
    """``invoke ARGS`` in this process: its exit code (a traceback propagates)."""
    import tasks

    try:
        Program(namespace=tasks.ns, name="invoke", binary="invoke").run(["invoke", *args], exit=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


BAD_TEXT = st.one_of(st.text(max_size=20), st.sampled_from(fuzzkit.ODD_TEXT[:9]))
RUN_IDS = st.one_of(st.sampled_from(("latest", "20261125-140502", "20261399-999999", "x", "")), BAD_TEXT)
ENVS = st.one_of(st.sampled_from(("dev", "Prod_1", "staging", "d", "", "dev" * 8)), BAD_TEXT)
NUMBERS = st.one_of(
    st.sampled_from(("0", "-1", "1e9", "nan", "inf", "2.5", "", "99999999999999999999")), BAD_TEXT
)
DURATIONS = st.one_of(
    st.sampled_from(("0m", "1m", "4m", "90m", "12h", "1h30m", "5", "m", "-5m", "30d")), BAD_TEXT
)
# what breaks a launch before anything is created: each of these alone must be refused
LAUNCH_BREAKERS = st.sampled_from(
    (
        ("--market", st.one_of(st.sampled_from(("spot-only", "", "ON-DEMAND")), BAD_TEXT)),
        ("--instance-type", st.one_of(st.sampled_from(("p3.2xlarge", "g5", "", "g5.xlarge ")), BAD_TEXT)),
        ("--max-runtime", st.sampled_from(("0m", "1m", "4m", "5", "m", "-5m", "30d", "", "1h-5m"))),
        ("--env", st.sampled_from(("Prod_1", "staging", "d", "", "dev" * 8, "dev/x"))),
        ("--resume", st.sampled_from(("20261399-999999", "x", "latest", "20261125-140502"))),
        ("--spec", st.sampled_from(("missing.toml", "/", "/dev/null/x.toml"))),
        ("--bogus-flag", st.just("")),
    )
)


def _flag(name: str, value: str) -> list[str]:
    return [name] if name == "--bogus-flag" else [f"{name}={value}"]


@st.composite
def launch_args(draw) -> list[str]:
    args = ["launch", "--local"]
    name, values = draw(LAUNCH_BREAKERS)
    args += _flag(name, draw(values))
    if name != "--env":
        args.append("--env=dev")
    if draw(st.booleans()):
        args.append("--dry-run")
    if draw(st.booleans()):
        args.append("--skip-doctor")
    return args


@st.composite
def other_args(draw) -> list[str]:
    task = draw(st.sampled_from(("runs", "cost", "monitor", "kill", "verify", "logs", "fetch", "data.check")))
    args = [task, "--local", f"--env={draw(ENVS)}"]
    if task == "runs":
        args.append(f"--limit={draw(NUMBERS)}")
    elif task == "cost":
        args.append(f"--since={draw(DURATIONS)}")
    elif task == "monitor":
        args.append(f"--interval={draw(NUMBERS)}")
    elif task == "kill":
        args.append(f"--grace={draw(NUMBERS)}")
    elif task == "verify":
        args.append("--fix")  # never --yes: without it nothing may be removed
    elif task in ("logs", "fetch"):
        args.append(draw(RUN_IDS))
        if task == "logs":
            args.append(f"--tail={draw(NUMBERS)}")
    else:
        args.append(f"--spec={draw(st.sampled_from(('missing.toml', '/')))}")
    return args


def _objects(provisioned) -> int:
    s3 = provisioned["admin"].client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=provisioned["bucket"])
    return sum(len(p.get("Contents", [])) for p in pages)


@pytest.mark.row(ROW)
@settings(max_examples=fuzzkit.scaled(10, fuzz=200))
@given(args=st.one_of(launch_args(), other_args()))
@example(args=["runs", "--local", "--env=dev", "--limit=1e9"])  # invoke's int() was a traceback
@example(args=["monitor", "--local", "--env=dev", "--interval=soon"])
@example(args=["monitor", "--local", "--env=dev", "--interval=1e9"])  # no run: exit 6 said nothing on stderr
@example(
    args=["launch", "--local", "--env=dev", "--market=", "--skip-doctor"]
)  # "" meant "not given": it launched
@example(args=["launch", "--local", "--env=dev", "--resume=", "--skip-doctor"])
def test_no_arguments_make_a_traceback_or_an_instance(args, provisioned, capsys):
    fuzzkit.example()
    before = _objects(provisioned) if args[0] == "launch" else None
    CALLS.clear()
    code = invoke(*args)
    out = capsys.readouterr()
    launched = {op: n for op, n in CALLS.items() if op in LAUNCHING}
    assert not launched, (args, launched)
    assert "Traceback" not in out.err, (args, out.err)
    if args[0] == "launch":
        created = {op: n for op, n in CALLS.items() if op in CREATING}
        assert not created and _objects(provisioned) == before, (args, created)
        assert code != 0 or "--dry-run" in args, (args, out)
    if code not in (0, 1):  # 1: a check that found something (verify's orphans, monitor's failed run)
        lines = [line for line in out.err.splitlines() if line.strip()]
        assert lines, (args, code, out)
        fuzzkit.one_line(lines[-1])
