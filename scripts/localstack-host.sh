#!/usr/bin/env bash
# Install and run LocalStack on the host, without Docker, for depthguard's AWS integration tests.
#
#   scripts/localstack-host.sh [start]   install (once) into .localstack-venv, start, wait until healthy,
#                                        then print the line to export for the tests
#   scripts/localstack-host.sh stop      stop the LocalStack this script started (by its recorded pid)
#   scripts/localstack-host.sh status    say whether it answers
#
# Why it looks like this (measured, not guessed):
#   - localstack-core 2026.3.0 needs Python 3.13, so it gets its own venv from a 3.13 interpreter
#     (pyenv's, or LOCALSTACK_PYTHON); the project's own Python is left alone.
#   - cbor2 6 breaks it: pin cbor2 < 6. service_identity is needed by its TLS stack.
#   - with pyOpenSSL 26 LocalStack cannot self-sign its gateway certificate, so we make a key + cert
#     PEM with `cryptography` and hand it over via CUSTOM_SSL_CERT_PATH.
# Versions are pinned exactly so that every machine gets the same LocalStack.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LOCALSTACK_VENV:-$ROOT/.localstack-venv}"
RUN="${LOCALSTACK_RUN_DIR:-$ROOT/.localstack-run}"
LISTEN="${LOCALSTACK_LISTEN:-127.0.0.1:4566}"
WAIT_SECONDS="${LOCALSTACK_WAIT_SECONDS:-120}"
PIDFILE="$RUN/localstack.pid"
LOG="$RUN/localstack.log"
CERT="$RUN/gateway.pem"
PINS=(
  "localstack-core[runtime]==2026.3.0"
  "cbor2==5.6.5"
  "service_identity==24.2.0"
)

find_python313() {
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then echo "$LOCALSTACK_PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local root cand
    root="$(pyenv root)"
    for cand in $(ls -d "$root"/versions/3.13* 2>/dev/null | sort -rV); do
      if [[ -x "$cand/bin/python3.13" ]]; then echo "$cand/bin/python3.13"; return; fi
    done
  fi
  if command -v python3.13 >/dev/null 2>&1; then command -v python3.13; return; fi
  echo "localstack-host: no Python 3.13 found (set LOCALSTACK_PYTHON)" >&2
  exit 2
}

install() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import localstack" 2>/dev/null \
      && [[ -f "$VENV/.depthguard-pins" ]] && [[ "$(cat "$VENV/.depthguard-pins")" == "${PINS[*]}" ]]; then
    return
  fi
  local py
  py="$(find_python313)"
  echo "localstack-host: installing ${PINS[*]} into $VENV (python: $py)" >&2
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "${PINS[*]}" >"$VENV/.depthguard-pins"
}

make_cert() {
  [[ -s "$CERT" ]] && return
  "$VENV/bin/python" - "$CERT" <<'PY'
"""Self-signed key + cert for LocalStack's gateway (pyOpenSSL 26 cannot make one itself)."""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost.localstack.cloud")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=365))
    .add_extension(
        x509.SubjectAlternativeName(
            [
                x509.DNSName("localhost"),
                x509.DNSName("localhost.localstack.cloud"),
                x509.DNSName("*.localhost.localstack.cloud"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
        ),
        critical=False,
    )
    .sign(key, hashes.SHA256())
)
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "wb") as out:
    out.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    out.write(cert.public_bytes(serialization.Encoding.PEM))
PY
}

healthy() {
  "$VENV/bin/python" - "http://$LISTEN/_localstack/health" <<'PY' 2>/dev/null
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=2) as resp:
    sys.exit(0 if resp.status == 200 else 1)
PY
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
  install
  mkdir -p "$RUN"
  make_cert
  if running && healthy; then
    echo "export DEPTHGUARD_TEST_AWS_ENDPOINT=http://$LISTEN"
    return
  fi
  echo "localstack-host: starting LocalStack on $LISTEN (log: $LOG)" >&2
  # setsid: its own process group, so `stop` ends LocalStack and only its children.
  GATEWAY_LISTEN="$LISTEN" \
  SERVICES=secretsmanager,ssm,sts \
  EAGER_SERVICE_LOADING=1 \
  DNS_ADDRESS=0 \
  CUSTOM_SSL_CERT_PATH="$CERT" \
  LOCALSTACK_VOLUME_DIR="$RUN/volume" \
  FILESYSTEM_ROOT="$RUN/fs" \
    setsid "$VENV/bin/python" -m localstack.runtime.main >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + WAIT_SECONDS))
  until healthy; do
    if ! running; then
      echo "localstack-host: LocalStack exited during start-up; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "localstack-host: not healthy after ${WAIT_SECONDS}s; stopping it. Last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2
      stop
      exit 1
    fi
    sleep 1
  done
  echo "localstack-host: ready" >&2
  echo "export DEPTHGUARD_TEST_AWS_ENDPOINT=http://$LISTEN"
}

stop() {
  if [[ ! -f "$PIDFILE" ]]; then
    echo "localstack-host: not running (no $PIDFILE)" >&2
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  echo "localstack-host: stopped" >&2
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if running && healthy; then echo "running on $LISTEN"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
