"""The contract: each schema's examples validate, bad documents fail at the right path."""

from __future__ import annotations

import copy

import pytest

import schemas
from common.status import CompletionStatus, ErrorClass, Market, Phase, RunStatus, SentinelStatus, Severity
from schemas import SchemaValidationError, validate


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_every_schema_has_examples_that_validate(kind):
    examples = schemas.examples(kind)
    assert examples, f"{kind} schema carries no examples"
    for doc in examples:
        assert validate(kind, doc) is doc


def _example(kind: str) -> dict:
    return copy.deepcopy(schemas.examples(kind)[0])


def _set(doc, path, value):
    *parents, last = path
    for p in parents:
        doc = doc[p]
    if value is _DELETE:
        del doc[last]
    else:
        doc[last] = value


_DELETE = object()

BAD = [
    ("system-state", ("status",), "running", "$.status"),
    ("system-state", ("history", 1, "at"), "yesterday", "$.history[1].at"),
    ("system-state", ("progress", "step"), -1, "$.progress.step"),
    ("system-state", ("run_id",), "2026-11-25", "$.run_id"),
    ("system-state", ("heartbeat_at",), _DELETE, "$"),
    ("system-state", ("last_error",), {"message": "x"}, "$.last_error"),
    ("training", ("phases", 0, "name"), "warmup", "$.phases[0].name"),
    ("training", ("artifacts", 0, "sha256"), "abc", "$.artifacts[0].sha256"),
    ("training", ("completion_status",), "ok", "$.completion_status"),
    ("training", ("metrics", "model_wql"), "low", "$.metrics.model_wql"),
    ("cleanup-status", ("actions", 0, "status"), "done", "$.actions[0].status"),
    ("cleanup-status", ("verification", "volumes_available"), -2, "$.verification.volumes_available"),
    ("sentinel", ("exit_code",), "0", "$.exit_code"),
    ("sentinel", ("reason",), _DELETE, "$"),
    ("sentinel", ("reason",), "", "$.reason"),
    ("sentinel", ("status",), "results_sync", "$.status"),
    ("error-record", ("error_class",), "fatal", "$.error_class"),
    ("error-record", ("retry_count",), 1.5, "$.retry_count"),
    ("model-metadata", ("dataset_manifest", "count"), -1, "$.dataset_manifest.count"),
    ("run-spec", ("model",), {"finetune_mode": "qlora"}, "$.model.finetune_mode"),
    ("run-spec", ("instance",), {"types": ["p4d.24xlarge"]}, "$.instance.types[0]"),
    ("run-spec", ("instance",), {"max_runtime": "soon"}, "$.instance.max_runtime"),
    ("run-spec", ("modle",), {}, "$"),
]


@pytest.mark.parametrize(("kind", "path", "value", "where"), BAD)
def test_bad_documents_fail_at_the_right_path(kind, path, value, where):
    doc = _example(kind)
    _set(doc, path, value)
    with pytest.raises(SchemaValidationError) as info:
        validate(kind, doc, source="s3://b/dev/x.json")
    assert info.value.path == where
    assert info.value.kind == kind
    assert str(info.value).startswith(f"invalid {kind} in s3://b/dev/x.json at {where}: ")


def test_error_message_is_one_line_and_says_what_was_expected():
    doc = _example("system-state")
    doc["market"] = "reserved"
    with pytest.raises(SchemaValidationError) as info:
        validate("system-state", doc)
    assert "\n" not in str(info.value)
    assert "'reserved' is not one of ['spot', 'on-demand']" in str(info.value)


def _enum(kind, *path):
    node = schemas.schema_for(kind)
    for p in path:
        node = node[p]
    return node["enum"]


def test_schema_enums_equal_the_python_enums():
    assert _enum("defs", "$defs", "run_status") == [s.value for s in RunStatus]
    assert _enum("defs", "$defs", "completion_status") == [s.value for s in CompletionStatus]
    assert _enum("defs", "$defs", "market") == [m.value for m in Market]
    assert _enum("error-record", "properties", "error_class") == [c.value for c in ErrorClass]
    assert _enum("error-record", "properties", "severity") == [s.value for s in Severity]
    assert _enum("sentinel", "properties", "status") == [s.value for s in SentinelStatus]
    assert _enum("training", "properties", "phases", "items", "properties", "name") == [
        p.value for p in Phase
    ]


def test_defaults_fill_an_empty_run_spec():
    full = schemas.with_defaults("run-spec", {})
    assert full["model"]["num_steps"] == 1000
    assert full["instance"]["market"] == "spot"
    assert validate("run-spec", full) is full


def test_unknown_kind_is_refused():
    with pytest.raises(KeyError, match="unknown schema kind 'nope'"):
        validate("nope", {})
