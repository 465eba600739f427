#!/usr/bin/env bash
# Brings up a throw-away SPIRE (server + agent, trust domain example.org) on
# loopback and unix sockets, and registers three workloads by unix uid:
#
#   spiffe://example.org/broker        uid BROKER_UID (default 0, root)
#   spiffe://example.org/agent/coder   uid AGENT_UID  (default 65534, nobody)
#   spiffe://example.org/tools/notes   uid NOTES_UID  (default 65533)
#
# Run as root: the unix attestor tells workloads apart by uid, and the other
# workloads run under their uid with setpriv. Environment (all optional):
#   SPIRE_DIR (default /tmp/mcpbroker-spire)   SPIRE_PORT (default 28081)
#   SPIRE_SERVER, SPIRE_AGENT: binaries (default: on PATH, else $(go env GOPATH)/bin)
# The Workload API socket is $SPIRE_DIR/agent/public/api.sock. Stop with spire-down.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="${SPIRE_DIR:-/tmp/mcpbroker-spire}"
PORT="${SPIRE_PORT:-28081}"
gobin="$(go env GOPATH 2>/dev/null || echo /nonexistent)/bin"
S="${SPIRE_SERVER:-$(command -v spire-server || echo "$gobin/spire-server")}"
A="${SPIRE_AGENT:-$(command -v spire-agent || echo "$gobin/spire-agent")}"
[[ -x "$S" && -x "$A" ]] || { echo "spire-server/spire-agent not found: run test/spire/install.sh" >&2; exit 1; }
SSOCK="$D/server/private/api.sock"
ASOCK="$D/agent/public/api.sock"

wait_for() { # wait_for SECONDS CMD...: poll every 100 ms
	local end=$(( $(date +%s) + $1 )); shift
	until "$@" >/dev/null 2>&1; do
		[[ $(date +%s) -lt $end ]] || { echo "timeout waiting for: $*" >&2; return 1; }
		sleep 0.1
	done
}

rm -rf "$D/server" "$D/agent" && mkdir -p "$D/server/data" "$D/agent/data" "$D/conf"
chmod 755 "$D"  # other uids must reach the agent's socket
for f in server agent; do
	sed -e "s|@DIR@|$D|g" -e "s|@PORT@|$PORT|g" "$here/conf/$f.conf.tmpl" > "$D/conf/$f.conf"
done

"$S" run -config "$D/conf/server.conf" > "$D/server.log" 2>&1 & echo $! > "$D/server.pid"
wait_for 30 "$S" healthcheck -socketPath "$SSOCK" || { tail -20 "$D/server.log" >&2; exit 1; }

"$S" bundle show -socketPath "$SSOCK" > "$D/bootstrap-bundle.pem"
TOKEN=$("$S" token generate -socketPath "$SSOCK" -spiffeID spiffe://example.org/host/node -ttl 600 | awk '{print $2}')
entry() { "$S" entry create -socketPath "$SSOCK" -parentID spiffe://example.org/host/node -spiffeID "$1" -selector "unix:uid:$2" >/dev/null; }
entry spiffe://example.org/broker "${BROKER_UID:-0}"
entry spiffe://example.org/agent/coder "${AGENT_UID:-65534}"
entry spiffe://example.org/tools/notes "${NOTES_UID:-65533}"

"$A" run -config "$D/conf/agent.conf" -joinToken "$TOKEN" > "$D/agent.log" 2>&1 & echo $! > "$D/agent.pid"
wait_for 30 "$A" healthcheck -socketPath "$ASOCK" || { tail -20 "$D/agent.log" >&2; exit 1; }
echo "SPIRE is up. Workload API: unix://$ASOCK   (logs: $D/server.log, $D/agent.log)"
