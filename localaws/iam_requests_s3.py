"""S3 calls -> the authorization requests AWS evaluates (see :mod:`localaws.iam_requests`).

Bucket operations are authorized on the bucket's ARN, object operations on the
object's; a copy needs PutObject on the target and GetObject on the source, and
multipart parts count as the object's PutObject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localaws.iam_calls import AuthRequest, Call, Caller, Facts, NotModelled, make_request

_S3_BUCKET = {
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
    "CreateBucket": "s3:CreateBucket",
    "DeleteBucket": "s3:DeleteBucket",
    "GetBucketTagging": "s3:GetBucketTagging",
    "PutBucketTagging": "s3:PutBucketTagging",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "PutBucketPolicy": "s3:PutBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketAcl": "s3:GetBucketAcl",
}
# Multipart parts are authorized as the object's PutObject
# (S3 User Guide, "Multipart upload API and permissions").
_S3_OBJECT = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging",
    "GetObjectAttributes": "s3:GetObject",
}


def _s3_object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _copy_source(value: Any) -> tuple[str, str]:
    if isinstance(value, Mapping):
        return value["Bucket"], value["Key"]
    bucket, _, key = str(value).lstrip("/").partition("/")
    return bucket, key.split("?versionId=")[0]


def requests(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    """The requests of one S3 call."""
    p, op = call.params, call.operation
    bucket = p.get("Bucket", "")
    common = {
        "s3:ResourceAccount": caller.account,
        "s3:authType": "REST-HEADER",
        "s3:signatureversion": "AWS4-HMAC-SHA256",
    }
    if op == "ListBuckets":
        return [make_request(call, caller, "s3:ListAllMyBuckets", None, "*", common)]
    if op in _S3_BUCKET:
        ctx = {
            **common,
            "s3:prefix": p.get("Prefix"),
            "s3:delimiter": p.get("Delimiter"),
            "s3:max-keys": None if p.get("MaxKeys") is None else str(p["MaxKeys"]),
        }
        return [make_request(call, caller, _S3_BUCKET[op], "bucket", f"arn:aws:s3:::{bucket}", ctx)]
    if op == "DeleteObjects":
        keys = [o["Key"] for o in p.get("Delete", {}).get("Objects", [])]
        return [
            make_request(call, caller, "s3:DeleteObject", "object", _s3_object_arn(bucket, k), common)
            for k in keys
        ]
    if op in ("CopyObject", "UploadPartCopy"):
        src_bucket, src_key = _copy_source(p.get("CopySource", ""))
        put_ctx = {
            **common,
            "s3:x-amz-copy-source": f"{src_bucket}/{src_key}",
            "s3:x-amz-metadata-directive": p.get("MetadataDirective"),
        }
        return [
            make_request(
                call, caller, "s3:PutObject", "object", _s3_object_arn(bucket, p.get("Key", "")), put_ctx
            ),
            make_request(call, caller, "s3:GetObject", "object", _s3_object_arn(src_bucket, src_key), common),
        ]
    if op in _S3_OBJECT:
        ctx = {
            **common,
            "s3:if-none-match": p.get("IfNoneMatch"),
            "s3:if-match": p.get("IfMatch"),
            "s3:x-amz-server-side-encryption": p.get("ServerSideEncryption"),
        }
        return [
            make_request(
                call, caller, _S3_OBJECT[op], "object", _s3_object_arn(bucket, p.get("Key", "")), ctx
            )
        ]
    raise NotModelled(f"s3.{op}")
