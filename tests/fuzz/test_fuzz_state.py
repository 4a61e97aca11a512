"""The state file ``{env}/system-state.json``, damaged and mutated, against every reader of it.

Properties:

- any bytes: :meth:`StateStore.parse` returns a valid document or raises
  :class:`CorruptStateError`, one line naming the state file and (for JSON) the path;
- any document the schema accepts (timestamps and run ids drawn from the schema's own
  patterns, numbers at their bounds): ``invoke monitor``'s poll, the run history's live
  row, the cost ledger and the recovery handler's decision all read it without a traceback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import fuzzkit
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import CorruptStateError, UserError
from common.ledger import attempts_of, ledger
from common.state_store import StateStore
from control.backend import Clients
from control.monitor import Monitor
from control.runs import read_run
from recovery.decide import RecoveryPolicy, decide
from recovery.events import schedule_tick
from schemas import SchemaValidationError, examples, schema_for, validate

ROW_BYTES = "state-file-bytes"
ROW_DOC = "state-file-readers"
VALID = examples("system-state")
DEFS = schema_for("defs")["$defs"]
NOW = datetime(2026, 11, 25, 15, 0, 0, tzinfo=UTC)
BUCKET = "chronos-training-dev-123456789012-us-east-1"
LOCATION = f"s3://{BUCKET}/dev/system-state.json"

timestamps = st.one_of(
    st.from_regex(DEFS["timestamp"]["pattern"], fullmatch=True),
    st.sampled_from(
        ("0000-00-00T00:00:00Z", "2026-02-30T24:60:60Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z")
    ),
)
run_ids = st.one_of(
    st.from_regex(DEFS["run_id"]["pattern"], fullmatch=True),
    st.sampled_from(("00000000-000000", "20261399-999999")),
)
numbers = st.one_of(
    st.integers(0, 2**70), st.floats(min_value=0, allow_nan=False), st.sampled_from((0, 1e308))
)


def _attempt(draw):
    return {
        "attempt": draw(st.integers(1, 2**40)),
        "instance_id": "i-0abc1234def567890",
        "instance_type": draw(st.sampled_from(("g5.xlarge", "x", "\u00e9"))),
        "market": draw(st.sampled_from(("spot", "on-demand"))),
        "availability_zone": "us-east-1a",
        "price_per_hour": draw(st.one_of(st.none(), numbers)),
        "price_source": "recorded",
        "launched_at": draw(timestamps),
        "ended_at": draw(st.one_of(st.none(), timestamps)),
        "end": draw(st.sampled_from((None, "interrupted", "completed", "vanished"))),
        "notice_at": draw(st.one_of(st.none(), timestamps)),
    }


def _maybe(draw, doc, key, strategy):
    if draw(st.booleans()):
        doc[key] = draw(strategy)


@st.composite
def odd_valid_states(draw):
    """A state document the schema accepts, its values drawn from the edges of what it allows."""
    doc = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for key in ("heartbeat_at", "started_at", "updated_at"):
        _maybe(draw, doc, key, timestamps)
    for entry in doc["history"]:
        _maybe(draw, entry, "at", timestamps)
    _maybe(draw, doc, "run_id", run_ids)
    for key in ("step", "total_steps"):
        _maybe(draw, doc["progress"], key, st.integers(0, 2**70))
    for key in ("loss", "eta_s"):
        _maybe(draw, doc["progress"], key, st.one_of(st.none(), numbers))
    _maybe(draw, doc, "price_per_hour", st.one_of(st.none(), numbers))
    _maybe(
        draw, doc, "instance_id", st.one_of(st.none(), st.text(max_size=20), st.just("i-0123456789abcdef0"))
    )
    if draw(st.booleans()):
        doc["attempts"] = [_attempt(draw)]
    _maybe(
        draw, doc, "status", st.sampled_from(("recovering", "interrupted", "failed", "cleanup", "training"))
    )
    if doc["status"] == "recovering" and draw(st.booleans()):
        doc["recovery"] = {"claimed_at": draw(timestamps), "trigger": "schedule", "event_id": "e1"}
    return doc


@pytest.fixture
def aws(local_aws):
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return Clients(s3=s3, ec2=local_aws.client("ec2"), sts=None)


@pytest.mark.row(ROW_BYTES)
@settings(max_examples=fuzzkit.scaled(200, fuzz=3000))  # ~4 ms an example
@given(body=st.one_of(st.sampled_from(VALID).flatmap(fuzzkit.damaged_bytes), st.binary(max_size=100)))
def test_any_bytes_are_a_valid_state_or_one_line_naming_the_state_file(body):
    fuzzkit.example()
    store = StateStore(None, BUCKET, "dev")
    try:
        doc = store.parse(body)
    except CorruptStateError as exc:
        line = fuzzkit.one_line(str(exc))
        assert LOCATION in line and "invoke verify --env=dev --fix --yes" in line, line
        assert "not JSON" in line or fuzzkit.names_a_path(line), line
        return
    validate("system-state", doc)


@pytest.mark.row(ROW_BYTES)
@settings(max_examples=fuzzkit.scaled(200, fuzz=3000))  # ~4 ms an example
@given(doc=st.sampled_from(VALID).flatmap(lambda v: fuzzkit.mutated(v)))
def test_a_mutated_state_document_is_valid_or_refused_with_its_json_path(doc):
    fuzzkit.example()
    store = StateStore(None, BUCKET, "dev")
    try:
        parsed = store.parse(json.dumps(doc, allow_nan=True).encode())
    except CorruptStateError as exc:
        line = fuzzkit.one_line(str(exc))
        assert LOCATION in line and fuzzkit.names_a_path(line), line
        return
    # the same document back; compared as JSON, since a NaN (a diverged loss) is never == itself
    assert json.dumps(parsed, sort_keys=True) == json.dumps(doc, sort_keys=True)


@pytest.mark.row(ROW_DOC)
@settings(max_examples=fuzzkit.scaled(15, fuzz=200))
@given(doc=odd_valid_states())
def test_every_reader_takes_any_state_the_schema_accepts(doc, aws):
    fuzzkit.example()
    try:
        validate("system-state", doc)
    except SchemaValidationError:
        return  # not one of the documents this property is about
    aws.s3.put_object(Bucket=BUCKET, Key="dev/system-state.json", Body=json.dumps(doc).encode())
    try:
        view = Monitor(aws, BUCKET, "dev", clock=lambda: NOW).poll()
    except UserError as exc:  # a state the monitor cannot use: one line that says so
        fuzzkit.one_line(str(exc))
    else:
        assert view.run_id == doc["run_id"] and view.status == doc["status"]
    summary = read_run(aws.s3, BUCKET, "dev", doc["run_id"], state=doc, clock=lambda: NOW)
    assert summary.active and summary.status == doc["status"]
    attempts = attempts_of(doc)
    if attempts:
        ledger(attempts, volume_gb=100.0, now=NOW).to_dict()
    decision = decide(
        doc, instance=None, event=schedule_tick(event_id="e2", at="2026-11-25T15:00:00Z", env="dev"),
        now=NOW, policy=RecoveryPolicy(),
    )  # fmt: skip
    assert decision.verdict is not None
