#!/usr/bin/env bash
# Stops what spire-up.sh started and waits for it (SPIRE takes over a second
# to shut down). Leaves $SPIRE_DIR for inspection.
set -uo pipefail
D="${SPIRE_DIR:-/tmp/mcpbroker-spire}"
for p in agent server; do
	[[ -f "$D/$p.pid" ]] || continue
	pid="$(cat "$D/$p.pid")"
	kill "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$D/$p.pid"
done
