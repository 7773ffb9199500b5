#!/usr/bin/env bash
# `make test`: installs what is missing, starts a throwaway Redis and PostgreSQL on spare
# ports, and runs the whole suite on SQLite and on PostgreSQL side by side
# (TEST_ONE_DATABASE_AT_A_TIME=1: one after the other), then the short form of the failure
# drills on PostgreSQL (when run without arguments). Stops what it started,
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
if [ "${TEST_ONE_DATABASE_AT_A_TIME:-0}" = 1 ]; then
  for database in sqlite postgresql; do
    say "test suite on $database"
    CLEARDESK_TEST_DB="$database" "$PY" -m pytest -p no:cacheprovider "$@"
    rc=$?
    [ $rc -ne 0 ] && status=$rc
  done
else
  # Both databases at once: each run waits much of its time on its servers, workers and
  # browser, so together they take little longer than the slower alone. Each has its own Redis
  # database. Their output is shown as it comes, each line marked [sqlite] or [postgresql]; a
  # failed run's whole output is shown again at the end.
  say "test suite on SQLite and on PostgreSQL, side by side"
  pids=()
  redis_db=0
  for database in sqlite postgresql; do
    ( CLEARDESK_TEST_DB="$database" CLEARDESK_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$redis_db" \
        "$PY" -m pytest -p no:cacheprovider "$@" 2>&1 | tee "$WORK/$database.log" \
        | sed -u "s/^/[$database] /"
      echo "${PIPESTATUS[0]}" > "$WORK/$database.rc" ) &
    pids+=($!)
    redis_db=$((redis_db + 1))
  done
  wait "${pids[@]}"
  for database in sqlite postgresql; do
    rc="$(cat "$WORK/$database.rc" 2>/dev/null || echo 1)"
    say "$database: $(tail -n 1 "$WORK/$database.log")"
    if [ "$rc" -ne 0 ]; then
      status=$rc
      say "test suite on $database FAILED; its whole output:"
      cat "$WORK/$database.log"
    fi
  done
fi
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
