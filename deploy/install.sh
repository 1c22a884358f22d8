#!/usr/bin/env bash
# Install or upgrade python-worker on a VM, as root. Does not start or restart anything.
#
#   sudo deploy/install.sh [SOURCE]
#
# SOURCE is the project directory (default: the one this script is in) or a built wheel
# (python-worker-X.Y.Z-py3-none-any.whl). Each run makes a new release under
# /opt/python-worker/releases/ and switches /opt/python-worker/venv to it in one atomic
# rename; the previous release stays for a rollback (docs/operations.md, "Roll back").
# Creates, once: the system user python-worker, /var/lib/python-worker (its home and the
# outbox), /etc/python-worker/worker.env (from ENV_EXAMPLE, never overwritten) and the unit.
#
# The dependencies come from requirements.txt, the lock file (exact versions, each file checked
# against its hash), so every VM runs the same ones. WHEELHOUSE=DIR installs offline from a
# directory made by `pip download -r requirements.txt -d DIR` (docs/operations.md, "Offline
# install"); SOURCE is then best a built wheel, which needs no build tools.
#
# Environment: PYTHON (>= 3.11, default /usr/bin/python3), PREFIX (/opt/python-worker), UNIT_DIR
# (/etc/systemd/system), ENV_EXAMPLE (deploy/vm1.env.example), KEEP_RELEASES (3), REQUIREMENTS
# (requirements.txt beside deploy/), WHEELHOUSE (unset: the package index).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="${1:-$(dirname "$HERE")}"
# A system interpreter: the service user must be able to run it (a pyenv under /root is not).
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"
PREFIX="${PREFIX:-/opt/python-worker}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
ENV_EXAMPLE="${ENV_EXAMPLE:-$HERE/vm1.env.example}"
KEEP_RELEASES="${KEEP_RELEASES:-3}"
REQUIREMENTS="${REQUIREMENTS:-$(dirname "$HERE")/requirements.txt}"
WHEELHOUSE="${WHEELHOUSE:-}"
USER_NAME=python-worker
STATE_DIR=/var/lib/python-worker
CONF_DIR=/etc/python-worker

say() { echo "==> $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root (sudo $0)"
[ -e "$SOURCE" ] || die "no such source: $SOURCE"
[ -f "$REQUIREMENTS" ] || die "no lock file at $REQUIREMENTS (set REQUIREMENTS=)"
[ -z "$WHEELHOUSE" ] || [ -d "$WHEELHOUSE" ] || die "no such wheelhouse: $WHEELHOUSE"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "python-worker needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)"

if ! id "$USER_NAME" >/dev/null 2>&1; then
    say "creating system user $USER_NAME"
    useradd --system --user-group --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$USER_NAME"
fi
install -d -o "$USER_NAME" -g "$USER_NAME" -m 0750 "$STATE_DIR" "$STATE_DIR/outbox"
install -d -o root -g "$USER_NAME" -m 0750 "$CONF_DIR"
# The secrets, one file each (systemd credentials, read by root when the unit starts).
install -d -o root -g root -m 0700 "$CONF_DIR/credentials"

release="$PREFIX/releases/$(date -u +%Y%m%dT%H%M%SZ)"
say "installing $SOURCE into $release/venv"
mkdir -p "$PREFIX/releases"
# Until it becomes the current one, a release that fails (a hash mismatch, a smoke test) goes.
trap 'rm -rf "$release"' EXIT
"$PYTHON" -m venv "$release/venv"
pip_install=("$release/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "$WHEELHOUSE" ]; then
    pip_install+=(--no-index --find-links "$WHEELHOUSE")
fi
"${pip_install[@]}" --require-hashes -r "$REQUIREMENTS"
"${pip_install[@]}" --no-deps "$SOURCE"
if ! runuser -u "$USER_NAME" -- "$release/venv/bin/python" -c '' 2>/dev/null; then
    interpreter="$(readlink -f "$release/venv/bin/python")"
    rm -rf "$release"
    die "$USER_NAME cannot run $interpreter (a Python under a private home?): set PYTHON to a \
system-wide Python 3.11+"
fi
version="$("$release/venv/bin/python-worker" --version)"
# The new release must answer before it becomes the current one.
"$release/venv/bin/python-worker" process - <<<'{"id":"install-smoke","type":"sum","payload":{"numbers":[1,2]}}' \
    >/dev/null 2>&1 || die "the new release does not run; $PREFIX/venv is unchanged"
echo "$version" >"$release/VERSION"

if [ -L "$PREFIX/venv" ]; then
    readlink "$PREFIX/venv" >"$PREFIX/previous"
fi
ln -sfn "$release/venv" "$PREFIX/venv.new"
mv -T "$PREFIX/venv.new" "$PREFIX/venv"
trap - EXIT
say "$PREFIX/venv -> $release/venv ($version)"
if [ -f "$HERE/../docs/operations.md" ]; then
    install -D -m 0644 "$HERE/../docs/operations.md" "$PREFIX/docs/operations.md"
fi

# Old releases beyond KEEP_RELEASES go, never the current or the previous one.
current="$(readlink "$PREFIX/venv")"
previous="$(cat "$PREFIX/previous" 2>/dev/null || true)"
ls -1d "$PREFIX"/releases/*/ 2>/dev/null | sort -r | tail -n "+$((KEEP_RELEASES + 1))" \
    | while read -r old; do
        old="${old%/}"
        if [ "$old/venv" != "$current" ] && [ "$old/venv" != "$previous" ]; then
            rm -rf "$old"
        fi
    done

if [ ! -f "$CONF_DIR/worker.env" ]; then
    say "writing $CONF_DIR/worker.env from $(basename "$ENV_EXAMPLE"): edit it before starting"
    install -o root -g "$USER_NAME" -m 0640 "$ENV_EXAMPLE" "$CONF_DIR/worker.env"
fi

install -D -m 0644 "$HERE/python-worker.service" "$UNIT_DIR/python-worker.service"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "unit installed: $UNIT_DIR/python-worker.service (not started)"
cat <<NEXT

Next:
  1. edit $CONF_DIR/worker.env (WORKER_ID, broker, API URLs); put the broker password in
     $CONF_DIR/credentials/rabbitmq-password (and the tokens beside it: docs/operations.md,
     "Secrets")
  2. check it, as the worker's user, with the environment exactly as systemd gives it:
       systemd-run --quiet --wait --pipe --uid=$USER_NAME --gid=$USER_NAME --unit=python-worker-check \\
         -p EnvironmentFile=$CONF_DIR/worker.env -p WorkingDirectory=$STATE_DIR \\
         -p LoadCredential=rabbitmq-password:$CONF_DIR/credentials/rabbitmq-password \\
         -E RABBITMQ_PASSWORD_FILE=/run/credentials/python-worker-check.service/rabbitmq-password \\
         $PREFIX/venv/bin/python-worker check
  3. first install: systemctl enable --now python-worker
     upgrade:       systemctl restart python-worker   (SIGTERM drain: no job is lost)
NEXT
