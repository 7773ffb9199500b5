#!/usr/bin/env bash
# `make test`: installs what is missing, starts a throwaway Redis and PostgreSQL on spare
# ports, and runs the whole suite on SQLite and then on PostgreSQL, then the short form of the
# failure drills on PostgreSQL (when run without arguments). Stops what it started,
# also on failure; exits non-zero if either run failed.
set -uo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
ensure_venv || exit 1

CHROMIUM="$(find_chromium)" || exit 1
AXE_CORE="$(ensure_axe_core)" || exit 1
start_throwaway_servers test || exit 1

export CLEARDESK_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export CLEARDESK_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/cleardesk"
export CLEARDESK_TEST_CHROMIUM="$CHROMIUM"
export CLEARDESK_TEST_AXE="$AXE_CORE"
export PYTHONDONTWRITEBYTECODE=1

status=0
for database in sqlite postgresql; do
  say "test suite on $database"
  CLEARDESK_TEST_DB="$database" "$PY" -m pytest -p no:cacheprovider "$@"
  rc=$?
  [ $rc -ne 0 ] && status=$rc
done
if [ $# -eq 0 ]; then
  # The whole suite also runs the short form of the failure drills (PostgreSQL only; `make
  # drill` runs the full form).
  say "failure drills, short form, on PostgreSQL"
  run_drills --short
  rc=$?
  [ $rc -ne 0 ] && status=$rc
fi
if [ $status -eq 0 ]; then say "all tests passed on SQLite and PostgreSQL"; else say "tests FAILED"; fi
exit $status
