"""The other readers of what a run wrote: the stored launch request (the recovery handler's relaunch),
a checkpoint's trainer_state.json and validation_state.json (the resume picks the newest complete
one), the fetched mirror the HTML report reads, and JSON that json.loads refuses oddly.

Properties: the launch request is a request or a SchemaValidationError with its path; a
checkpoint folder is complete or has a one-line problem (a torn one is skipped, never a
crash); the report is written from whatever the mirror holds.
"""

from __future__ import annotations

import json

import fuzzkit
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.placement import LaunchRequest
from schemas import SchemaValidationError, examples

ROW_REQUEST = "launch-request-reader"
ROW_CHECKPOINT = "checkpoint-reader"
REQUEST = examples("launch-request")[0]


@pytest.mark.row(ROW_REQUEST)
@settings(max_examples=fuzzkit.scaled(150, fuzz=2500))  # ~3 ms an example
@given(doc=st.one_of(fuzzkit.mutated(REQUEST), fuzzkit.json_values))
def test_a_mutated_launch_request_is_a_request_or_refused_with_its_json_path(doc):
    fuzzkit.example()
    try:
        request = LaunchRequest.from_dict(doc, source="user-configs/launch-request.json")
    except SchemaValidationError as exc:
        line = fuzzkit.one_line(str(exc))
        assert "launch-request.json" in line and fuzzkit.names_a_path(line), line
        return
    assert request.to_dict() == doc  # what was stored is what is relaunched
    request.attempts()


TRAINER_STATE = {
    "global_step": 4,
    "max_steps": 10,
    "log_history": [{"loss": 0.5, "step": 4}],
    "best_metric": None,
}
VALIDATION_STATE = {"best_step": 4, "best_wql": 0.1, "history": [{"step": 4, "wql": 0.1}]}


def _checkpoint(root, trainer_state: bytes, validation_state: bytes | None):
    from trainer.checkpoints import STATE_FILES, TRAINER_STATE_NAME, VALIDATION_STATE_NAME, WEIGHT_FILES

    folder = root / "checkpoint-4"
    folder.mkdir(parents=True)
    for name in (*STATE_FILES, WEIGHT_FILES[0]):
        (folder / name).write_bytes(b"x")
    (folder / TRAINER_STATE_NAME).write_bytes(trainer_state)
    if validation_state is not None:
        (folder / VALIDATION_STATE_NAME).write_bytes(validation_state)
    return folder


def _body(valid):
    return st.one_of(
        st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), fuzzkit.mutated(valid)),
        fuzzkit.damaged_bytes(valid),
    )


@pytest.mark.row(ROW_CHECKPOINT)
@settings(max_examples=fuzzkit.scaled(60))
@given(
    trainer_state=_body(TRAINER_STATE),
    validation_state=st.sampled_from((None, json.dumps(VALIDATION_STATE).encode(), b"{", b"[]", b"{}")),
)
def test_a_checkpoint_with_any_state_files_is_complete_or_skipped_with_a_problem(
    trainer_state, validation_state, tmp_path_factory
):
    from trainer.checkpoints import checkpoint_problem, find_latest_complete_checkpoint

    fuzzkit.example()
    root = tmp_path_factory.mktemp("checkpoints")
    folder = _checkpoint(root, trainer_state, validation_state)
    problem = checkpoint_problem(folder)
    if problem is not None:
        fuzzkit.one_line(problem)
    assert find_latest_complete_checkpoint(root) == (folder if problem is None else None)


# -- found by these properties in modules of other rooms, now fixed: each failed before --
@pytest.mark.parametrize(
    "body", fuzzkit.JSON_BOMBS, ids=("nested-array", "nested-object", "digits", "big-int")
)
def test_json_that_json_loads_refuses_oddly_is_a_one_line_error(body):
    from common.errors import CorruptStateError
    from common.state_store import StateStore
    from control.s3io import DocumentError, parse_json

    fuzzkit.example()
    with pytest.raises(DocumentError):
        parse_json(body, "s3://b/dev/logs/20261125-140502/training.json", "training")
    with pytest.raises(CorruptStateError):
        StateStore(None, "b", "dev").parse(body)


# -- found by these properties in other rooms, now fixed: each failed before --
@pytest.mark.parametrize("best_step", (b"NaN", b"Infinity", b"[4]", b'"four"'))
def test_a_checkpoint_whose_validation_state_names_no_step_is_skipped(best_step, tmp_path):
    from trainer.checkpoints import checkpoint_problem

    fuzzkit.example()
    folder = _checkpoint(tmp_path, json.dumps(TRAINER_STATE).encode(), b'{"best_step": ' + best_step + b"}")
    fuzzkit.one_line(checkpoint_problem(folder) or "")


@pytest.mark.parametrize("body", (b"[1]", b"7"))
def test_the_report_is_written_when_a_fetched_document_is_not_an_object(body, tmp_path):
    from control.report import write_report

    fuzzkit.example()
    run_dir = tmp_path / "dev" / "20261125-140502"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "training.json").write_bytes(body)
    assert write_report(run_dir).index.is_file()
