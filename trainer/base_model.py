"""Which base model a run starts from, pinned: :func:`resolve_base` -> :class:`BaseRef`.

Torch-free (``huggingface_hub`` is imported only to resolve a Hub id), so the run's
driver resolves the base once, before training, and every later phase loads exactly
that. A base is named by one string (the run spec's ``model.base``):

- ``"tiny"`` or ``"tiny-<d_model>"``: the small random-init Chronos-2 of unit tests
  (no weights; the seed fixes them). Revision ``None``.
- ``"tiny-pretrained"``: the small pretrained Chronos-2 shipped in
  ``trainer/assets/tiny-pretrained`` (:data:`BUNDLED_TINY_DIR`, trained by
  ``python -m trainer.pretrain_tiny``). Revision: sha256 of its ``model.safetensors``.
- a local folder holding a saved Chronos-2 (``config.json`` + ``model.safetensors``).
  Revision: sha256 of the weights file. A folder inside a Hugging Face cache
  (``models--org--name/snapshots/<sha>``) is that Hub snapshot: kind ``hub``, revision ``<sha>``.
- otherwise a Hugging Face id ``"org/name"`` or ``"org/name@<revision>"``: downloaded
  (or, with ``HF_HUB_OFFLINE=1``, found in the cache) with
  ``huggingface_hub.snapshot_download``; the location is the snapshot folder and the
  revision the commit sha it resolved to.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY_PREFIX = "tiny"
DEFAULT_TINY_D_MODEL = 32
TINY_PRETRAINED = "tiny-pretrained"
BUNDLED_TINY_DIR: Path = Path(__file__).resolve().parent / "assets" / TINY_PRETRAINED
WEIGHTS_NAME = "model.safetensors"
KINDS = ("tiny", "bundled", "local", "hub")
HUB_FILES = ["*.json", "*.safetensors"]  # what a Chronos-2 repo needs (config, weights)
_SHA = re.compile(r"[0-9a-f]{40}")
_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})/?$")


class ModelLoadError(Exception):
    """The base model could not be resolved, built or loaded; the message (one line) says which and why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True, kw_only=True)
class BaseRef:
    """A resolved base model.

    Attributes:
        base: the base string as given (``"tiny"``, ``"tiny-pretrained"``, a path, ``"org/name[@rev]"``).
        kind: ``"tiny"``, ``"bundled"``, ``"local"`` or ``"hub"``.
        location: what ``from_pretrained`` takes: a folder (bundled, local, the hub
            snapshot), or the tiny config name (``"tiny-32"``).
        revision: hub: the commit sha; bundled/local: sha256 of the weights file; tiny: ``None``.
    """

    base: str
    kind: str
    location: str
    revision: str | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"BaseRef.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def model_id(self) -> str:
        """The name to show and record: the Hub id without ``@rev``, else the base as given."""
        if self.kind == "hub":
            match = _SNAPSHOT.search(Path(self.location).as_posix())
            if match:
                return f"{match['org']}/{match['name']}"
            return self.base.partition("@")[0]
        return self.base

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return {"base": self.base, "kind": self.kind, "location": self.location, "revision": self.revision}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaseRef:
        """The :class:`BaseRef` of a :meth:`to_dict` dict.

        Raises:
            ValueError: a field is missing or the kind is unknown.
        """
        missing = [k for k in ("base", "kind", "location") if not data.get(k)]
        if missing:
            raise ValueError(f"base model record lacks {', '.join(missing)}: {dict(data)}")
        revision = data.get("revision")
        return cls(
            base=str(data["base"]), kind=str(data["kind"]), location=str(data["location"]),
            revision=str(revision) if revision else None,
        )  # fmt: skip


def parse_tiny(base: str) -> int | None:
    """Return the d_model of a ``tiny``/``tiny-<d_model>`` base string, else ``None``."""
    if base == TINY_PREFIX:
        return DEFAULT_TINY_D_MODEL
    match = re.fullmatch(rf"{TINY_PREFIX}-(\d+)", base)
    return int(match.group(1)) if match else None


