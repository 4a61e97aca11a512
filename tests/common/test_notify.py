"""Notifications: one message per event on the env's SNS topic, with the run's facts."""

from __future__ import annotations

import json

import pytest

from common import notify
from common.notify import NotifyEvent, NotifyKind


@pytest.fixture
def topic(local_aws):
    """An SNS topic with an SQS queue subscribed (raw delivery off: the SNS envelope arrives)."""
    sns, sqs = local_aws.client("sns"), local_aws.client("sqs")
    arn = sns.create_topic(Name="chronos-training-dev-notify")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return sns, sqs, arn, queue_url


def _received(sqs, queue_url) -> list[dict]:
    out: list[dict] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not batch.get("Messages"):
            return out
        for m in batch["Messages"]:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def _event(kind: NotifyKind, **extra) -> NotifyEvent:
    base = {
        "run_id": "20261125-140502-ab12",
        "env": "dev",
        "cost_usd": 1.234,
        "metrics": {"wql": 0.0291, "mase": 0.77},
    }
    return NotifyEvent(kind=kind, **{**base, **extra})


@pytest.mark.parametrize("kind", list(NotifyKind))
def test_each_event_publishes_exactly_one_message_with_the_run_facts(topic, kind):
    sns, sqs, arn, queue_url = topic
    event = _event(kind, reason="interrupted 1 time" if kind is NotifyKind.RECOVERED else None, attempt=2)

    message_id = notify.publish(sns, arn, event)

    received = _received(sqs, queue_url)
    assert len(received) == 1
    got = received[0]
    assert got["MessageId"] == message_id
    assert "20261125-140502-ab12" in got["Subject"] and len(got["Subject"]) < 100
    body = got["Message"]
    assert "Run 20261125-140502-ab12 (env dev)" in body
    assert f"Outcome: {kind.value}" in body
    assert "mase 0.77, wql 0.0291" in body
    assert "Cost so far: $1.23" in body
    assert "Attempt: 2" in body
    assert "Look closer: invoke " in body and "--env=dev" in body
    assert got["MessageAttributes"]["run_id"]["Value"] == "20261125-140502-ab12"
    assert got["MessageAttributes"]["kind"]["Value"] == kind.value


def test_the_look_closer_command_fits_the_outcome():
    assert _event(NotifyKind.SUCCEEDED).command == "invoke report 20261125-140502-ab12 --env=dev"
    assert _event(NotifyKind.FAILED).command == "invoke logs 20261125-140502-ab12 --env=dev"
    assert _event(NotifyKind.RECOVERED).command == "invoke monitor --env=dev --follow"


def test_the_message_reads_without_metrics_or_cost():
    subject, body = notify.message(
        NotifyEvent(kind="failed", run_id="r1", env="prod", reason="heartbeat_lost")
    )
    assert subject == "chronos prod: run r1 failed"
    assert "Outcome: failed - heartbeat_lost" in body
    assert "Metrics: none" in body and "Cost so far: unknown" in body
    assert "Attempt" not in body


def test_the_subject_is_one_ascii_line_under_100_characters():
    subject, _ = notify.message(_event(NotifyKind.BUDGET, run_id="r-\u00e9\n" + "x" * 200))
    assert len(subject) < 100
    assert subject.isascii() and "\n" not in subject


def test_an_unknown_kind_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown notification kind 'done'; use one of: succeeded"):
        NotifyEvent(kind="done", run_id="r1", env="dev")


def test_no_topic_means_no_message(topic):
    sns, sqs, _arn, queue_url = topic
    assert notify.publish(sns, None, _event(NotifyKind.SUCCEEDED)) is None
    assert _received(sqs, queue_url) == []


def test_a_refused_publish_is_a_warning_not_a_failure(local_aws, caplog):
    sns = local_aws.client("sns")
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    assert notify.try_publish(sns, missing, _event(NotifyKind.KILLED)) is False
    assert "notification killed for run 20261125-140502-ab12 not sent" in caplog.text
