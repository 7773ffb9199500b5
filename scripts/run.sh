#!/usr/bin/env bash
# `make run`: the app with demo data on SQLite, a local Redis, one RQ worker, the scheduler
# and the web server. Ctrl-C stops everything it started.
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

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6390}"
  refuse_busy_port "$REDIS_PORT" REDIS_PORT
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  start_redis "$REDIS_PORT" "$RUN_DIR/redis"
  PIDS+=("$REDIS_PID")
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi

if [ -z "${SMTP_HOST:-}" ]; then
  # A local mail sink: every mail the app sends is printed to .run/mail.log (and listed for
  # admins at /admin/mail/), so email approvals can be tried without a mail server.
  # `flask --app wsgi mail last-link` prints the newest approval link from it, decoded.
  export SMTP_HOST=127.0.0.1 SMTP_PORT="${SMTP_PORT:-8025}" MAIL_SINK_LOG="$RUN_DIR/mail.log"
  refuse_busy_port "$SMTP_PORT" SMTP_PORT
  say "starting the local mail sink on 127.0.0.1:$SMTP_PORT (.run/mail.log)"
  "$PY" -u -m aiosmtpd -n -l "$SMTP_HOST:$SMTP_PORT" > "$RUN_DIR/mail.log" 2>&1 & PIDS+=($!)
fi
export APP_BASE_URL="${APP_BASE_URL:-http://127.0.0.1:$PORT}"  # the links in mails

FLASK=("$VENV/bin/flask" --app wsgi)
say "applying database migrations"
"${FLASK[@]}" db upgrade 2>&1 | grep -v "^INFO" || true
say "seeding the demo data (only into an empty database)"
"${FLASK[@]}" seed-demo --if-empty
say "starting the worker, the scheduler and the web server"

"${FLASK[@]}" worker > "$RUN_DIR/worker.log" 2>&1 & PIDS+=($!)
"${FLASK[@]}" cron > "$RUN_DIR/cron.log" 2>&1 & PIDS+=($!)
"$VENV/bin/gunicorn" --workers 2 --bind "127.0.0.1:$PORT" --access-logfile - wsgi:app \
  > "$RUN_DIR/web.log" 2>&1 & PIDS+=($!)
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

  Logs: .run/web.log, .run/worker.log, .run/cron.log.  Ctrl-C stops everything.

MSG
wait -n "${PIDS[@]}"
echo "a process stopped; shutting down (see .run/*.log)" >&2
exit 1
