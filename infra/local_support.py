"""Shared pieces of the local provisioner: the context and comparison helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common import tags as common_tags
from common.aws import error_code
from infra.spec import names as spec_names


@dataclass(frozen=True)
class LocalContext:
    """Environment, account, tags and clients one provisioning run works with."""

    env: str
    region: str
    account_id: str
    tags: dict[str, str]
    clients: Mapping[str, Any]

    def __getattr__(self, service: str) -> Any:
        try:
            return self.clients[service]
        except KeyError:
            raise AttributeError(service) from None

    def tag_specs(self, resource_type: str, name: str) -> list[dict[str, Any]]:
        tag_map = {**self.tags, "Name": name}
        return [{"ResourceType": resource_type, "Tags": common_tags.tag_list(tag_map)}]

    def name(self, kind: str) -> str:
        return spec_names.resource_name(self.env, kind)


def is_error(exc: ClientError, *codes: str) -> bool:
    """Whether ``exc`` carries one of the AWS error ``codes``."""
    return error_code(exc) in codes


def canonical(value: Any) -> Any:
    """Order-insensitive form for comparing AWS answers with desired settings."""
    if isinstance(value, Mapping):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def same(current: Any, desired: Any) -> bool:
    """Whether an AWS answer already equals the desired setting (list order ignored)."""
    return canonical(current) == canonical(desired)
