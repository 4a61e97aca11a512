"""The pre-launch data check: the parquet data in S3 against the run spec, footers and a small sample."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.runspec import from_dict
from common.state_store import StateStore
from control import data_check, data_check_schema
from control.data_check import DataCheckError, check_data, require_data
from control.launch import launch

PREFIX = "cached-datasets/x/"


def spec(**data):
    """A run spec with a short horizon: a series needs (3 + 1) x 4 + 4 + 4 = 24 steps."""
    return from_dict({"data": {"prefix": PREFIX, **data}, "model": {"prediction_length": 4}})


def frame(items=3, length=60, freq="h", start="2024-01-01", **extra) -> pd.DataFrame:
    parts = []
    for n in range(items):
        ts = pd.date_range(start, periods=length, freq=freq)
        parts.append(
            pd.DataFrame({"item_id": f"s{n}", "timestamp": ts, "target": np.arange(length, dtype=float)})
        )
    df = pd.concat(parts, ignore_index=True)
    for name, value in extra.items():
        df[name] = value
    return df


def put(s3, bucket, name, df_or_bytes, **write):
    if isinstance(df_or_bytes, bytes):
        body = df_or_bytes
    else:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df_or_bytes, preserve_index=False), buf, **write)
        body = buf.getvalue()
    s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=body)
    return len(body)


def test_a_good_dataset_passes(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame(promo=1.0))
    put(s3, bucket, "part-1.parquet", frame(start="2024-01-04", promo=0.0))
    r = check_data(s3, bucket, spec(known_covariates=["promo"]))
    assert r.ok, r.errors
    assert r.warnings == ()
    assert (r.files, r.files_checked, r.rows) == (2, 2, 360)
    assert r.inferred_frequency == "h" and r.sampled_items == 3 and r.long_enough == 3
    doc = r.to_dict()
    assert doc["location"] == f"s3://{bucket}/{PREFIX}" and doc["frequency"] == "auto" and doc["ok"]
    assert json.loads(json.dumps(doc)) == doc
    assert check_data(s3, bucket, spec(frequency="h")).ok


def test_a_missing_column_names_the_key_and_the_column(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame())
    put(s3, bucket, "part-1.parquet", frame().rename(columns={"target": "sales"}))
    r = check_data(s3, bucket, spec())
    assert r.errors == (
        f"s3://{bucket}/{PREFIX}part-1.parquet: column 'target' is missing "
        "(has: item_id, timestamp, sales; set data.target_column in the run spec)",
    )
    with pytest.raises(DataCheckError) as caught:
        require_data(s3, bucket, spec())
    assert caught.value.exit_code == 2 and "part-1.parquet: column 'target' is missing" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_same_problem_in_many_files_is_listed_once(s3, bucket):
    for n in range(3):
        put(s3, bucket, f"part-{n}.parquet", frame())
    r = check_data(s3, bucket, spec(past_covariates=["temperature"]))
    assert len(r.errors) == 1
    assert r.errors[0].startswith(
        f"s3://{bucket}/{PREFIX}part-0.parquet (and 2 other files): column 'temperature'"
    )
    assert "set data.past_covariates" in r.errors[0]


def test_a_wrong_frequency_is_reported(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame(freq="D"))
    r = check_data(s3, bucket, spec(frequency="h"))
    assert len(r.errors) == 1, r.errors
    err = r.errors[0]
    assert err.startswith(f"s3://{bucket}/{PREFIX}part-0.parquet: column 'timestamp': ")
    assert "look like frequency 'D', not data.frequency 'h'" in err and 'data.frequency = "D"' in err
    assert r.inferred_frequency == "D"
    # hourly data under a daily spec: off the grid
    put(s3, bucket, "part-0.parquet", frame(freq="h", length=200))
    err = check_data(s3, bucket, spec(frequency="D")).errors[0]
    assert "look like frequency 'h', not data.frequency 'D'" in err and "off the 'D' grid" in err


def test_a_non_numeric_target(s3, bucket):
    df = frame()
    df["target"] = df["target"].astype(str)
    put(s3, bucket, "part-0.parquet", df)
    r = check_data(s3, bucket, spec())
    assert r.errors == (
        f"s3://{bucket}/{PREFIX}part-0.parquet: column 'target' has type string, expected numbers "
        "(set data.target_column in the run spec)",
    )


def test_wrong_column_types_and_a_bad_frequency_alias(s3, bucket):
    df = frame(items=2)
    df["timestamp"] = np.arange(len(df))
    df["item_id"] = np.repeat([7, 8], 60)  # integer ids are fine
    df["tags"] = [[1, 2]] * len(df)
    put(s3, bucket, "part-0.parquet", df)
    errors = check_data(s3, bucket, spec(past_covariates=["tags"])).errors
    assert errors == (
        f"s3://{bucket}/{PREFIX}part-0.parquet: column 'timestamp' has type int64, expected timestamps "
        "(a timestamp, date or ISO 8601 string column) (set data.timestamp_column in the run spec)",
        f"s3://{bucket}/{PREFIX}part-0.parquet: column 'tags' has type list<element: int64>, expected "
        "numbers, booleans or strings (set data.past_covariates in the run spec)",
    )
    put(s3, bucket, "part-0.parquet", frame())
    (err,) = check_data(s3, bucket, spec(frequency="hourly")).errors
    assert err.startswith("data.frequency 'hourly' is not a pandas frequency alias")


def test_what_must_agree_across_files(s3, bucket):
    """One timezone in every file, a covariate numeric everywhere or nowhere; ids and timestamps not null."""
    put(s3, bucket, "part-0.parquet", frame(promo=1.0))
    aware = frame(start="2024-01-04", promo="yes")
    aware["timestamp"] = aware["timestamp"].dt.tz_localize("UTC")
    put(s3, bucket, "part-1.parquet", aware)
    errors = check_data(s3, bucket, spec(known_covariates=["promo"])).errors
    assert errors == (
        f"s3://{bucket}/{PREFIX}part-1.parquet: column 'timestamp' has timezone UTC, "
        f"s3://{bucket}/{PREFIX}part-0.parquet has none; store every file's timestamps in one timezone",
        f"s3://{bucket}/{PREFIX}part-1.parquet: column 'promo' holds strings, "
        f"s3://{bucket}/{PREFIX}part-0.parquet numbers; give the column one type in every file",
    )
    df = frame()
    df.loc[3, "item_id"] = None
    s3.delete_object(Bucket=bucket, Key=PREFIX + "part-1.parquet")
    put(s3, bucket, "part-0.parquet", df)
    (err,) = check_data(s3, bucket, spec()).errors
    assert err.startswith(f"s3://{bucket}/{PREFIX}part-0.parquet: column 'item_id' has 1 null value(s)")


def test_an_empty_prefix(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cached-datasets/other/part-0.parquet", Body=b"x")
    r = check_data(s3, bucket, spec())
    assert r.files == 0 and len(r.errors) == 1
    assert r.errors[0].startswith(f"no .parquet object under s3://{bucket}/{PREFIX}; upload your data")
    assert "set data.prefix in the run spec" in r.errors[0]


def test_a_non_parquet_object(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame())
    put(s3, bucket, "part-1.parquet", b"item_id,timestamp,target\na,2024-01-01,1\n")
    put(s3, bucket, "README.txt", b"notes")
    r = check_data(s3, bucket, spec())
    assert len(r.errors) == 1
    assert r.errors[0].startswith(
        f"s3://{bucket}/{PREFIX}part-1.parquet: not a parquet file: no parquet footer"
    )
    assert r.warnings == (
        f"1 object under s3://{bucket}/{PREFIX} not ending in .parquet (e.g. {PREFIX}README.txt) is ignored",
    )


@pytest.mark.parametrize("column", ["item_id", "timestamp"])
def test_a_string_page_that_is_not_utf8_is_unreadable_parquet_naming_the_file(s3, bucket, column):
    """Arrow checks a string page's UTF-8 only when asked: a flipped byte in one is the file's problem.

    Found by the parquet fuzz test: the byte surfaced later as a UnicodeDecodeError (item ids) or an
    ArrowException from pandas (timestamps), a traceback with no file named.
    """
    df = frame(items=2, length=30)
    df["timestamp"] = df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    buf = io.BytesIO()
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, buf, compression="none", use_dictionary=False, write_statistics=False)
    body = buf.getvalue()
    value = df[column].iloc[31].encode()
    at = body.index(value)  # the first copy is the data page's: the footer comes after the pages
    put(s3, bucket, "part-0.parquet", body[:at] + b"\x96" + body[at + 1 :])
    r = check_data(s3, bucket, spec())
    assert len(r.errors) == 1, r.errors
    assert r.errors[0].startswith(f"s3://{bucket}/{PREFIX}part-0.parquet: not readable parquet ("), r.errors
    assert "UTF-8" in r.errors[0] or "utf8" in r.errors[0].lower(), r.errors


def test_what_the_trainer_tolerates_is_not_an_error(s3, bucket):
    """Gaps, unsorted rows and short series are the trainer's to drop or fix: warnings at most."""
    df = frame(items=4, length=60)
    df = df.drop(index=[5, 6, 7]).sample(frac=1.0, random_state=0)  # a gap, rows shuffled
    short = frame(items=1, length=10).assign(item_id="short")
    put(s3, bucket, "part-0.parquet", pd.concat([df, short]))
    r = check_data(s3, bucket, spec(frequency="h"))
    assert r.ok, r.errors
    assert r.sampled_items == 5 and r.long_enough == 4


