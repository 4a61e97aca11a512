"""The training child's supervisor: a stop before the child is ready waits until it can checkpoint."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from common.exitcodes import ExitCode
from trainer.supervisor import TrainingChild

FAKE_TRAINER = textwrap.dedent("""\
    import json, signal, sys, time
    cfg = json.load(open(sys.argv[-1]))
    out = open(cfg["progress_path"], "a")
    def emit(**event):
        out.write(json.dumps(event) + "\\n"); out.flush()
    time.sleep(0.5)  # imports: no handler yet
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    emit(event="start", total=100, start_step=0)
    for step in range(1, 100):
        emit(event="step", step=step, total=100, loss=1.0, ts=time.time())
        if stop:
            emit(event="checkpoint", step=step, path="/x/checkpoint-%d" % step)
            sys.exit(STOPPED)
        time.sleep(0.02)
    sys.exit(0)
""").replace("STOPPED", str(int(ExitCode.STOPPED)))


def test_a_stop_before_the_child_is_ready_is_deferred_until_it_can_checkpoint(tmp_path: Path):
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\n" + FAKE_TRAINER)
    script.chmod(0o755)
    events: list[dict[str, Any]] = []
    progress = tmp_path / "progress.jsonl"
    child = TrainingChild(
        config={"progress_path": str(progress)},
        config_path=tmp_path / "cfg.json",
        progress_path=progress,
        on_event=events.append,
        python=str(script),
        poll_s=0.05,
    )
    threading.Timer(0.1, child.request_stop).start()  # while the child still "imports"
    code = child.run()
    assert code == ExitCode.STOPPED, events
    assert events[0]["event"] == "start" and events[-1]["event"] == "checkpoint"
    assert json.loads((tmp_path / "cfg.json").read_text()) == {"progress_path": str(progress)}
    # STOPPED after a checkpoint event: the SIGTERM waited for the start event (else: killed, -15)


def test_validation_events_reach_the_heartbeat_progress() -> None:
    from jsonschema import Draft202012Validator

    from schemas import schema_for
    from trainer.supervisor import ProgressEvents
    from trainer.watcher import Progress

    progress, curve = Progress(), []
    events = ProgressEvents(progress, curve, lambda *_: None)
    events({"event": "start", "start_step": 0, "total": 40})
    events({"event": "validation", "step": 0, "wql": 0.3, "loss": 2.0, "best_step": 0, "best_wql": 0.3})
    events({"event": "step", "step": 10, "total": 40, "loss": 1.5, "ts": 1.0})
    events({"event": "validation", "step": 10, "wql": 0.35, "loss": 2.1, "best_step": 0, "best_wql": 0.3})
    state = progress.as_state()
    assert (state["val_wql"], state["best_val_wql"], state["best_step"], state["zero_shot_val_wql"]) == (
        0.35, 0.3, 0, 0.3,
    )  # fmt: skip
    events({"event": "validation", "step": 20, "wql": 0.2, "loss": 1.9, "best_step": 20, "best_wql": 0.2})
    state = progress.as_state()
    assert (state["best_val_wql"], state["best_step"], state["zero_shot_val_wql"]) == (0.2, 20, 0.3)
    assert state["val_loss"] == 1.9
    assert curve == [[10, 1.5]]  # validations are not losses
    # a resumed child has no step 0: its events carry the checkpoint's zero-shot WQL
    resumed = Progress()
    ProgressEvents(resumed, [], lambda *_: None)(
        {"event": "validation", "step": 30, "wql": 0.25, "loss": 1.8, "best_step": 20, "best_wql": 0.2,
         "zero_shot_wql": 0.3}
    )  # fmt: skip
    assert resumed.as_state()["zero_shot_val_wql"] == 0.3
    Draft202012Validator(schema_for("system-state")["properties"]["progress"]).validate(state)
    assert Progress().as_state()["val_wql"] is None


def test_the_child_config_names_the_validation_window_and_the_result_block_reaches_details(
    tmp_path: Path,
) -> None:
    from common import runspec
    from trainer.training import child_config, validation_of

    spec = runspec.from_dict({}).resolved(local=True)
    window = tmp_path / "validation.npz"
    config = child_config(
        spec, workdir=tmp_path, device="cpu", base_model="tiny", inputs=tmp_path / "i.npz", validation=window,
        base_revision="abc",
    )  # fmt: skip
    assert config["validation"] == str(window) and config["base_revision"] == "abc"
    assert (
        child_config(spec, workdir=tmp_path, device="cpu", base_model="tiny", inputs=tmp_path)["validation"]
        is None
    )
    empty = validation_of({})
    assert empty["history"] == [] and empty["best_step"] is None and empty["early_stopped"] is False
    block = {
        "zero_shot_wql": 0.3, "zero_shot_loss": 2.0, "best_wql": 0.2, "best_step": 20,
        "history": [[0, 0.3, 2.0], [20, 0.2, 1.9]], "early_stopped": True, "stopped_at_step": 30,
    }  # fmt: skip
    assert validation_of({"validation": block, "losses": []}) == block
