#!/usr/bin/env bash
# `make drill`: the failure drills (drills/, see its docstring) against a throwaway PostgreSQL,
# with the real processes they start on loopback; prints each drill's figures and exits
# non-zero when an invariant broke. Arguments go to `python -m drills` (e.g. `--short`, `r1`).
set -uo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
ensure_venv || exit 1
start_throwaway_servers drill || exit 1

say "failure drills on PostgreSQL"
run_drills "$@"
