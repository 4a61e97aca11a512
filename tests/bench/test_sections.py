"""How the bench runs its sections: a quick run's long section beside the others, a full run in order."""

from __future__ import annotations

import os
import textwrap

import pytest

from bench import sections

MODULE = """
import os
from bench.core import Section

def run(settings):
    return Section(name="{name}", title="{name}", intro=str(os.getpid()))
"""


@pytest.fixture
def entries(tmp_path, monkeypatch):
    """Three importable section modules (a spawned process imports them too); the second is the long one."""
    for name in ("first", "long", "last"):
        (tmp_path / f"benchsec_{name}.py").write_text(textwrap.dedent(MODULE.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sections, "BESIDE_IN_QUICK", ("long",))
    return [sections.Entry(name=n, module=f"benchsec_{n}", title=n) for n in ("first", "long", "last")]


def test_a_quick_run_runs_the_long_section_in_a_process_of_its_own_and_the_others_here(entries):
    done = list(sections.run_entries(entries, quick=True, rounds=1))
    assert sorted(n for n, _ in done) == [0, 1, 2]
    pid = {entries[n].name: int(o.section.intro) for n, o in done}
    assert pid["first"] == pid["last"] == os.getpid() and pid["long"] != os.getpid(), pid
    assert [n for n, _ in done][-1] == 1  # its outcome is collected after the others ran
    assert not any(o.failed for _, o in done)


def test_a_full_run_runs_every_section_here_in_order(entries):
    done = list(sections.run_entries(entries, quick=False, rounds=1))
    assert [n for n, _ in done] == [0, 1, 2]
    assert {int(o.section.intro) for _, o in done} == {os.getpid()}


def test_a_section_whose_process_cannot_run_it_is_a_failed_section_not_a_crash(entries, tmp_path):
    (tmp_path / "benchsec_long.py").write_text("import os\nos._exit(3)\n")  # its process dies importing it
    done = dict(sections.run_entries(entries, quick=True, rounds=1))
    assert done[1].failed and "its process failed" in (done[1].section.skipped or ""), done[1]
    assert not done[0].failed and not done[2].failed
