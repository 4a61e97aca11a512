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


def test_actions_match_case_insensitively_as_on_aws(local_aws):
    """moto names Batch actions in lower case (batch:describejobs); a policy naming
    batch:DescribeJobs must match, as on AWS, and a user without it is still refused."""
    import json

    import pytest
    from botocore.exceptions import ClientError

    iam = local_aws.client("iam")
    admin = iam.create_user(UserName="admin")["User"]["UserName"]
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName=admin, PolicyName="all", PolicyDocument=json.dumps(everything))
    keys = {}
    for name, actions in (
        ("reader", ["batch:DescribeJobs", "batch:ListJobs"]),
        ("nobody", ["s3:ListAllMyBuckets"]),
    ):
        iam.create_user(UserName=name)
        doc = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(doc))
        keys[name] = iam.create_access_key(UserName=name)["AccessKey"]
    local_aws.enforce_iam()
    try:

        def batch(name):
            import boto3

            k = keys[name]
            session = boto3.Session(k["AccessKeyId"], k["SecretAccessKey"], region_name="us-east-1")
            return session.client("batch", endpoint_url=local_aws.endpoint_url)

        assert batch("reader").describe_jobs(jobs=["0b1c"])["jobs"] == []
        with pytest.raises(ClientError) as denied:
            batch("nobody").describe_jobs(jobs=["0b1c"])
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        local_aws.relax_iam()
