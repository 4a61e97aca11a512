"""The run's end in the state file and to the user: one notification when a topic is named."""

from __future__ import annotations

import json
from typing import Any

from common.state_doc import Snapshot
from common.status import CompletionStatus
from trainer.context import Deps, RunContext, RunOptions
from trainer.lifecycle import notify


def _context(local_aws: Any, bucket: str) -> RunContext:
    ctx = RunContext(
        RunOptions(bucket=bucket, env="dev", run_id="20261125-140502", endpoint_url=local_aws.endpoint_url),
        Deps(),
    )
    ctx.record.metrics.update(model_wql=0.029, baseline_wql=0.069, final_loss=None)
    ctx.progress.update(step=600)
    ctx.attempt.number = 2
    return ctx


def _queue_on_topic(local_aws: Any) -> tuple[str, Any, str]:
    sns, sqs = local_aws.client("sns"), local_aws.client("sqs")
    topic = sns.create_topic(Name="chronos-dev-notify")["TopicArn"]
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, sqs, url


def test_the_end_of_a_run_publishes_one_message_with_outcome_metrics_and_command(local_aws: Any, bucket: str):
    topic, sqs, url = _queue_on_topic(local_aws)
    ctx = _context(local_aws, bucket)
    notify(ctx, CompletionStatus.NORMAL, "completed", Snapshot({"notify_topic_arn": topic}, "e"))
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    body = json.loads(message["Body"])
    assert body["Subject"] == "chronos dev: run 20261125-140502 succeeded"
    text = body["Message"]
    assert "Attempt: 2" in text and "Step: 600" in text and "model_wql 0.029" in text
    assert "invoke report 20261125-140502 --env=dev" in text
    assert body["MessageAttributes"]["kind"]["Value"] == "succeeded"


def test_no_topic_or_a_run_left_for_recovery_publishes_nothing(local_aws: Any, bucket: str):
    topic, sqs, url = _queue_on_topic(local_aws)
    ctx = _context(local_aws, bucket)
    notify(ctx, CompletionStatus.NORMAL, "completed", Snapshot({"notify_topic_arn": None}, "e"))
    notify(ctx, CompletionStatus.INTERRUPTED, "spot", Snapshot({"notify_topic_arn": topic}, "e"))
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages")


def test_a_max_cost_stop_is_published_as_budget_not_as_a_kill(local_aws: Any, bucket: str):
    topic, sqs, url = _queue_on_topic(local_aws)
    ctx = _context(local_aws, bucket)
    reason = "budget: projected cost $2.10 passes max_cost $2.00 ($1.20 spent so far)"
    notify(ctx, CompletionStatus.KILLED, reason, Snapshot({"notify_topic_arn": topic}, "e"))
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    body = json.loads(message["Body"])
    assert body["MessageAttributes"]["kind"]["Value"] == "budget" and "max_cost" in body["Message"]
