#!/bin/bash
# User data of a Chronos training instance, rendered by trainer/bootstrap.py
# (render_user_data): every placeholder below is replaced by a shell-quoted value.
# Boot -> dead-man switch -> code bundle + Python env from S3 -> python -m trainer run.
# On failure: the log goes to S3 ({env}/logs/{run_id}/bootstrap.log) and the
# instance powers off (the launch template makes that a terminate).
# Local mode runs this same script: CHRONOS_ROOT stands for / (unset on AWS) and
# AWS_EC2_METADATA_SERVICE_ENDPOINT names a fake IMDSv2.
set -Eeuo pipefail
umask 022

BUCKET=@@BUCKET@@
ENV_NAME=@@ENV@@
RUN_ID=@@RUN_ID@@
REGION=@@REGION@@
MAX_RUNTIME_MINUTES=@@MAX_RUNTIME_MINUTES@@
CODE_KEY=@@CODE_KEY@@
PYTHON_ENV_KEY=@@PYTHON_ENV_KEY@@
WHEELHOUSE_PREFIX=@@WHEELHOUSE_PREFIX@@
DEVICE=@@DEVICE@@
LOCAL_MODE=@@LOCAL_MODE@@
BOOTSTRAP_LOG_KEY=@@BOOTSTRAP_LOG_KEY@@
@@EXTRA_ENV@@

# Dead-man switch first: whatever happens next, the machine is off after max runtime.
shutdown -P "+${MAX_RUNTIME_MINUTES}" "chronos: max runtime of ${MAX_RUNTIME_MINUTES} min reached"

ROOT="${CHRONOS_ROOT:-}"
LOG="${ROOT}/var/log/chronos-bootstrap.log"
APP="${ROOT}/opt/chronos"
AMI_ENV="${ROOT}/opt/pytorch"
IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
IMDS="${IMDS%/}"
export AWS_DEFAULT_REGION="$REGION" AWS_REGION="$REGION" HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
mkdir -p "${ROOT}/var/log"
# Everything below goes to the log file and to the console (cloud-init forwards stdout).
exec 3>&1 4>&2
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

say() { printf '%s bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

# One clear line for whatever failed: `fail` for the steps we check, the ERR trap for the rest.
FAILED=""
fail() {
  FAILED="$*"
  say "FAILED: $*"
  exit 1
}
on_err() {
  local rc=$?
  if [ -z "$FAILED" ]; then
    FAILED="\`${BASH_COMMAND}\` exited with ${rc}"
    say "FAILED: ${FAILED}"
  fi
}
trap on_err ERR

on_exit() {
  local rc=$?
  trap - EXIT ERR
  set +e
  if [ "$rc" -ne 0 ]; then
    say "exit code $rc: uploading this log to s3://${BUCKET}/${BOOTSTRAP_LOG_KEY}, then powering off"
    exec 1>&3 2>&4  # let tee write every line before the upload
    for _ in $(seq 50); do kill -0 "$TEE_PID" 2>/dev/null || break; sleep 0.1; done
    s3_put "$LOG" "$BOOTSTRAP_LOG_KEY" || say "log upload failed"
    shutdown -h now || poweroff || say "poweroff failed"
  fi
}
trap on_exit EXIT

# S3 through the AWS CLI when the AMI has one (cloud-init's PATH may lack it), else boto3.
AMI_PY="${AMI_ENV}/bin/python3"
if [ ! -x "$AMI_PY" ]; then
  AMI_PY="$(command -v python3 || true)"
fi
AWS_CLI=""
for candidate in "$(command -v aws || true)" "${ROOT}/usr/local/bin/aws" "${ROOT}/usr/bin/aws" \
  "${ROOT}/snap/bin/aws"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    AWS_CLI="$candidate"
    break
  fi
done
# get BUCKET KEY FILE | put BUCKET FILE KEY | sync BUCKET PREFIX DIR (the files under a prefix)
BOTO_S3='
import os, sys
import boto3
op, bucket, a, b = sys.argv[1:5]
s3 = boto3.client("s3")
try:
    if op == "get":
        s3.download_file(bucket, a, b)
    elif op == "put":
        s3.upload_file(a, bucket, b)
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=a):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(a):].lstrip("/")
                if rel and not rel.endswith("/"):
                    dest = os.path.join(b, rel)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    s3.download_file(bucket, obj["Key"], dest)
except Exception as exc:
    sys.exit(f"s3 {op} {a}: {exc}")
'
s3_get() {
  if [ -n "$AWS_CLI" ]; then
    "$AWS_CLI" s3 cp "s3://${BUCKET}/$1" "$2" --only-show-errors
  else
    "$AMI_PY" -c "$BOTO_S3" get "$BUCKET" "$1" "$2"
  fi
}
s3_put() {
  if [ -n "$AWS_CLI" ]; then
    "$AWS_CLI" s3 cp "$1" "s3://${BUCKET}/$2" --only-show-errors
  else
    "$AMI_PY" -c "$BOTO_S3" put "$BUCKET" "$1" "$2"
  fi
}
s3_sync() {
  mkdir -p "$2"
  if [ -n "$AWS_CLI" ]; then
    "$AWS_CLI" s3 cp --recursive "s3://${BUCKET}/$1" "$2" --only-show-errors
  else
    "$AMI_PY" -c "$BOTO_S3" sync "$BUCKET" "$1" "$2"
  fi
}

