#!/usr/bin/env bash
# A local stack without Docker: a private RabbitMQ node and the stand-in status API and
# orchestrator, on the ports the worker uses by default, so `python-worker run` needs no settings.
#
#   scripts/dev-stack.sh up       start them (idempotent), print the environment to use
#   scripts/dev-stack.sh env      print that environment again (eval "$(scripts/dev-stack.sh env)")
#   scripts/dev-stack.sh status   say what runs
#   scripts/dev-stack.sh down     stop everything; `down --wipe` also forgets queues and messages
#
# Ports and place, when the defaults are taken: DEV_STACK_AMQP_PORT (5672),
# DEV_STACK_STATUS_PORT (8080), DEV_STACK_ORCHESTRATOR_PORT (8081), DEV_STACK_DIST_PORT (25672,
# Erlang distribution), DEV_STACK_DIR (.dev-stack in the checkout). Everything runs as you, on
# 127.0.0.1 only, with its own Erlang cookie: the system's RabbitMQ service is never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${DEV_STACK_DIR:-$ROOT/.dev-stack}"
AMQP_PORT="${DEV_STACK_AMQP_PORT:-5672}"
STATUS_PORT="${DEV_STACK_STATUS_PORT:-8080}"
ORCHESTRATOR_PORT="${DEV_STACK_ORCHESTRATOR_PORT:-8081}"
DIST_PORT="${DEV_STACK_DIST_PORT:-25672}"
NODENAME="python-worker-dev@localhost"
SCRIPTS_DIR="${RABBITMQ_SCRIPTS_DIR:-/usr/lib/rabbitmq/bin}"
# The Debian package's scripts may be missing on other installs, which have them on PATH.
[ -x "$SCRIPTS_DIR/rabbitmq-server" ] || SCRIPTS_DIR="$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent/x)")"

