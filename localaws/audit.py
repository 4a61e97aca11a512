"""Record every AWS API call a process makes, for the local IAM call audit.

:func:`install` wraps ``botocore.session.Session.create_client``, so every client
created afterwards (boto3, s3transfer, the AWS CLI v1: all build on botocore)
appends one JSON line per API call to the audit log::

    {"kind": "call", "ts": "...Z", "pid": 123, "service": "s3", "operation": "PutObject",
     "region": "us-east-1", "access_key_id": "ASIA...", "params": {...}, "error": null}

``params`` are the API parameters with bodies and secrets dropped; ``error`` is
the error code the call ended with (``null`` on success). Lines are appended
with ``O_APPEND`` in one ``write`` each, so several processes can share a file.
The supervisor of a local instance adds one ``{"kind": "credentials", ...}`` line
per assumed-role key (:func:`record_credentials`) so the audit knows whose key it is.

Clients created before :func:`install` are not recorded: install first (the
local instance's Python runs :func:`install_from_env` at start-up). Installing
does not import botocore (about half a second): a process that has not imported
it yet is patched by an import hook when it does.
"""

from __future__ import annotations

import importlib.abc
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "CHRONOS_IAM_AUDIT_LOG"
_CONTEXT_KEY = "chronos_iam_audit"
_MAX_TEXT = 4096
_DROPPED_KEYS = {"Body", "UserData", "SSECustomerKey", "CopySourceSSECustomerKey", "SSEKMSEncryptionContext"}
_SECRET_NAME = re.compile(r"secret|password|sessiontoken|privatekey", re.IGNORECASE)
_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]{4,128})/")
_QUERY_CREDENTIAL = re.compile(r"X-Amz-Credential=([A-Za-z0-9]{4,128})(?:%2F|/)")

