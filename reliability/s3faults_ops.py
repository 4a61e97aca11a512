"""What an S3 fault proxy request is: the REST operation, bucket, key and caller.

Only path-style requests are read (clients of a 127.0.0.1 endpoint always use them). The
operation names are the S3 API's (``GetObject``, ``UploadPart`` ...), read from the method,
the sub-resources in the query and the ``x-amz-copy-source`` header, as the S3 API reference
lists them; other services (STS, EC2, IAM: query or JSON protocols) are named by ``Action``
or ``X-Amz-Target``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/[0-9]{8}/[^/]+/([a-z0-9-]+)/aws4_request")

# bucket sub-resources: query parameter -> the name's tail (GetBucketPolicy, PutBucketTagging ...)
_BUCKET_SUB = {
    "location": "BucketLocation",
    "policy": "BucketPolicy",
    "lifecycle": "BucketLifecycleConfiguration",
    "tagging": "BucketTagging",
    "versioning": "BucketVersioning",
    "acl": "BucketAcl",
    "encryption": "BucketEncryption",
    "publicAccessBlock": "PublicAccessBlock",
}
_BUCKET_LISTS = (
    ("list-type", "ListObjectsV2"),
    ("uploads", "ListMultipartUploads"),
    ("versions", "ListObjectVersions"),
)
_BUCKET_PLAIN = {"GET": "ListObjects", "PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}
_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}
# object requests: (method, query parameter or "copy" or None) -> operation, first match wins
_OBJECT = (
    ("GET", "uploadId", "ListParts"),
    ("GET", "tagging", "GetObjectTagging"),
    ("GET", None, "GetObject"),
    ("HEAD", None, "HeadObject"),
    ("PUT", "uploadId+copy", "UploadPartCopy"),
    ("PUT", "uploadId", "UploadPart"),
    ("PUT", "tagging", "PutObjectTagging"),
    ("PUT", "copy", "CopyObject"),
    ("PUT", None, "PutObject"),
    ("POST", "uploads", "CreateMultipartUpload"),
    ("POST", "uploadId", "CompleteMultipartUpload"),
    ("DELETE", "uploadId", "AbortMultipartUpload"),
    ("DELETE", "tagging", "DeleteObjectTagging"),
    ("DELETE", None, "DeleteObject"),
)


@dataclass(frozen=True)
class Request:
    """One request as the proxy read it."""

    method: str
    service: str  # from the SigV4 credential scope ("s3", "ec2", "sts" ...); "s3" when unsigned
    operation: str  # S3: the REST operation; others: Action / X-Amz-Target
    bucket: str
    key: str  # the object key; a listing's prefix
    caller: str  # the access key id ("" when unsigned)
    body: bytes = field(default=b"", repr=False, compare=False)  # kept only while it is matched


def s3_operation(method: str, path: str, query: dict[str, str], headers: Any) -> tuple[str, str, str]:
    """``(operation, bucket, key)`` of a path-style S3 REST request (a listing's key: its prefix)."""
    bucket, _, key = unquote(path.lstrip("/")).partition("/")
    present = set(query)
    if "x-amz-copy-source" in {str(h).lower() for h in headers}:
        present.add("copy")
    if not bucket:
        return "ListBuckets", "", ""
    if key:
        for verb, needs, op in _OBJECT:
            if verb == method and (needs is None or set(needs.split("+")) <= present):
                return op, bucket, key
        return method, bucket, key
    if method == "GET":
        for param, op in _BUCKET_LISTS:
            if param in present:
                return op, bucket, query.get("prefix", "")
    if method == "POST" and "delete" in present:
        return "DeleteObjects", bucket, ""
    named = next((tail for param, tail in _BUCKET_SUB.items() if param in present), None)
    if named:
        return f"{_VERBS.get(method, method.title())}{named}", bucket, ""
    prefix = query.get("prefix", "") if method == "GET" else ""
    return _BUCKET_PLAIN.get(method, f"{method.title()}Bucket"), bucket, prefix


def parse_request(method: str, target: str, headers: Any, body: bytes) -> Request:
    """Read ``method target`` with its headers and body as a :class:`Request`."""
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    auth = headers.get("Authorization", "") or ""
    presigned = "Credential=" + unquote(query.get("X-Amz-Credential", ""))
    found = _CREDENTIAL.search(auth) or _CREDENTIAL.search(presigned)
    caller, service = (found.group(1), found.group(2)) if found else ("", "")
    if service in ("s3", ""):
        op, bucket, key = s3_operation(method, parts.path, query, headers.keys())
        return Request(method, "s3", op, bucket, key, caller, body)
    target_op = (headers.get("X-Amz-Target") or "").rpartition(".")[2]
    form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True)) if not target_op else {}
    return Request(
        method, service, target_op or query.get("Action") or form.get("Action", ""), "", "", caller
    )


def error_body(code: str, message: str, *, resource: str, request_id: str) -> bytes:
    """S3's REST error document (``<Error><Code>...``, as the S3 API reference's "Error responses")."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
