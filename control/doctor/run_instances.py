"""The doctor's ``RunInstances`` dry runs: the launch's own requests, and why AWS denies one."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from common import layout
from common.aws import error_code, is_access_denied
from common.errors import UserError
from common.runspec import RunSpec
from common.timeutil import Clock
from control.backend import Backend
from control.doctor.checks import Check, DoctorClients, aws_error_text, fail, ok, split_fix, warn
from infra.outputs import StackOutputs

_ENCODED = re.compile(r"Encoded authorization failure message:\s*(\S+)")


def decode_denial(sts: Any, message: str) -> tuple[str, bool]:
    """What an ``UnauthorizedOperation`` message says is missing: (text, decoded?)."""
    match = _ENCODED.search(message or "")
    if not match:
        return message or "no details given", False
    encoded = match.group(1)
    how = (
        f"decode it with `aws sts decode-authorization-message --encoded-message {encoded} "
        "--query DecodedMessage --output text`"
    )
    try:
        decoded = json.loads(sts.decode_authorization_message(EncodedMessage=encoded)["DecodedMessage"])
    except botocore.exceptions.ClientError as exc:
        why = (
            "not permitted (sts:DecodeAuthorizationMessage)" if is_access_denied(exc) else aws_error_text(exc)
        )
        return f"encoded reason could not be decoded: {why}; {how}", False
    except (botocore.exceptions.BotoCoreError, ValueError, KeyError, TypeError) as exc:
        return f"encoded reason could not be decoded ({exc}); {how}", False
    return summarize_decoded(decoded), True


def summarize_decoded(doc: Mapping[str, Any]) -> str:
    """One line from a decoded authorization message. Pure."""
    ctx = doc.get("context") or {}
    why = "an explicit Deny" if doc.get("explicitDeny") else "no statement allows it"
    conds = []
    for item in (ctx.get("conditions") or {}).get("items", [])[:6]:
        values = [v.get("value") for v in (item.get("values") or {}).get("items", [])]
        conds.append(f"{item.get('key')}={','.join(str(v) for v in values)}")
    extra = f" (context: {'; '.join(conds)})" if conds else ""
    return f"{ctx.get('action', '?')} on {ctx.get('resource', '?')} denied: {why}{extra}"


def check_dry_run(
    ec2: Any, sts: Any, request: Mapping[str, Any], *, label: str, outputs: StackOutputs
) -> Check:
    """``RunInstances(DryRun=True)`` with the launch's own request."""
    name = f"run-instances {label}"
    try:
        resp = ec2.run_instances(**request, DryRun=True)
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "DryRunOperation":
            return ok(name, "allowed (DryRunOperation)")
        if is_access_denied(exc):
            text, _ = decode_denial(sts, exc.response.get("Error", {}).get("Message", ""))
            return fail(
                name,
                f"denied ({code}): {text}",
                f"attach the stack's operator policy {outputs.operator_policy_arn} to these "
                "credentials, or add the statement the detail names",
            )
        return fail(
            name,
            f"refused: {aws_error_text(exc)}",
            "fix what the message names (instance type, subnet, launch template), then retry",
        )
    ids = [i["InstanceId"] for i in resp.get("Instances", [])]
    if ids:  # an endpoint that ignored DryRun created an instance: remove it at once
        ec2.terminate_instances(InstanceIds=ids)
    return warn(name, f"the endpoint ignored DryRun (terminated {ids or 'nothing'})")


def probe_plan(backend: Backend, spec: RunSpec, outputs: StackOutputs, *, clock: Clock) -> Any:
    """The plan a launch would make now, for its ``RunInstances`` requests.

    It goes through :func:`control.launch_plan.plan_launch` itself (with the launch template
    facts :func:`control.launch_world.read_template` reads), with the reads that only change
    the uploads neutralised (no lock, code already uploaded, data present); the
    requests differ from the launch's only in the run id and the code bundle hash.

    Raises:
        UserError: the plan is refused (unknown AZs, rules AWS applies, no template).
    """
    from control.launch_plan import plan_launch
    from control.launch_world import World, read_template

    now = clock()
    world = World(
        env=outputs.env,
        run_id=layout.new_run_id(now),
        now=now,
        local=backend.local,
        device=backend.device,
        outputs=outputs,
        active=None,
        code_bundle=b"",
        code_sha256=hashlib.sha256(b"").hexdigest(),
        code_exists=True,
        data_files=1,
        data_bytes=0,
        prices={},
        python_env="packed",
        template=read_template(backend, outputs),
    )
    return plan_launch(spec, world)


def check_run_instances(
    backend: Backend, clients: DoctorClients, spec: RunSpec, outputs: StackOutputs, plan: Any, *, clock: Clock
) -> list[Check]:
    """One dry run per instance type (its first placement), in the spec's market."""
    if plan is None:
        try:
            plan = probe_plan(backend, spec, outputs, clock=clock)
        except UserError as exc:
            problem, fix = split_fix(str(exc))
            return [fail("run-instances", problem, fix)]
    firsts: dict[str, Any] = {}
    for placement in plan.placements:
        firsts.setdefault(placement.instance_type, placement)
    return [
        check_dry_run(
            clients.ec2,
            clients.sts_once,
            plan.run_instances_request(p),
            label=f"{t} {p.market.value} {p.availability_zone}",
            outputs=outputs,
        )
        for t, p in firsts.items()
    ]
