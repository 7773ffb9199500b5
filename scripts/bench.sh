#!/usr/bin/env bash
# `make bench`: seeds a throwaway PostgreSQL with BENCH_ITEMS demo items, serves the app with
# gunicorn (2 sync workers) on loopback and measures a trivial signed-in endpoint (the
# ceiling) and the real pages against it; see bench/README.md. Stops what it started.
#
#   BENCH_ITEMS        items to seed (default 100000)
#   BENCH_DURATION     seconds of load per endpoint (default 10)
#   BENCH_CONNECTIONS  concurrent connections (default 8)
#   BENCH_CLIENT       auto | wrk | python (default auto: wrk if it is or can be installed)
#   BENCH_VERIFY=1     also time `flask audit verify` on the seeded data
#   BENCH_PARTS        which parts to run, comma-separated (default pages,audit):
#                        pages  the page benchmark above
#                        audit  audit verify on BENCH_AUDIT_EVENTS chained events (default
#                               1000000), and BENCH_DECISIONS decisions (default 2400) with
#                               and without the hash chain, BENCH_WRITERS at once (default 1,4)
#                        dashboard  the manager dashboard (one tenant, 90 days) seeded with each
#                               of BENCH_DASHBOARD_ITEMS (default 100000,1000000), against
#                               /healthz in the same run (bench/dashboard_bench.py)
#                        api    POST /api/v1/items against /ping, and a BENCH_IMPORT_ROWS-row
#                               CSV import (default 100000) against a raw bulk insert
#                        admin  the People page of BENCH_MEMBERS members (default 1000) against
#                               /ping, SLA due times with BENCH_CLOSURES closures (default 60)
#                               against none, deactivating someone holding BENCH_HELD claims and
#                               open steps (default 300)
#                        policy the policy worker: BENCH_POLICY_ITEMS newly arrived items (default
#                               100000) decided by one worker, against single-row INSERT commits/s
#                        notify the "assigned to you" mail: a policy batch assigning BENCH_NOTIFY_ITEMS
#                               exceptions (default 1000) to BENCH_NOTIFY_ANALYSTS analysts
#                               (default 5), then their digest mails, against as many plain mails
set -uo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
ensure_venv || exit 1

ITEMS="${BENCH_ITEMS:-100000}"
CLIENT="${BENCH_CLIENT:-auto}"
WORKERS=2

if [ "$CLIENT" != python ] && ! command -v wrk >/dev/null 2>&1; then
  apt_install wrk || say "wrk not available; using the Python load client"
fi

start_throwaway_servers bench || exit 1

export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/cleardesk"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export PYTHONDONTWRITEBYTECODE=1

FLASK=("$VENV/bin/flask" --app wsgi)

bench_database() {
  # bench_database NAME : a fresh database of its own for one part, migrated; prints its URL.
  "$(find_pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE cleardesk_$1" >/dev/null
  local url="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/cleardesk_$1"
  DATABASE_URL="$url" "${FLASK[@]}" db upgrade 2>&1 | grep -v "^INFO" >&2 || true
  echo "$url"
}
PARTS=",${BENCH_PARTS:-pages,audit},"
status=0

if [[ "$PARTS" == *,audit,* ]]; then
  say "audit trail: verify rate and the cost of the hash chain (own database)"
  AUDIT_URL="$(bench_database audit)"
  DATABASE_URL="$AUDIT_URL" "$PY" bench/audit_bench.py --events "${BENCH_AUDIT_EVENTS:-1000000}" \
    --decisions "${BENCH_DECISIONS:-2400}" --writers "${BENCH_WRITERS:-1,4}" || status=1
fi
if [[ "$PARTS" == *,dashboard,* ]]; then
  say "manager dashboard at two volumes of history (own databases)"
  "$PY" bench/dashboard_bench.py --pg "postgresql+psycopg://postgres@127.0.0.1:$PG_PORT" \
    --items "${BENCH_DASHBOARD_ITEMS:-100000,1000000}" --duration "${BENCH_DURATION:-10}" \
    || status=1