_lock = threading.Lock()
_state: dict[str, Any] = {"path": None, "original": None}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _append(path: Path, record: Mapping[str, Any]) -> None:
    """One ``write`` of one line on an ``O_APPEND`` descriptor: safe across processes and threads."""
    line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    with _lock:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def sanitize(value: Any, name: str = "") -> Any:
    """API parameters as JSON-able data without bodies, user data or secrets.

    Args:
        value: a parameter value (dicts and lists are walked).
        name: the parameter name of ``value``.

    Returns:
        The same structure; dropped values become ``"<dropped>"``, bytes
        ``"<N bytes>"``, long strings are cut at 4096 characters.
    """
    if name in _DROPPED_KEYS or (name and _SECRET_NAME.search(name)):
        return "<dropped>"
    if isinstance(value, Mapping):
        return {str(k): sanitize(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v, name) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "...<cut>"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return "<dropped>"  # file objects, streams


def _signing_key(client: Any) -> str | None:
    """The access key of the client's credentials (before the request is signed)."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None:
        return None
    try:
        return credentials.get_frozen_credentials().access_key
    except Exception:  # noqa: BLE001 - refresh failure: the call itself will report it
        return None


def _attach(client: Any) -> None:
    """Register the recording handlers on one client's own event system."""
    events = client.meta.events
    service = client.meta.service_model.service_name

    def on_params(params: Mapping[str, Any], model: Any, context: dict, **_: Any) -> None:
        context[_CONTEXT_KEY] = {"operation": model.name, "params": sanitize(dict(params))}

    def on_request(request: Any, **_: Any) -> None:
        entry = (getattr(request, "context", None) or {}).get(_CONTEXT_KEY)
        if entry is None:
            return
        found = _CREDENTIAL.search(str(request.headers.get("Authorization", ""))) or _QUERY_CREDENTIAL.search(
            str(request.url)
        )
        if found:
            entry["access_key_id"] = found.group(1)

    def on_done(
        context: dict,
        parsed: Mapping[str, Any] | None = None,
        http_response: Any = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        entry = context.pop(_CONTEXT_KEY, None)
        path = _state["path"]
        if entry is None or path is None:
            return
        record = {
            "kind": "call",
            "ts": _now(),
            "pid": os.getpid(),
            "service": service,
            "operation": entry["operation"],
            "region": client.meta.region_name,
            "access_key_id": entry.get("access_key_id") or _signing_key(client),
            "params": entry["params"],
            "error": _call_error(parsed, http_response, exception),
        }
        try:
            _append(path, record)
        except OSError as exc:
            log.warning("IAM audit log %s not writable: %s", path, exc)

    uid = f"chronos-iam-audit-{id(client)}"
    events.register("before-parameter-build", on_params, unique_id=f"{uid}-params")
    events.register_last("request-created", on_request, unique_id=f"{uid}-request")
    events.register("after-call", on_done, unique_id=f"{uid}-done")
    events.register("after-call-error", on_done, unique_id=f"{uid}-error")


def _call_error(
    parsed: Mapping[str, Any] | None, http_response: Any, exception: BaseException | None
) -> str | None:
    """The error a recorded call ended with: the exception's class or AWS's error code."""
    if exception is not None:
        return type(exception).__name__
    if http_response is not None and http_response.status_code >= 300:
        return (parsed or {}).get("Error", {}).get("Code") or str(http_response.status_code)
    return None


def _patch(session_class: Any) -> None:
    """Wrap ``Session.create_client`` so each new client records its calls (once per class)."""
    if _state["original"] is not None:
        return
    original = session_class.create_client
    _state["original"] = (session_class, original)

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        _attach(client)
        return client

    session_class.create_client = create_client


class _Loader(importlib.abc.Loader):
    """Runs the real loader of ``botocore.session``, then patches the module."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        with _lock:
            _patch(module.Session)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches botocore when it is first imported: importing it costs ~0.5 s, so start-up never does."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "botocore.session":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


_finder = _PatchOnImport()


def install(path: str | os.PathLike[str]) -> None:
    """Record every API call of every botocore client created from now on to ``path``.

    If botocore is not imported yet, it is patched when it is (so a process that
    never uses AWS pays nothing). Installing again only changes the path: each
    call is recorded once.

    Args:
        path: the audit log (JSON lines, created if missing; relative to the current directory).
    """
    with _lock:
        _state["path"] = Path(path).absolute()
        loaded = sys.modules.get("botocore.session")
        if loaded is not None:
            _patch(loaded.Session)
        elif _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    log.debug("IAM audit recording to %s", path)


def uninstall() -> None:
    """Stop recording (clients created meanwhile keep their handlers, which then write nothing)."""
    with _lock:
        _state["path"] = None
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        if _state["original"] is not None:
            session_class, original = _state["original"]
            session_class.create_client = original
            _state["original"] = None


def installed_path() -> Path | None:
    """The log being written, or ``None`` when not recording."""
    return _state["path"]


def install_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """:func:`install` to ``$CHRONOS_IAM_AUDIT_LOG`` if set; returns whether it did."""
    path = (os.environ if environ is None else environ).get(ENV_VAR)
    if not path:
        return False
    install(path)
    return True


def record_credentials(
    *,
    access_key_id: str,
    role_arn: str,
    role_id: str,
    session_name: str,
    path: str | os.PathLike[str] | None = None,
) -> bool:
    """Append the owner of an assumed-role access key to the audit log.

    Args:
        access_key_id: the ``ASIA...`` key AssumeRole returned.
        role_arn: the role's ARN.
        role_id: the role's unique id (``AROA...``).
        session_name: the RoleSessionName (the instance id for an instance).
        path: the log; default the installed one, else ``$CHRONOS_IAM_AUDIT_LOG``.

    Returns:
        Whether a line was written (no log configured: ``False``).
    """
    target = path or _state["path"] or os.environ.get(ENV_VAR)
    if not target:
        return False
    _append(
        Path(target),
        {
            "kind": "credentials",
            "ts": _now(),
            "access_key_id": access_key_id,
            "role_arn": role_arn,
            "role_id": role_id,
            "session_name": session_name,
        },
    )
    return True


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of an audit log, in order; a torn last line is skipped with a warning."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: not a JSON line, skipped", path, number)
    return records
