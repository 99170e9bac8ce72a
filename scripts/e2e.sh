#!/usr/bin/env bash
# Serves the built app on a free port against $DATABASE_URL (see with-postgres.sh)
# and runs the Playwright tests against it in the system Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${HERALD_BIN:-target/debug/herald}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/herald-e2e.XXXXXX)
log="$data/herald.log"

HERALD_ADDR="127.0.0.1:$port" HERALD_DATA_DIR="$data" LEPTOS_SITE_ROOT=target/site \
  HERALD_ADMIN_PASSWORD="${HERALD_ADMIN_PASSWORD:-e2e-password}" \
  "$bin" >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "Herald exited:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "Herald did not become ready:" >&2; cat "$log" >&2; exit 1; }

cd end2end
set +e
HERALD_URL="http://127.0.0.1:$port" HERALD_ADMIN_PASSWORD="${HERALD_ADMIN_PASSWORD:-e2e-password}" npx playwright test
status=$?
set -e
if [ $status -ne 0 ]; then echo "--- Herald log ---" >&2; tail -n 50 "$log" >&2; fi
exit $status