fi
if [[ "$PARTS" == *,api,* ]]; then
  say "integrations: POST /api/v1/items and a CSV import (own database)"
  API_URL="$(bench_database api)"
  API_PORT="$(free_port)"
  DATABASE_URL="$API_URL" API_RATE_LIMIT_PER_MINUTE=1000000000 "$VENV/bin/gunicorn" \
    --workers "$WORKERS" --bind "127.0.0.1:$API_PORT" wsgi:app > "$WORK/gunicorn-api.log" 2>&1 &
  API_PID=$!
  STOP_PIDS+=("$API_PID")
  if wait_for_port "$API_PORT" 30; then
    DATABASE_URL="$API_URL" "$PY" bench/api_bench.py --url "http://127.0.0.1:$API_PORT" \
      --duration "${BENCH_DURATION:-10}" --connections "${BENCH_CONNECTIONS:-8}" \
      --import-rows "${BENCH_IMPORT_ROWS:-100000}" || { status=1; tail -n 40 "$WORK/gunicorn-api.log" >&2; }
  else
    cat "$WORK/gunicorn-api.log" >&2; status=1
  fi
  kill "$API_PID" 2>/dev/null; wait "$API_PID" 2>/dev/null
fi
if [[ "$PARTS" == *,admin,* ]]; then
  say "administration: People page, closures in SLA due times, deactivation (own database)"
  ADMIN_URL="$(bench_database admin)"
  DATABASE_URL="$ADMIN_URL" "$PY" bench/admin_bench.py --members "${BENCH_MEMBERS:-1000}" \
    --closures "${BENCH_CLOSURES:-60}" --held "${BENCH_HELD:-300}" || status=1
fi
if [[ "$PARTS" == *,policy,* ]]; then
  say "policy worker: decisions/s against single-row INSERT commits/s (own database)"
  POLICY_URL="$(bench_database policy)"
  DATABASE_URL="$POLICY_URL" RQ_QUEUE=bench-policy "$PY" bench/policy_bench.py \
    --items "${BENCH_POLICY_ITEMS:-100000}" || status=1
fi
if [[ "$PARTS" == *,notify,* ]]; then
  say "assigned-to-you mail: a policy batch's digests against plain mails (own database)"
  NOTIFY_URL="$(bench_database notify)"
  DATABASE_URL="$NOTIFY_URL" RQ_QUEUE=bench-notify "$PY" bench/notify_bench.py \
    --items "${BENCH_NOTIFY_ITEMS:-1000}" --analysts "${BENCH_NOTIFY_ANALYSTS:-5}" || status=1
fi
[[ "$PARTS" == *,pages,* ]] || exit $status

"${FLASK[@]}" db upgrade 2>&1 | grep -v "^INFO" || true

say "seeding $ITEMS items on PostgreSQL"
started=$EPOCHREALTIME
"${FLASK[@]}" seed-demo --items "$ITEMS" || exit 1
SEED_SECONDS="$("$PY" -c "print(round($EPOCHREALTIME - $started, 2))")"

VERIFY_ARGS=()
if [ "${BENCH_VERIFY:-0}" = 1 ]; then
  say "flask audit verify"
  started=$EPOCHREALTIME
  "${FLASK[@]}" audit verify | tail -n 1 || exit 1
  VERIFY_ARGS=(--verify-seconds "$("$PY" -c "print(round($EPOCHREALTIME - $started, 2))")")
fi

WEB_PORT="$(free_port)"
say "gunicorn with $WORKERS workers on 127.0.0.1:$WEB_PORT"
"$VENV/bin/gunicorn" --workers "$WORKERS" --bind "127.0.0.1:$WEB_PORT" wsgi:app \
  > "$WORK/gunicorn.log" 2>&1 &
STOP_PIDS+=($!)
wait_for_port "$WEB_PORT" 30 || { cat "$WORK/gunicorn.log" >&2; exit 1; }

say "measuring"
"$PY" bench/run_bench.py --url "http://127.0.0.1:$WEB_PORT" --client "$CLIENT" \
  --duration "${BENCH_DURATION:-10}" --connections "${BENCH_CONNECTIONS:-8}" \
  --items "$ITEMS" --seed-seconds "$SEED_SECONDS" --workers "$WORKERS" "${VERIFY_ARGS[@]}"
pages_status=$?
[ $pages_status -ne 0 ] && tail -n 40 "$WORK/gunicorn.log" >&2
[ $pages_status -ne 0 ] && status=$pages_status
exit $status
