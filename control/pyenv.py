"""The Python environment the instance boots with, kept in ``cached-datasets/python-env/``.

Either a packed env (``chronos-env.tar.gz``, e.g. from ``conda-pack`` or a
relocatable venv) or a wheelhouse of ``*.whl`` that the bootstrap installs with
``pip install --no-index`` on top of the Deep Learning AMI's PyTorch. Uploads are
skipped for files already there with the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import layout
from common.errors import ConfigError
from control.backend import Backend, check_env
from control.launch_world import PYTHON_ENV_KEY, WHEELHOUSE_PREFIX
from control.s3io import iter_objects


@dataclass(frozen=True, kw_only=True)
class PyEnvUpload:
    """What was uploaded and what was already there."""

    bucket: str
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]


def upload_python_env(
    backend: Backend, *, env: str, wheels_dir: Path | None = None, packed: Path | None = None
) -> PyEnvUpload:
    """``invoke wheelhouse``: upload a folder of wheels and/or a packed env tarball.

    Raises:
        ConfigError: nothing to upload, or a folder without wheels.
    """
    check_env(env)
    if wheels_dir is None and packed is None:
        raise ConfigError("nothing to upload: pass --dir=FOLDER_OF_WHEELS and/or --packed=ENV.tar.gz")
    files: list[tuple[Path, str]] = []
    if wheels_dir is not None:
        wheels = sorted(Path(wheels_dir).glob("*.whl"))
        if not wheels:
            raise ConfigError(f"no *.whl files in {wheels_dir}; fill it with `pip download` (see README)")
        files += [(w, WHEELHOUSE_PREFIX + w.name) for w in wheels]
    if packed is not None:
        if not Path(packed).is_file():
            raise ConfigError(f"packed env {packed} not found")
        files.append((Path(packed), PYTHON_ENV_KEY))
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    uploaded, skipped = [], []
    with backend.errors("s3:PutObject", f"s3://{outputs.bucket}/{layout.ENV_PREFIX_DIR}"):
        listed = iter_objects(s3, outputs.bucket, layout.ENV_PREFIX_DIR)
        there = {o["Key"]: int(o["Size"]) for o in listed}
        for path, key in files:
            if there.get(key) == path.stat().st_size:
                skipped.append(key)
                continue
            s3.upload_file(str(path), outputs.bucket, key)
            uploaded.append(key)
    return PyEnvUpload(bucket=outputs.bucket, uploaded=tuple(uploaded), skipped=tuple(skipped))
