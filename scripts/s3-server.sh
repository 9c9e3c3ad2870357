#!/usr/bin/env bash
# A real S3-compatible server on loopback for the S3 tests: moto (PyPI) and one bucket.
#
#   scripts/s3-server.sh start [--auth] [--owner-pid PID] [--state-dir DIR]
#       Installs moto into a venv if no python3 on PATH has it, starts it on 127.0.0.1 on a free
#       port, waits until it answers, creates the bucket, and prints
#           export COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#           export COFFER_TEST_S3_ACCESS_KEY_ID=...
#           export COFFER_TEST_S3_SECRET_ACCESS_KEY=...
#           export COFFER_TEST_S3_BUCKET=coffer-test
#           export COFFER_TEST_S3_PID=...
#       (so: eval "$(scripts/s3-server.sh start)"). With --owner-pid the server stops by itself
#       once that process is gone (the test binary passes its own pid).
#       --auth turns moto's request authentication on and creates an IAM user with full access
#       whose key is printed. moto then checks keys and signatures, but it recomputes the
#       signature from the query string as sent, while opendal signs it percent-encoded as
#       SigV4 specifies (`prefix=a%2F`): every listing fails with SignatureDoesNotMatch even
#       with the right key. So --auth serves only the tests of rejected credentials.
#   scripts/s3-server.sh stop [--state-dir DIR]
#       Stops the server started with that state directory.
#
# Environment: COFFER_S3_VENV (venv location, default ~/.cache/coffer/s3-venv),
# COFFER_S3_BUCKET (default coffer-test).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_DIR="$ROOT/target/s3-server"
OWNER_PID=""
AUTH=0
BUCKET="${COFFER_S3_BUCKET:-coffer-test}"
VENV="${COFFER_S3_VENV:-${HOME:-/tmp}/.cache/coffer/s3-venv}"

die() { echo "s3-server: $*" >&2; exit 1; }

python_with_moto() {
  local py
  for py in python3 "$VENV/bin/python"; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import moto.server, flask, flask_cors, boto3' >/dev/null 2>&1; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

install_moto() {
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to run moto"
  echo "s3-server: installing moto[server] into $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (install python3-venv)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]" >&2 ||
    die "pip install moto[server] failed"
}

start() {
  local py port pid
  py="$(python_with_moto)" || { install_moto; py="$(python_with_moto)"; } ||
    die "moto is not importable even after installing it"
  mkdir -p "$STATE_DIR"
  port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  if [ "$AUTH" = 1 ]; then
    # Every request after the first four (the setup below) must carry a valid signature.
    INITIAL_NO_AUTH_ACTION_COUNT=4 setsid "$py" -m moto.server -H 127.0.0.1 -p "$port" \
      >"$STATE_DIR/moto-$port.log" 2>&1 </dev/null &
  else
    setsid "$py" -m moto.server -H 127.0.0.1 -p "$port" \
      >"$STATE_DIR/moto-$port.log" 2>&1 </dev/null &
  fi
  pid=$!
  echo "$pid" >"$STATE_DIR/moto.pid"
  # Health check: a TCP connect (an HTTP request would use up one unauthenticated action).
  "$py" - "$port" <<'EOF' || { kill "$pid" 2>/dev/null; cat "$STATE_DIR/moto-$port.log" >&2; die "moto did not start"; }
import socket, sys, time
port = int(sys.argv[1])
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
  "$py" - "$port" "$BUCKET" "$pid" "$AUTH" <<'EOF' || { kill "$pid" 2>/dev/null; die "setting up moto failed"; }
import json, sys
import boto3
port, bucket, pid, auth = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
          aws_access_key_id="coffer-test", aws_secret_access_key="coffer-test-secret")
key = {"AccessKeyId": "coffer-test", "SecretAccessKey": "coffer-test-secret"}
if auth:
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="coffer")
    key = iam.create_access_key(UserName="coffer")["AccessKey"]
    iam.put_user_policy(UserName="coffer", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
print(f"export COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:{port}")
print(f"export COFFER_TEST_S3_ACCESS_KEY_ID={key['AccessKeyId']}")
print(f"export COFFER_TEST_S3_SECRET_ACCESS_KEY={key['SecretAccessKey']}")
print(f"export COFFER_TEST_S3_BUCKET={bucket}")
print(f"export COFFER_TEST_S3_PID={pid}")
EOF
  if [ -n "$OWNER_PID" ]; then
    # Stop the server once the owner exits (a test binary has no global teardown).
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null' \
      _ "$OWNER_PID" "$pid" >/dev/null 2>&1 </dev/null &
  fi
}

stop() {
  local pid
  [ -f "$STATE_DIR/moto.pid" ] || { echo "s3-server: not running" >&2; return 0; }
  pid="$(cat "$STATE_DIR/moto.pid")"
  kill "$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/moto.pid"
}

cmd="${1:-}"
shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --owner-pid) OWNER_PID="$2"; shift 2 ;;
    --auth) AUTH=1; shift ;;
    --state-dir) STATE_DIR="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start [--owner-pid PID] [--state-dir DIR] | stop [--state-dir DIR]" ;;
esac
