"""invoke tasks: argument parsing and printing only; the work lives in ``control/``."""

from __future__ import annotations

from invoke import Collection, task


@task(help={})
def demo(c):
    """Local demo: start AWS on 127.0.0.1 (moto) and provision the training bucket."""
    from localaws import moto

    aws = moto.start()
    try:
        s3 = aws.client("s3")
        bucket = "chronos-training-dev-123456789012-us-east-1"
        s3.create_bucket(Bucket=bucket)
        print(f"local AWS at {aws.endpoint_url}; bucket s3://{bucket} provisioned")
    finally:
        aws.stop()


ns = Collection(demo)
