def test_local_aws_is_on_loopback_and_usable(local_aws):
    assert local_aws.endpoint_url.startswith("http://127.0.0.1:")
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="bucket-one")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["bucket-one"]
    env = local_aws.env()
    assert env["AWS_ENDPOINT_URL"] == local_aws.endpoint_url


def test_reset_forgets_everything(local_aws):
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="bucket-two")
    local_aws.reset()
    assert s3.list_buckets()["Buckets"] == []
