"""The instance itself: its metadata (IMDSv2) and how it powers off.

- :class:`IMDS` speaks IMDSv2 only: a session token from ``PUT /latest/api/token``,
  then every ``GET`` carries it; a 401 (expired token) fetches a new one once.
- Poweroff strategies, in :data:`POWEROFF_STRATEGIES` keyed by name:
  ``shutdown`` (``sudo shutdown -h now``, which the launch template's
  ``InstanceInitiatedShutdownBehavior=terminate`` turns into a terminate; falls
  back to ``ec2:TerminateInstances`` on itself when the command fails) and
  ``api`` (``ec2:TerminateInstances`` only). :func:`select_poweroff` picks
  ``shutdown`` in both modes: a local instance has a ``shutdown`` of its own whose
  power-off terminates the moto instance (``control.local_instance``); only a local-mode
  trainer run outside a local instance uses ``api``; an AWS Batch job ``batch`` (no poweroff:
  Batch owns the host). Tests inject their own.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from common.status import Market

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
LOCAL_ROOT_VAR = "CHRONOS_ROOT"  # set by a local instance (control.local_instance), never on AWS
TOKEN_TTL_S = 21600


class IMDSError(RuntimeError):
    """The metadata service did not answer as IMDSv2 should."""


@dataclass(frozen=True, kw_only=True)
class InstanceIdentity:
    """What IMDS says this machine is."""

    instance_id: str
    instance_type: str
    availability_zone: str
    market: Market
    image_id: str | None = None  # the AMI (it resolves afresh at every `pulumi up`)


class IMDS:
    """A small IMDSv2 client.

    Args:
        endpoint: ``http://169.254.169.254`` on EC2, a fake server's URL in tests.
        timeout: seconds per request (IMDS answers in milliseconds).
        http: a ``requests.Session`` (injected in tests).
    """

    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 2.0, http: requests.Session | None = None
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.http = http or requests.Session()
        self._token: str | None = None

    def token(self, *, refresh: bool = False) -> str:
        """The session token (fetched once, again after a 401)."""
        if self._token is None or refresh:
            try:
                resp = self.http.put(
                    f"{self.endpoint}/latest/api/token",
                    timeout=self.timeout,
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
                )
            except requests.RequestException as exc:
                raise IMDSError(f"IMDSv2 token request to {self.endpoint} failed: {exc}") from exc
            if resp.status_code != 200:
                raise IMDSError(f"IMDSv2 token request answered HTTP {resp.status_code}")
            self._token = resp.text
        return self._token

    def get(self, path: str) -> str | None:
        """``/latest/meta-data/<path>``; ``None`` for 404.

        Raises:
            IMDSError: unreachable or an unexpected status.
        """
        url = f"{self.endpoint}/latest/meta-data/{path}"
        for attempt in range(2):
            try:
                resp = self.http.get(
                    url,
                    timeout=self.timeout,
                    headers={"X-aws-ec2-metadata-token": self.token(refresh=attempt > 0)},
                )
            except requests.RequestException as exc:
                raise IMDSError(f"IMDS GET {path} failed: {exc}") from exc
            if resp.status_code == 401 and attempt == 0:
                continue
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise IMDSError(f"IMDS GET {path} answered HTTP {resp.status_code}")
            return resp.text
        raise IMDSError(f"IMDS GET {path}: token refused twice")

    def identity(self) -> InstanceIdentity:
        """Instance id, type, AZ and market.

        Raises:
            IMDSError: a field is missing or IMDS is unreachable.
        """
        values = {k: self.get(k) for k in ("instance-id", "instance-type", "placement/availability-zone")}
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise IMDSError(f"IMDS has no {', '.join(missing)}")
        lifecycle = self.get("instance-life-cycle") or "on-demand"
        return InstanceIdentity(
            instance_id=str(values["instance-id"]),
            instance_type=str(values["instance-type"]),
            availability_zone=str(values["placement/availability-zone"]),
            market=Market.SPOT if lifecycle == "spot" else Market.ON_DEMAND,
            image_id=self.get("ami-id") or None,
        )

    def spot_action(self) -> dict[str, Any] | None:
        """The spot interruption notice (``{"action", "time"}``), ``None`` while there is none."""
        return _json_or_none(self.get("spot/instance-action"))

    def rebalance(self) -> dict[str, Any] | None:
        """The rebalance recommendation, ``None`` while there is none."""
        return _json_or_none(self.get("events/recommendations/rebalance"))


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": value}


# -- poweroff -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PoweroffResult:
    """What a poweroff attempt did."""

    succeeded: bool
    method: str
    error: str | None = None


class Poweroff(Protocol):
    """Ends this instance (or asks for it to be ended)."""

    name: str

    def __call__(self, instance_id: str | None) -> PoweroffResult: ...


Runner = Callable[..., subprocess.CompletedProcess[str]]


class ApiTerminate:
    """``ec2:TerminateInstances`` on itself (the fallback of ``shutdown``)."""

    name = "api"

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    def __call__(self, instance_id: str | None) -> PoweroffResult:
        if not instance_id:
            return PoweroffResult(
                succeeded=False, method="ec2:TerminateInstances", error="instance id unknown"
            )
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except Exception as exc:  # noqa: BLE001 - a failed poweroff is a result the caller records, never a crash
            log.error("TerminateInstances %s failed: %s", instance_id, exc)
            return PoweroffResult(succeeded=False, method="ec2:TerminateInstances", error=str(exc))
        log.info("terminated %s through the EC2 API", instance_id)
        return PoweroffResult(succeeded=True, method="ec2:TerminateInstances")


class ShutdownPoweroff:
    """``sudo -n shutdown -h now`` (terminate by launch template); API terminate if that fails."""

    name = "shutdown"
    COMMAND: Sequence[str] = ("sudo", "-n", "shutdown", "-h", "now")

    def __init__(self, ec2: Any, *, runner: Runner = subprocess.run) -> None:
        self.fallback = ApiTerminate(ec2)
        self.runner = runner

    def __call__(self, instance_id: str | None) -> PoweroffResult:
        try:
            done = self.runner(list(self.COMMAND), capture_output=True, text=True, timeout=30, check=False)
            if done.returncode == 0:
                log.info("poweroff requested: %s", " ".join(self.COMMAND))
                return PoweroffResult(succeeded=True, method=" ".join(self.COMMAND))
            problem = f"exit {done.returncode}: {done.stderr.strip()[:200]}"
        except (OSError, subprocess.SubprocessError) as exc:
            problem = str(exc)
        log.warning("%s failed (%s); terminating through the EC2 API", " ".join(self.COMMAND), problem)
        result = self.fallback(instance_id)
        return (
            result
            if result.succeeded
            else PoweroffResult(
                succeeded=False, method=result.method, error=f"shutdown: {problem}; api: {result.error}"
            )
        )


class BatchOwnsTheHost:
    """No poweroff at all: an AWS Batch job exits and Batch scales its host away."""

    name = "batch"

    def __init__(self, ec2: Any = None) -> None:
        self.ec2 = ec2  # unused: the job role may not terminate instances

    def __call__(self, instance_id: str | None) -> PoweroffResult:
        log.info("no poweroff: AWS Batch owns instance %s and scales it down", instance_id or "?")
        return PoweroffResult(succeeded=True, method="none (AWS Batch owns the host)")


POWEROFF_STRATEGIES: dict[str, Callable[..., Poweroff]] = {
    "shutdown": ShutdownPoweroff,
    "api": ApiTerminate,
    "batch": BatchOwnsTheHost,
}


def select_poweroff(
    *, local: bool, ec2: Any, environ: Mapping[str, str] | None = None, batch: bool = False
) -> Poweroff:
    """``shutdown`` on AWS and on a local instance (its ``shutdown`` shim), ``api`` otherwise;
    ``batch`` (an AWS Batch job, locally too) never powers off: Batch owns the host.

    A local-mode trainer started outside a local instance (no ``CHRONOS_ROOT``, e.g. a
    test running ``python -m trainer run --local`` directly) must never run the
    developer machine's own ``shutdown``: it terminates its moto instance through the API.
    """
    if batch:
        return POWEROFF_STRATEGIES["batch"](ec2)
    environ = os.environ if environ is None else environ
    on_local_instance = bool(environ.get(LOCAL_ROOT_VAR))
    return POWEROFF_STRATEGIES["shutdown" if not local or on_local_instance else "api"](ec2)