def resolve_base(base: str) -> BaseRef:
    """Pin ``base`` to a folder and a revision (see the module doc).

    Raises:
        ModelLoadError: an empty name, a missing folder or weights file, or a Hub id that
            cannot be found (offline: not in the cache); the message names the base.
    """
    base = str(base).strip()
    if not base:
        raise ModelLoadError(
            "the base model is empty: set model.base to tiny-pretrained, a folder or a Hugging Face id"
        )
    tiny = parse_tiny(base)
    if tiny is not None:
        return BaseRef(base=base, kind="tiny", location=f"{TINY_PREFIX}-{tiny}", revision=None)
    if base == TINY_PRETRAINED:
        return _bundled(base)
    if _looks_like_path(base):
        return _local(base)
    return _hub(base)


def weights_sha256(folder: Path) -> str:
    """sha256 (hex) of ``folder/model.safetensors``.

    Raises:
        ModelLoadError: the weights file is missing.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise ModelLoadError(f"base model folder {folder} has no {WEIGHTS_NAME}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no downloads (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def hub_cache_dir() -> Path | None:
    """The Hugging Face cache as the environment sets it now (``HF_HUB_CACHE``, ``HF_HOME``/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def _looks_like_path(base: str) -> bool:
    return base.startswith(("/", ".", "~")) or Path(base).expanduser().exists()


def _bundled(base: str) -> BaseRef:
    if not (BUNDLED_TINY_DIR / "config.json").is_file() or not (BUNDLED_TINY_DIR / WEIGHTS_NAME).is_file():
        raise ModelLoadError(
            f"the bundled {TINY_PRETRAINED} model is missing from {BUNDLED_TINY_DIR}: "
            f"reinstall the package or run python -m trainer.pretrain_tiny --out {BUNDLED_TINY_DIR}"
        )
    return BaseRef(
        base=base, kind="bundled", location=str(BUNDLED_TINY_DIR), revision=weights_sha256(BUNDLED_TINY_DIR)
    )


def _local(base: str) -> BaseRef:
    path = Path(base).expanduser().resolve()
    if not path.is_dir():
        raise ModelLoadError(
            f"base model folder {path} does not exist: give a saved Chronos-2 folder or a Hugging Face id"
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"base model directory {path} has no config.json: is it a saved Chronos-2 model?"
        )
    snapshot = _SNAPSHOT.search(path.as_posix())
    if snapshot:
        return BaseRef(base=base, kind="hub", location=str(path), revision=snapshot["sha"])
    return BaseRef(base=base, kind="local", location=str(path), revision=weights_sha256(path))


def _hub(base: str) -> BaseRef:
    repo_id, _, revision = base.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelLoadError(
            f"base model {base!r} is neither tiny, tiny-pretrained, an existing folder "
            "nor a Hugging Face id (org/name[@revision])"
        )
    offline = hub_offline()
    folder = _snapshot(base, repo_id, revision or None, offline=offline)
    sha = folder.name if _SHA.fullmatch(folder.name) else None
    if sha is None and not offline:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo_id, revision=revision or None).sha
    return BaseRef(base=base, kind="hub", location=str(folder), revision=sha or revision or None)


def _snapshot(base: str, repo_id: str, revision: str | None, *, offline: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    cache = hub_cache_dir()
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=offline, allow_patterns=HUB_FILES
        )
    except HFValidationError as exc:
        raise ModelLoadError(f"base model {base!r} is not a valid Hugging Face id: {exc}") from exc
    except OSError as exc:  # huggingface_hub's not in the cache / no such repo or revision / no network
        from huggingface_hub import constants

        where = cache or constants.HF_HUB_CACHE
        if offline:
            raise ModelLoadError(
                f"base model {base!r} is not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE is set: "
                "download it once with network access, or unset HF_HUB_OFFLINE"
            ) from exc
        raise ModelLoadError(
            f"cannot find base model {base!r} on the Hugging Face Hub ({type(exc).__name__}): "
            "check the id and revision; a private model needs HF_TOKEN"
        ) from exc
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"base model {base!r} has no config.json at {path}: is it a Chronos-2 model?")
    return path
