#!/bin/bash
# User data of a Chronos training instance, rendered by trainer/bootstrap.py
# (render_user_data): every placeholder below is replaced by a shell-quoted value.
# Boot -> dead-man switch -> code bundle + Python env from S3 -> python -m trainer run.
# On failure: the log goes to S3 ({env}/logs/{run_id}/bootstrap.log) and the
# instance powers off (the launch template makes that a terminate).
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
BOOTSTRAP_LOG_KEY=@@BOOTSTRAP_LOG_KEY@@
@@EXTRA_ENV@@

# Dead-man switch first: whatever happens next, the machine is off after max runtime.
shutdown -P "+${MAX_RUNTIME_MINUTES}" "chronos: max runtime of ${MAX_RUNTIME_MINUTES} min reached"

LOG=/var/log/chronos-bootstrap.log
APP=/opt/chronos
IMDS=http://169.254.169.254
export AWS_DEFAULT_REGION="$REGION" AWS_REGION="$REGION" HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
# Everything below goes to the log file and to the console (cloud-init forwards stdout).
exec > >(tee -a "$LOG") 2>&1

say() { printf '%s bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    say "failed with exit code $rc: uploading this log, then powering off"
    aws s3 cp "$LOG" "s3://${BUCKET}/${BOOTSTRAP_LOG_KEY}" --only-show-errors || say "log upload failed"
    shutdown -h now || poweroff || say "poweroff failed"
  fi
}
trap on_exit EXIT

say "run ${RUN_ID} (env ${ENV_NAME}) in ${REGION}; max runtime ${MAX_RUNTIME_MINUTES} min"

# IMDSv2 only: a session token, then every request carries it.
TOKEN="$(curl -fsS --retry 5 --retry-connrefused -X PUT "${IMDS}/latest/api/token" \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600')"
INSTANCE_ID="$(curl -fsS --retry 5 -H "X-aws-ec2-metadata-token: ${TOKEN}" \
  "${IMDS}/latest/meta-data/instance-id")"
say "instance ${INSTANCE_ID}"

mkdir -p "${APP}/code" "${APP}/work"
say "code bundle s3://${BUCKET}/${CODE_KEY}"
aws s3 cp "s3://${BUCKET}/${CODE_KEY}" "${APP}/code.tar.gz" --only-show-errors
tar -xzf "${APP}/code.tar.gz" -C "${APP}/code"

PY=""
if [ -n "${PYTHON_ENV_KEY}" ] \
  && aws s3 cp "s3://${BUCKET}/${PYTHON_ENV_KEY}" "${APP}/env.tar.gz" --only-show-errors; then
  say "packed Python env s3://${BUCKET}/${PYTHON_ENV_KEY}"
  mkdir -p "${APP}/env"
  tar -xzf "${APP}/env.tar.gz" -C "${APP}/env"
  if [ -x "${APP}/env/bin/conda-unpack" ]; then
    "${APP}/env/bin/conda-unpack"
  fi
  PY="${APP}/env/bin/python"
else
  say "no packed env: the AMI's Python plus the wheelhouse s3://${BUCKET}/${WHEELHOUSE_PREFIX}"
  BASE_PY=python3
  if [ -x /opt/pytorch/bin/python3 ]; then
    BASE_PY=/opt/pytorch/bin/python3
  fi
  "${BASE_PY}" -m venv --system-site-packages "${APP}/venv"
  aws s3 cp --recursive "s3://${BUCKET}/${WHEELHOUSE_PREFIX}" "${APP}/wheelhouse" --only-show-errors
  shopt -s nullglob
  wheels=("${APP}"/wheelhouse/*.whl)
  if [ "${#wheels[@]}" -eq 0 ]; then
    say "the wheelhouse is empty"
    exit 1
  fi
  "${APP}/venv/bin/pip" install --no-index --find-links "${APP}/wheelhouse" "${wheels[@]}"
  PY="${APP}/venv/bin/python"
fi

cd "${APP}/code"
export PYTHONPATH="${APP}/code"
say "starting the trainer with ${PY}"
"${PY}" -m trainer run --bucket "${BUCKET}" --env "${ENV_NAME}" --run-id "${RUN_ID}" \
  --region "${REGION}" --device "${DEVICE}" --imds-endpoint "${IMDS}" --workdir "${APP}/work"
say "trainer finished; powering off"
shutdown -h now
