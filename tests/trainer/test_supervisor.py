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
