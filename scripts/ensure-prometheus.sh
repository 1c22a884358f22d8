#!/usr/bin/env bash
# Make sure promtool exists, so the tests can check and unit-test deploy/prometheus/'s rules.
#
# Idempotent. Installs Debian's prometheus package (which carries promtool) when promtool is
# missing, as root or via passwordless sudo, then stops and disables the Prometheus server the
# package starts: the tests only need promtool. Never silently skips: without promtool and
# without a way to install it, it exits 1.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "ensure-prometheus: $(promtool --version 2>&1 | head -1)"
    exit 0
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; } || ! command -v apt-get >/dev/null; then
    echo "ensure-prometheus: promtool is missing and this script cannot install it" >&2
    echo "  install Debian's prometheus package (apt-get install prometheus), or put promtool on PATH" >&2
    exit 1
fi
echo "ensure-prometheus: installing prometheus (for promtool)..."
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
pkill -x prometheus 2>/dev/null || true
command -v promtool >/dev/null 2>&1 || { echo "ensure-prometheus: promtool still missing" >&2; exit 1; }
echo "ensure-prometheus: $(promtool --version 2>&1 | head -1)"