def test_too_little_data_for_one_series(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame(items=2, length=10))
    r = check_data(s3, bucket, spec())
    assert len(r.errors) == 1 and "cannot hold one series of the 24 steps a run needs" in r.errors[0]
    # enough rows in all, but every series too short: the sample is the whole data, so it is sure
    put(s3, bucket, "part-0.parquet", frame(items=5, length=10))
    r = check_data(s3, bucket, spec())
    assert len(r.errors) == 1
    assert r.errors[0].startswith(f"s3://{bucket}/{PREFIX}: 0 of the 5 items have the 24 steps a run needs")
    assert "data.min_items is 1 (the longest has 10)" in r.errors[0]


def test_mostly_short_series_in_a_partial_sample_only_warn(s3, bucket):
    put(s3, bucket, "part-0.parquet", frame(items=20, length=10), row_group_size=100)
    r = check_data(s3, bucket, spec())
    assert r.ok, r.errors
    assert any("sampled items are shorter than the 24 steps" in w for w in r.warnings), r.warnings


def test_duplicate_timestamps_and_unparseable_strings(s3, bucket):
    df = frame(items=2)
    put(s3, bucket, "part-0.parquet", pd.concat([df, df.iloc[[3]]]))
    (err,) = check_data(s3, bucket, spec()).errors
    assert (
        "part-0.parquet: column 'timestamp': item 's0' has the timestamp 2024-01-01T03:00:00 (UTC) twice"
        in err
    )
    df["timestamp"] = df["timestamp"].astype(str)
    df.loc[7, "timestamp"] = "yesterday"
    put(s3, bucket, "part-0.parquet", df)
    (err,) = check_data(s3, bucket, spec()).errors
    assert "part-0.parquet: column 'timestamp' holds a value that is not a timestamp ('yesterday')" in err


