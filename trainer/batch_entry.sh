# The container command of a Chronos AWS Batch job (infra/spec/batch.py job_definition):
#   bash -c "<this script>" chronos-batch ENV RUN_ID CODE_KEY
# The code bundle and the wheelhouse from S3 (boto3 of the image's Python), then
# `python -m trainer run --batch`, exec'd so the trainer is the container's PID 1 and gets
# the SIGTERM of a TerminateJob or a stopping host itself. No poweroff: Batch owns the host.
# Local mode (control/local_batch.py) runs this same script with CHRONOS_APP and CHRONOS_PYTHON.
set -Eeuo pipefail
ENV_NAME="$1"
RUN_ID="$2"
CODE_KEY="$3"
BUCKET="${CHRONOS_BUCKET:?the job definition sets CHRONOS_BUCKET}"
APP="${CHRONOS_APP:-/opt/chronos}"
PY="${CHRONOS_PYTHON:-python3}"
say() { printf '%s batch-entry: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

say "job ${AWS_BATCH_JOB_ID:-?} attempt ${AWS_BATCH_JOB_ATTEMPT:-1}: run ${RUN_ID} (env ${ENV_NAME})"
if [ "${CHRONOS_ENV:-$ENV_NAME}" != "$ENV_NAME" ]; then
  say "FAILED: this job definition is env ${CHRONOS_ENV}'s, the job names env ${ENV_NAME}"
  exit 2
fi
mkdir -p "${APP}/code" "${APP}/wheelhouse" "${APP}/work"
FETCH='
import os, sys, tarfile
import boto3
bucket, code_key, app, wheels = sys.argv[1:5]
s3 = boto3.client("s3")
try:
    bundle = os.path.join(app, "code.tar.gz")
    s3.download_file(bucket, code_key, bundle)
    with tarfile.open(bundle) as tar:
        tar.extractall(os.path.join(app, "code"), filter="data")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=wheels) if wheels else []:
        for obj in page.get("Contents", []):
            name = obj["Key"][len(wheels):]
            if name.endswith(".whl") and "/" not in name:
                s3.download_file(bucket, obj["Key"], os.path.join(app, "wheelhouse", name))
except Exception as exc:
    sys.exit(f"cannot fetch s3://{bucket}/{code_key} (or the wheelhouse {wheels}): {exc}")
'
say "code bundle s3://${BUCKET}/${CODE_KEY}"
"$PY" -c "$FETCH" "$BUCKET" "$CODE_KEY" "$APP" "${CHRONOS_WHEELHOUSE_PREFIX:-}"
shopt -s nullglob
wheels=("${APP}"/wheelhouse/*.whl)
shopt -u nullglob
if [ "${#wheels[@]}" -gt 0 ]; then
  say "installing ${#wheels[@]} wheels into ${PY}"
  "$PY" -m pip install --no-index --find-links "${APP}/wheelhouse" --no-input --disable-pip-version-check \
    --root-user-action=ignore "${wheels[@]}"
fi
cd "${APP}/code"
export PYTHONPATH="${APP}/code" PYTHONUNBUFFERED=1
ARGS=(--batch --bucket "$BUCKET" --env "$ENV_NAME" --run-id "$RUN_ID"
  --region "${AWS_DEFAULT_REGION:-us-east-1}" --device "${CHRONOS_DEVICE:-cuda}" --workdir "${APP}/work")
if [ -n "${CHRONOS_LOCAL:-}" ]; then
  ARGS+=(--local)
fi
if [ -n "${CHRONOS_IMDS_ENDPOINT:-}" ]; then
  ARGS+=(--imds-endpoint "$CHRONOS_IMDS_ENDPOINT")
fi
say "starting the trainer"
exec "$PY" -m trainer run "${ARGS[@]}"
