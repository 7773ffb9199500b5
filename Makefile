.PHONY: run test bench drill
# See README.md. Each target installs what it needs on a fresh Debian/Ubuntu machine.

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

bench:
	@bash scripts/bench.sh

drill:
	@bash scripts/drill.sh
