"""The README's free-tier arithmetic for the recovery schedule is the spec's numbers."""

from __future__ import annotations

import re
from pathlib import Path

from infra.spec import recovery as spec_recovery

README = Path(__file__).resolve().parents[2] / "README.md"
LAMBDA_FREE_GB_SECONDS = 400_000  # "one million requests and 400,000 GB-seconds per month"
LAMBDA_FREE_REQUESTS = 1_000_000


def _section() -> str:
    text = README.read_text("utf-8")
    return text[text.index("### Automatic recovery") :].split("\n### ", 1)[0]


def test_the_schedule_fits_the_lambda_free_tier_even_at_the_timeout() -> None:
    minutes = int(re.fullmatch(r"rate\((\d+) minutes\)", spec_recovery.SCHEDULE_EXPRESSION).group(1))
    invocations = 31 * 24 * 60 // minutes
    gb_seconds = invocations * spec_recovery.MEMORY_MB / 1024 * spec_recovery.TIMEOUT_S
    assert invocations < LAMBDA_FREE_REQUESTS and gb_seconds < LAMBDA_FREE_GB_SECONDS
    section = _section()
    assert f"{invocations:,} invocations" in section
    assert f"{gb_seconds:,.0f} GB-seconds" in section
    assert f"at {spec_recovery.MEMORY_MB} MB" in section and f"{spec_recovery.TIMEOUT_S} s timeout" in section
    assert spec_recovery.SCHEDULE_EXPRESSION in section


def test_the_readme_names_the_log_retention_and_the_config_key() -> None:
    section = _section()
    assert f"kept {spec_recovery.LOG_RETENTION_DAYS} days" in section
    assert spec_recovery.log_group_name("dev").replace("-dev-", "-{env}-") in section
    assert "pulumi config set notify_email" in section
