#!/bin/bash
# Container HEALTHCHECK for convrnn-serve without curl or wget: bash's /dev/tcp speaks just enough HTTP/1.0.
# Exits 0 when GET <path> on the port of CONVRNN_LISTEN (default 8080) answers 200, else 1.
#
#   healthcheck [PATH]        PATH defaults to /health/ready (503 until warm and while draining)
#
# The host equivalent is scripts/deploy-smoke.sh, which runs this same file against a live server.
set -u
path=${1:-/health/ready}
listen=${CONVRNN_LISTEN:-0.0.0.0:8080}
port=${listen##*:}
host=127.0.0.1
case "$listen" in \[*) host=::1 ;; esac  # an IPv6 listen address, e.g. [::]:8080

exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
status_line=""
IFS= read -r -t 3 status_line <&3 || true
exec 3<&-
case "$status_line" in
  "HTTP/"*" 200"*) exit 0 ;;
  *) echo "healthcheck: GET $path on port $port: ${status_line:-no answer}" >&2; exit 1 ;;
esac
