#!/usr/bin/env bash
# Make sure the rabbitmq-server binaries exist so the integration tests can start private nodes.
#
# Idempotent. Installs Debian's rabbitmq-server when missing (as root, or via passwordless sudo
# on CI runners), then stops and disables the system-wide service the package starts: the tests
# never use it (each session starts its own node on free ports with its own cookie), and a
# stray broker on 5672 only wastes RAM and tempts people into testing against the wrong node.
# Never silently skips: without the binaries and without a way to install them it exits 1.
set -euo pipefail

if [ -n "${RABBITMQ_URL:-}" ]; then
    echo "ensure-rabbitmq: RABBITMQ_URL is set; tests use that broker, nothing to install."
    exit 0
fi

have_rabbitmq() {
    # Debian keeps the real scripts here (/usr/sbin/rabbitmq-server is only a su wrapper);
    # other installs (Homebrew, generic tarball) put them on PATH.
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1
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

if ! have_rabbitmq; then
    if ! can_be_root || ! command -v apt-get >/dev/null 2>&1; then
        cat >&2 <<'EOF'
ensure-rabbitmq: rabbitmq-server is not installed and this script cannot install it
(needs root or passwordless sudo, and apt-get). Either:
  * install it:   sudo apt-get install -y rabbitmq-server   (then re-run this script), or
                  brew install rabbitmq  /  the generic-unix tarball with its sbin/ on PATH
                  (or point RABBITMQ_SCRIPTS_DIR at the directory holding rabbitmq-server), or
  * use a broker you already have:  export RABBITMQ_URL=amqp://guest:guest@HOST:5672/%2F
    (tests that stop/kill/restart the broker are then skipped).
EOF
        exit 1
    fi
    echo "ensure-rabbitmq: installing rabbitmq-server..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi

if ! have_rabbitmq; then
    echo "ensure-rabbitmq: rabbitmq-server still missing after install" >&2
    exit 1
fi

# Stop + disable the package's own node (best effort: containers have neither systemd nor a
# working init; a policy-rc.d may already have kept it from starting).
if can_be_root; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-enabled --quiet rabbitmq-server 2>/dev/null \
            || systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
            as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
            echo "ensure-rabbitmq: stopped and disabled the system rabbitmq-server service"
        fi
    elif [ -x /etc/init.d/rabbitmq-server ]; then
        if as_root /etc/init.d/rabbitmq-server status >/dev/null 2>&1; then
            as_root /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
            echo "ensure-rabbitmq: stopped the system rabbitmq-server service"
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
        fi
    fi
fi

version=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo "(not a .deb)")
echo "ensure-rabbitmq: rabbitmq-server ${version} ready; tests start private nodes from it."
