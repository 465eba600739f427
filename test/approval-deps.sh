#!/usr/bin/env bash
# Installs what the approval web-page test (broker/approval_web_test.go)
# drives: Debian's chromium and chromium-driver. Source it from test/run
# before `go test`; it does nothing when chromium is already there.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
	echo "== apt-get install chromium chromium-driver (approval web-page test)"
	sudo=""
	if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