say "run ${RUN_ID} (env ${ENV_NAME}) in ${REGION}; max runtime ${MAX_RUNTIME_MINUTES} min"
if [ -n "$AWS_CLI" ]; then
  say "S3 through ${AWS_CLI}"
else
  say "no aws CLI found: S3 through boto3 of ${AMI_PY:-python3}"
fi

# IMDSv2 only: a session token, then every request carries it.
TOKEN="$(curl -fsS --retry 5 --retry-connrefused -X PUT "${IMDS}/latest/api/token" \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600')" \
  || fail "no IMDSv2 token from ${IMDS}: the launch template must allow IMDSv2 (http-tokens required)"
INSTANCE_ID="$(curl -fsS --retry 5 -H "X-aws-ec2-metadata-token: ${TOKEN}" \
  "${IMDS}/latest/meta-data/instance-id")" || fail "IMDS did not answer instance-id"
say "instance ${INSTANCE_ID}"

mkdir -p "${APP}/code" "${APP}/work"
say "code bundle s3://${BUCKET}/${CODE_KEY}"
s3_get "${CODE_KEY}" "${APP}/code.tar.gz" \
  || fail "cannot download the code bundle s3://${BUCKET}/${CODE_KEY}: launch again (invoke launch uploads it)"
tar -xzf "${APP}/code.tar.gz" -C "${APP}/code" || fail "the code bundle ${CODE_KEY} is not a valid tar.gz"

PY=""
if [ -n "${PYTHON_ENV_KEY}" ] && s3_get "${PYTHON_ENV_KEY}" "${APP}/env.tar.gz"; then
  say "packed Python env s3://${BUCKET}/${PYTHON_ENV_KEY}"
  mkdir -p "${APP}/env"
  tar -xzf "${APP}/env.tar.gz" -C "${APP}/env" || fail "the packed env ${PYTHON_ENV_KEY} is not a valid tar.gz"
  if [ -x "${APP}/env/bin/conda-unpack" ]; then
    "${APP}/env/bin/conda-unpack"
  fi
  PY="${APP}/env/bin/python"
else
  [ -n "$AMI_PY" ] || fail "no Python on this AMI (${AMI_ENV} nor python3): use a Deep Learning AMI"
  PY="$AMI_PY"
  s3_sync "${WHEELHOUSE_PREFIX}" "${APP}/wheelhouse" \
    || fail "cannot download the wheelhouse s3://${BUCKET}/${WHEELHOUSE_PREFIX}"
  shopt -s nullglob
  wheels=("${APP}"/wheelhouse/*.whl)
  shopt -u nullglob
  if [ "${#wheels[@]}" -eq 0 ]; then
    say "no packed env and no wheels under s3://${BUCKET}/${WHEELHOUSE_PREFIX}: the AMI's Python as it is (${PY})"
  else
    # Into the AMI env itself (the instance is disposable): a venv made from /opt/pytorch with
    # --system-site-packages would see the base interpreter's packages, not torch.
    say "installing ${#wheels[@]} wheels into the AMI's Python ${PY}"
    "$PY" -m pip install --no-index --find-links "${APP}/wheelhouse" --no-input --disable-pip-version-check \
      --root-user-action=ignore "${wheels[@]}" \
      || fail "pip cannot install the wheelhouse into ${PY}: rebuild the wheelhouse (README 'On AWS': pip download ..., then invoke wheelhouse --env=${ENV_NAME} --dir=DIR)"
  fi
fi

cd "${APP}/code"
export PYTHONPATH="${APP}/code"
# Found, not imported (importing torch + chronos costs ~10 s at boot; preflight imports torch next).
FIND='import importlib.metadata as m,importlib.util as u,trainer
for n in ("torch","chronos"):
  if not u.find_spec(n):raise ModuleNotFoundError(f"No module named {n!r}")
print(m.version("torch"),trainer.__file__)'
if ! found="$("$PY" -c "$FIND" 2>&1)"; then
  fail "${PY} cannot import torch, chronos (${found##*$'\n'}): rebuild the wheelhouse (invoke wheelhouse --env=${ENV_NAME} --dir=DIR, README 'On AWS') or use the PyTorch Deep Learning AMI"
fi
say "python ${PY}: torch ${found%% *}, trainer from ${found##* }"

TRAINER_ARGS=()
if [ -n "${LOCAL_MODE}" ]; then
  TRAINER_ARGS+=(--local)
fi
say "starting the trainer"
rc=0
"${PY}" -m trainer run --bucket "${BUCKET}" --env "${ENV_NAME}" --run-id "${RUN_ID}" \
  --region "${REGION}" --device "${DEVICE}" --imds-endpoint "${IMDS}" --workdir "${APP}/work" \
  ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"} || rc=$?
if [ "$rc" -ne 0 ]; then
  FAILED="trainer exit ${rc}"
  say "the trainer exited with ${rc} (see s3://${BUCKET}/${ENV_NAME}/logs/${RUN_ID}/training.json)"
  exit "$rc"
fi
say "trainer finished; powering off"
shutdown -h now
