#!/usr/bin/env bash
# Runs a command against a throw-away PostgreSQL cluster: initdb in a temporary
# folder, a server on a Unix socket there (no TCP port), DATABASE_URL exported,
# and everything torn down afterwards, whatever the command's outcome.
set -euo pipefail

bindir=""
if ! command -v initdb >/dev/null 2>&1; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$bindir" ] || { echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2; exit 1; }
  bindir="$bindir/"
fi

dir=$(mktemp -d /tmp/herald-test-pg.XXXXXX)
chmod 755 "$dir"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  "${as_pg[@]}" "${bindir}pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_pg[@]}" "${bindir}initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
# Durability settings stay at their defaults; the test suite measures nothing.
"${as_pg[@]}" "${bindir}pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
  -o "-c listen_addresses='' -k $dir -c max_connections=400 -c shared_buffers=256MB" start >/dev/null

export DATABASE_URL="postgres:///postgres?host=$dir&user=postgres"
export HERALD_TEST_PG_DIR="$dir"
set +e
"$@"
status=$?
set -e
if [ $status -ne 0 ] && [ -f "$dir/postgres.log" ]; then
  echo "--- last lines of the test PostgreSQL log ---" >&2
  tail -n 20 "$dir/postgres.log" >&2
fi
exit $status