say() { echo "dev-stack: $*"; }
fail() { echo "dev-stack: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # port seconds what
    local deadline=$((SECONDS + $2))
    until port_open "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# The node's environment: defined only by what follows, never by the caller's RABBITMQ_*/ERL_*
# (a dev shell's RABBITMQ_NODENAME) nor by /etc/rabbitmq/rabbitmq-env.conf.
RABBIT_ENV=(env)
for name in $(env | sed -n 's/^\(RABBITMQ_[A-Z_]*\|ERL_[A-Z_]*\)=.*/\1/p'); do RABBIT_ENV+=(-u "$name"); done
RABBIT_ENV+=(
    HOME="$STATE/rabbitmq/home" LC_ALL=C.UTF-8 LANG=C.UTF-8
    RABBITMQ_NODENAME="$NODENAME"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$AMQP_PORT"
    RABBITMQ_DIST_PORT="$DIST_PORT"
    RABBITMQ_MNESIA_BASE="$STATE/rabbitmq/data"
    RABBITMQ_LOG_BASE="$STATE/rabbitmq/log"
    RABBITMQ_CONFIG_FILE="$STATE/rabbitmq/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$STATE/rabbitmq/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/rabbitmq/enabled_plugins"
    RABBITMQ_CONF_ENV_FILE="$STATE/rabbitmq/rabbitmq-env.conf"
    RABBITMQ_PID_FILE="$STATE/rabbitmq/beam.pid"
    # The script then execs the beam instead of running it under a signal-proxy shell.
    RABBITMQ_ALLOW_INPUT=true RABBITMQ_SERVER_START_ARGS=-noinput
)

# Run "$@" in the background as a session of its own; its pid (the same process all the way
# down, every step execs) goes to $1.pid. Args: name dir log command...
spawn() {
    local name="$1" dir="$2" log="$3"
    shift 3
    (cd "$dir" && echo "$BASHPID" >"$STATE/$name.pid" && exec setsid "$@" </dev/null >>"$log" 2>&1) &
}

print_env() {
    cat <<EOF
export RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT=$AMQP_PORT
export STATUS_UPDATE_URL=http://127.0.0.1:$STATUS_PORT/api/jobs/status
export ORCHESTRATOR_URL=http://127.0.0.1:$ORCHESTRATOR_PORT
EOF
}

start_rabbitmq() {
    if alive "$STATE/rabbitmq.pid"; then
        say "RabbitMQ already runs (pid $(cat "$STATE/rabbitmq.pid"), port $AMQP_PORT)"
        return
    fi
    local dir="$STATE/rabbitmq"
    mkdir -p "$dir/home" "$dir/data" "$dir/log"
    if [ ! -f "$dir/home/.erlang.cookie" ]; then
        # Own cookie: the CLI and the node read it from HOME, never from ~/.erlang.cookie.
        head -c 32 /dev/urandom | base64 | tr -dc A-Z | head -c 20 >"$dir/home/.erlang.cookie"
        chmod 400 "$dir/home/.erlang.cookie"
    fi
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
disk_free_limit.absolute = 50MB
EOF
    echo "[]." >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    rm -f "$STATE/rabbitmq.pid"
    say "starting RabbitMQ on 127.0.0.1:$AMQP_PORT (logs: $dir/log)"
    spawn rabbitmq "$dir" "$dir/log/stdout.log" "${RABBIT_ENV[@]}" "$SCRIPTS_DIR/rabbitmq-server"
    if ! wait_for_port "$AMQP_PORT" 90; then
        tail -n 20 "$dir/log/stdout.log" >&2 || true
        fail "RabbitMQ did not open port $AMQP_PORT within 90 s (log above; \`scripts/dev-stack.sh down\` cleans up)"
    fi
}

start_stand_in() { # name port
    local pid_file="$STATE/$1.pid"
    if alive "$pid_file"; then
        say "the stand-in $1 already runs (pid $(cat "$pid_file"), port $2)"
        return
    fi
    say "starting the stand-in $1 on 127.0.0.1:$2 (log: $STATE/$1.log)"
    spawn "$1" "$ROOT" "$STATE/$1.log" python -m devtools.stand_in_api --host 127.0.0.1 --port "$2"
    wait_for_port "$2" 30 || { tail -n 20 "$STATE/$1.log" >&2; fail "the stand-in $1 did not open port $2"; }
}

stop_pid() { # pid_file what [stop command...]
    local pid_file="$1" what="$2"
    shift 2
    if ! alive "$pid_file"; then
        rm -f "$pid_file"
        return
    fi
    local pid
    pid="$(cat "$pid_file")"
    if [ $# -gt 0 ]; then "$@" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    else kill -TERM "$pid" 2>/dev/null || true; fi
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$what (pid $pid) ignored the stop for 60 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    say "stopped $what"
}

# Before anything starts: a taken port stops `up` with nothing half-started.
port_free_for() { # name port variable-that-sets-the-port
    if ! alive "$STATE/$1.pid" && port_open "$2"; then
        fail "port $2 is taken by another program (\`ss -ltnp 'sport = :$2'\` names it); stop it or set $3"
    fi
}

up() {
    port_free_for rabbitmq "$AMQP_PORT" DEV_STACK_AMQP_PORT
    port_free_for status-api "$STATUS_PORT" DEV_STACK_STATUS_PORT
    port_free_for orchestrator "$ORCHESTRATOR_PORT" DEV_STACK_ORCHESTRATOR_PORT
    mkdir -p "$STATE"
    "$ROOT/scripts/ensure-rabbitmq.sh" >/dev/null
    # shellcheck source=venv.sh
    source "$ROOT/scripts/venv.sh"
    # Erlang starts epmd when none runs and leaves it behind; `down` stops only one we caused.
    pgrep -x epmd >/dev/null || touch "$STATE/epmd.ours"
    start_rabbitmq
    start_stand_in status-api "$STATUS_PORT"
    start_stand_in orchestrator "$ORCHESTRATOR_PORT"
    say "up. The worker's defaults point here; to be explicit (or with other ports):"
    print_env
    say "then: python-worker run    (and in another shell: python-worker publish --type sum --payload '{\"numbers\": [1, 2]}')"
    say "records: curl http://127.0.0.1:$STATUS_PORT/_stand-in/statuses    stop: scripts/dev-stack.sh down"
}

down() {
    stop_pid "$STATE/orchestrator.pid" "the stand-in orchestrator"
    stop_pid "$STATE/status-api.pid" "the stand-in status API"
    stop_pid "$STATE/rabbitmq.pid" "RabbitMQ" "${RABBIT_ENV[@]}" "$SCRIPTS_DIR/rabbitmqctl" stop
    if [ -f "$STATE/epmd.ours" ]; then
        # Only when no other Erlang node still uses it.
        if ! epmd -names 2>/dev/null | grep -q "^name "; then epmd -kill >/dev/null 2>&1 || true; fi
        rm -f "$STATE/epmd.ours"
    fi
    if [ "${1:-}" = "--wipe" ]; then
        rm -rf "$STATE"
        say "wiped $STATE"
    elif [ -d "$STATE" ]; then
        say "down; queues and messages stay in $STATE (\`down --wipe\` forgets them)"
    fi
}

status() {
    local code=0
    for part in rabbitmq:"$AMQP_PORT" status-api:"$STATUS_PORT" orchestrator:"$ORCHESTRATOR_PORT"; do
        local name="${part%%:*}" port="${part##*:}"
        if alive "$STATE/$name.pid"; then
            say "$name runs (pid $(cat "$STATE/$name.pid"), port $port)"
        else
            say "$name is not running"
            code=3
        fi
    done
    return $code
}

case "${1:-}" in
    up) up ;;
    down) down "${2:-}" ;;
    env) print_env ;;
    status) status ;;
    *)
        echo "usage: scripts/dev-stack.sh up | down [--wipe] | env | status" >&2
        exit 2
        ;;
esac