@pytest.mark.parametrize("kind", [pa.date32(), pa.timestamp("s")])
def test_a_date_beyond_the_nanosecond_range_is_an_error_not_a_traceback(s3, bucket, kind):
    """Found by make fuzz: a flipped byte in a date32 page made the year 47781, which fits arrow's
    and pandas' second unit but overflowed the nanoseconds the trainer counts in."""
    df = frame(items=2, length=30, freq="D")
    table = pa.Table.from_pandas(df, preserve_index=False)
    stamps = table.column("timestamp").cast(pa.timestamp("s")).cast(kind).to_pylist()
    stamps[5] = stamps[5].replace(year=9999)
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(stamps, kind))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    put(s3, bucket, "part-0.parquet", buf.getvalue())
    (err,) = check_data(s3, bucket, spec()).errors
    assert (
        f"s3://{bucket}/{PREFIX}part-0.parquet: column 'timestamp' holds a value that is not a timestamp"
        in err
    )
    assert "out of the nanosecond range 1677-2262" in err and "9999" in err, err


def test_daily_data_in_a_dst_time_zone_is_daily(s3, bucket):
    df = frame(items=2, length=60, freq="D", start="2024-03-01")
    df["timestamp"] = df["timestamp"].dt.tz_localize("Europe/Berlin")
    put(s3, bucket, "part-0.parquet", df)
    r = check_data(s3, bucket, spec(frequency="D"))
    assert r.ok and r.warnings == (), (r.errors, r.warnings)
    assert r.inferred_frequency == "D"


