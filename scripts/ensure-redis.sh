#!/usr/bin/env bash
# Make sure the redis-server binary exists so the Redis tests can start private instances.
#
# Idempotent. Installs Debian's redis-server when missing (as root, or via passwordless sudo
# on CI runners), then stops and disables the system-wide service the package starts: the tests
# never use it (each session starts its own instance on a free port in a temp dir), and a stray
# server on 6379 only wastes RAM and tempts people into testing against the wrong one.
# Never silently skips: without the binary and without a way to install it it exits 1.
set -euo pipefail

have_redis() {
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

can_be_root() {
    [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

if ! have_redis; then
    if ! can_be_root || ! command -v apt-get >/dev/null 2>&1; then
        cat >&2 <<'EOF'
ensure-redis: redis-server is not installed and this script cannot install it
(needs root or passwordless sudo, and apt-get). Install it:
  sudo apt-get install -y redis-server      (then re-run this script), or
  brew install redis  /  a build from source with redis-server on PATH
EOF
        exit 1
    fi
    echo "ensure-redis: installing redis-server..."
    # A fresh machine may have no package lists yet; without them the package is not found.
    if ! apt-cache show redis-server >/dev/null 2>&1; then
        as_root apt-get update -qq
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

if ! have_redis; then
    echo "ensure-redis: redis-server still missing after install" >&2
    exit 1
fi

# Stop + disable the package's own server (best effort: containers have neither systemd nor a
# working init; a policy-rc.d may already have kept it from starting).
if can_be_root; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-enabled --quiet redis-server 2>/dev/null \
            || systemctl is-active --quiet redis-server 2>/dev/null; then
            as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
            echo "ensure-redis: stopped and disabled the system redis-server service"
        fi
    elif [ -x /etc/init.d/redis-server ]; then
        if as_root /etc/init.d/redis-server status >/dev/null 2>&1; then
            as_root /etc/init.d/redis-server stop >/dev/null 2>&1 || true
            echo "ensure-redis: stopped the system redis-server service"
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
        fi
    fi
fi

version=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
echo "ensure-redis: redis-server ${version:-?} ready; tests start private instances from it."
