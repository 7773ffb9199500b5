#!/usr/bin/env bash
# `make run`: the app with demo data on SQLite, a local Redis, RQ workers (one per queue set),
# the scheduler and the web server. Each long-running process is supervised: if one stops
# (a crash, a kill), it is started again after a short wait (1 s, doubling to 30 s) while the
# others carry on. Ctrl-C stops everything it started.
#
#   PORT               the web server's port (default 5000)
#   WEB_CONCURRENCY    gunicorn worker processes (default 2)
#   WORKER_QUEUE_SETS  one RQ worker per set, space-separated; a set lists queues comma-separated,
#                      taken in the order urgent, sweeps, default, bulk (default
#                      "urgent,sweeps,default urgent,bulk,default": one worker never takes an
#                      import, so mail to people never waits behind one)
#   WORKERS_PER_SET    workers started for each set (default 1)
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
ensure_venv

PORT="${PORT:-5000}"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR" "$ROOT/instance"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

refuse_busy_port() {
  # refuse_busy_port PORT VARIABLE : another checkout (or program) holds the port.
  if port_in_use "$1"; then
    echo "Port $1 is in use (another 'make run'?). Choose another: $2=<port> make run" >&2
    exit 1
  fi
}
refuse_busy_port "$PORT" PORT

supervise() {
  # supervise NAME LOG COMMAND... : run COMMAND in the background, appending to LOG; when it
  # stops, say so and start it again (1 s, doubling to 30 s; back to 1 s after a minute up).
  local name=$1 log=$2
  shift 2
  (
    set +e
    child=""
    stop_child() {
      # TERM, then KILL if it has not stopped within 10 s (a job still running, say).
      if [ -n "$child" ]; then
        kill "$child" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$child" 2>/dev/null
      fi
      exit 0
    }
    trap stop_child TERM INT
    delay=1
    while true; do
      started=$SECONDS
      "$@" >> "$log" 2>&1 &
      child=$!
      wait "$child"
      rc=$?
      child=""
      [ $((SECONDS - started)) -gt 60 ] && delay=1
      echo "$(date '+%H:%M:%S') $name stopped (exit $rc); starting it again in ${delay}s (see $log)" >&2
      sleep "$delay" &
      wait $!
      delay=$((delay < 16 ? delay * 2 : 30))
    done
  ) &
  PIDS+=($!)
}

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6390}"
  refuse_busy_port "$REDIS_PORT" REDIS_PORT
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$RUN_DIR/redis"
  supervise redis "$RUN_DIR/redis/redis.log" "$(find_redis_server)" --port "$REDIS_PORT" \
    --bind 127.0.0.1 --dir "$RUN_DIR/redis" --save "" --appendonly no --daemonize no
  wait_for_port "$REDIS_PORT" 20 || { echo "Redis did not start; see $RUN_DIR/redis/redis.log" >&2; exit 1; }
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi

if [ -z "${SMTP_HOST:-}" ]; then
  # A local mail sink: every mail the app sends is printed to .run/mail.log (and listed for
  # admins at /admin/mail/), so email approvals can be tried without a mail server.
  # `flask --app wsgi mail last-link` prints the newest approval link from it, decoded.
  export SMTP_HOST=127.0.0.1 SMTP_PORT="${SMTP_PORT:-8025}" MAIL_SINK_LOG="$RUN_DIR/mail.log"
  refuse_busy_port "$SMTP_PORT" SMTP_PORT
  say "starting the local mail sink on 127.0.0.1:$SMTP_PORT (.run/mail.log)"
  : > "$RUN_DIR/mail.log"
  supervise mail-sink "$RUN_DIR/mail.log" "$PY" -u -m aiosmtpd -n -l "$SMTP_HOST:$SMTP_PORT"
fi
export APP_BASE_URL="${APP_BASE_URL:-http://127.0.0.1:$PORT}"  # the links in mails

FLASK=("$VENV/bin/flask" --app wsgi)
say "applying database migrations"
"${FLASK[@]}" db upgrade 2>&1 | grep -v "^INFO" || true
say "seeding the demo data (only into an empty database)"
"${FLASK[@]}" seed-demo --if-empty
say "starting the worker, the scheduler and the web server"

: > "$RUN_DIR/worker.log"; : > "$RUN_DIR/cron.log"; : > "$RUN_DIR/web.log"
n=0
for queues in ${WORKER_QUEUE_SETS:-urgent,sweeps,default urgent,bulk,default}; do
  for _ in $(seq "${WORKERS_PER_SET:-1}"); do
    n=$((n + 1))
    supervise "worker $n ($queues)" "$RUN_DIR/worker.log" "${FLASK[@]}" worker --queues "$queues"
  done
done
supervise cron "$RUN_DIR/cron.log" "${FLASK[@]}" cron
supervise web "$RUN_DIR/web.log" "$VENV/bin/gunicorn" --workers "${WEB_CONCURRENCY:-2}" \
  --bind "127.0.0.1:$PORT" --access-logfile - wsgi:app
wait_for_port "$PORT" 30 || { cat "$RUN_DIR/web.log" >&2; exit 1; }

cat <<MSG

  Cleardesk is running at http://127.0.0.1:$PORT

  Sign in with any demo user; the password is 'demo-password':
    admin@cleardesk.demo      approver@cleardesk.demo   analyst@cleardesk.demo
    manager@cleardesk.demo    auditor@cleardesk.demo    requester@cleardesk.demo
    approver.contoso@cleardesk.demo   (contoso only)

  Mail (approval links) is caught locally: read it at http://127.0.0.1:$PORT/admin/mail/
  (as admin@cleardesk.demo; its links open from there), or print the newest approval link:
    .venv/bin/flask --app wsgi mail last-link [--to approver@cleardesk.demo]

  Logs: .run/web.log, .run/worker.log, .run/cron.log.  A process that stops is started
  again.  Health: /livez, /readyz, /healthz.  Ctrl-C stops everything.

MSG
wait