def test_daily_data_stamped_at_utc_midnight_with_a_time_zone_is_daily(s3, bucket):
    df = frame(items=2, length=60, freq="D", start="2024-03-01")
    df["timestamp"] = df["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    put(s3, bucket, "part-0.parquet", df)
    r = check_data(s3, bucket, spec(frequency="D"))
    assert r.ok and r.warnings == (), (r.errors, r.warnings)


def test_one_item_off_the_grid_is_an_error(s3, bucket):
    """The trainer fills gaps but refuses a timestamp off the grid: even one item would fail the run."""
    df = frame(items=4)
    df.loc[70, "timestamp"] += pd.Timedelta(minutes=30)  # item s1
    put(s3, bucket, "part-0.parquet", df)
    (err,) = check_data(s3, bucket, spec(frequency="h")).errors
    assert err.startswith(
        f"s3://{bucket}/{PREFIX}part-0.parquet: column 'timestamp': item 's1': 1 of 4 sampled items have "
        "timestamps off the 'h' grid"
    )


def test_the_footer_read_uses_range_requests(s3, bucket, monkeypatch):
    rows = 400_000
    df = pd.DataFrame(
        {
            "item_id": np.repeat([f"s{n}" for n in range(40)], rows // 40),
            "timestamp": np.tile(pd.date_range("2020-01-01", periods=rows // 40, freq="h"), 40),
            "target": np.random.default_rng(0).normal(size=rows),
        }
    )
    size = put(s3, bucket, "big.parquet", df, row_group_size=20_000)
    got: list[tuple[str, int]] = []

    def count(http_response, parsed, model, **kw):
        if model.name == "GetObject":
            got.append((kw["context"].get("range", ""), int(parsed["ContentLength"])))

    def remember_range(params, context, **kw):
        context["range"] = params.get("Range", "")

    s3.meta.events.register("before-parameter-build.s3.GetObject", remember_range)
    s3.meta.events.register("after-call.s3.GetObject", count)
    r = check_data(s3, bucket, spec(frequency="h"))
    assert r.ok, r.errors
    assert got and all(rng.startswith("bytes=") for rng, _ in got)
    read = sum(n for _, n in got)
    assert read == r.bytes_read and read < size / 10, (read, size)
    assert r.rows == rows and r.sampled_rows == 20_000 and r.sampled_files == (PREFIX + "big.parquet",)
    monkeypatch.setattr(data_check, "SAMPLE_ROWS", 5_000)  # the sample's rows are capped too
    r = check_data(s3, bucket, spec(frequency="h"))
    assert r.ok and r.sampled_rows == 5_000 and r.sampled_items == 0  # the one item seen may be cut
    # the sample's budget is respected: nothing beyond the footer when it is spent
    got.clear()
    monkeypatch.setattr(data_check, "SAMPLE_BYTES", 1)
    r = check_data(s3, bucket, spec(frequency="h"))
    assert r.sampled_files == () and len(got) == 1 and got[0][1] == data_check_schema.FOOTER_READ_BYTES
    assert r.ok and "no sample read" in r.warnings[0]


def test_a_launch_with_bad_data_stops_before_anything_is_created(
    backend, dev, local_aws, inventory, tmp_path, monkeypatch
):
    s3 = local_aws.client("s3")
    df = frame(items=2, freq="D", length=60)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    s3.put_object(Bucket=dev["bucket"], Key="cached-datasets/daily/part-0.parquet", Body=buf.getvalue())
    run_toml = tmp_path / "run.toml"
    run_toml.write_text(
        '[data]\nprefix = "cached-datasets/daily/"\nfrequency = "h"\n[model]\nprediction_length = 4\n'
    )
    before = inventory()
    with pytest.raises(DataCheckError) as caught:
        launch(backend, env="dev", spec_path=run_toml, skip_doctor=True)
    assert caught.value.exit_code == 2
    assert "cached-datasets/daily/part-0.parquet: column 'timestamp'" in str(caught.value)
    after = inventory()
    assert after == before  # no instance, no lock (state file), no upload
    assert not any(key.endswith("system-state.json") for key in after["objects"])
    assert after["instances"] == {}
    # the user who knows better skips it
    monkeypatch.setattr(backend, "start_instance", lambda **kw: None)
    outcome = launch(backend, env="dev", spec_path=run_toml, skip_doctor=True, skip_data_check=True)
    assert outcome.result is not None and len(inventory()["instances"]) == 1
    StateStore(backend.clients().s3, dev["bucket"], "dev").release(outcome.result.run_id)


def test_invoke_data_check(dev, cli, error_line, local_aws, tmp_path, inventory):
    ok = cli("data.check", "--env=dev", "--local")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "data ok" in ok.stdout and "cached-datasets/training-data/" in ok.stdout
    as_json = cli("data.check", "--env=dev", "--local", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["inferred_frequency"] == "h"
    run_toml = tmp_path / "run.toml"
    run_toml.write_text('[data]\ntarget_column = "sales"\n')
    bad = cli("data.check", "--env=dev", "--local", f"--spec={run_toml}")
    assert bad.returncode == 2
    line = error_line(bad)
    assert line.startswith("error: the training data does not fit the run spec: 1 error listed above")
    assert (
        "training-data/2024/01/part-000.parquet (and 3 other files): column 'sales' is missing" in bad.stdout
    )
    before = inventory()  # and the launch refuses the same data: nothing created
    refused = cli("launch", "--env=dev", "--local", f"--spec={run_toml}", "--skip-doctor")
    assert refused.returncode == 2 and inventory() == before
    line = error_line(refused)
    assert "nothing was launched" in line and "part-000.parquet (and 3 other files): column 'sales'" in line
    help_text = cli("--help", "data.check").stdout
    for flag in ("--env", "--spec", "--json", "--local"):
        assert flag in help_text
