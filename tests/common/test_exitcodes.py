"""The README's one exit-code table is the ExitCode enum; its staleness numbers are the policy's."""

from __future__ import annotations

import re
from pathlib import Path

from common.exitcodes import ExitCode
from common.staleness import STALENESS
from common.status import CompletionStatus

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|", re.MULTILINE)


def test_the_readme_has_one_exit_code_table_and_it_is_the_enum():
    text = README.read_text("utf-8")
    assert text.count("Exit codes:") == 1
    rows = {name: int(code) for code, name in ROW.findall(text)}
    assert rows == {code.name: code.value for code in ExitCode}


def test_every_completion_has_its_own_exit_code():
    codes = [ExitCode.for_completion(c) for c in CompletionStatus]
    assert len(set(codes)) == len(codes)
    assert ExitCode.for_completion(CompletionStatus.KILLED) == 4
    assert ExitCode.for_completion(CompletionStatus.INTERRUPTED) == 3


def test_the_readme_states_the_staleness_policy():
    text = README.read_text("utf-8")
    paragraph = text[text.index("A run is stale") :].split("\n\n", 1)[0]
    said = [int(n) for n in re.findall(r"(\d+) s\b", paragraph)]
    assert said == [STALENESS.gone_grace_s, STALENESS.no_instance_s, STALENESS.heartbeat_s]
