"""A private, throw-away RabbitMQ cluster for integration tests: private nodes joined as one."""

from __future__ import annotations

import collections
import contextlib
import json
import secrets
import string
import subprocess
import time
from collections.abc import Sequence
from urllib.parse import quote

import pika
import pika.exceptions

from tests.support.rabbitmq_node import (
    LIST_CONNECTIONS,
    Broker,
    QueueCounts,
    RabbitMQNode,
    connection_counts,
)


class RabbitMQCluster(Broker):
    """`size` RabbitMQNodes with one Erlang cookie, joined into one cluster, on free ports.

    As a `Broker` it is the cluster as a client that knows every node sees it: `connect()` tries
    the nodes in turn, `list_queues()` asks one that runs. A single node can be SIGKILLed
    (`node.kill()`) and started again (`node.start()`): its data dir survives, so it comes back
    as the same member. close() kills every node and deletes their dirs.
    """

    controllable = True

    def __init__(self, size: int = 3, name_prefix: str = "pw-cluster") -> None:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        self.nodes = [
            RabbitMQNode(name_prefix=f"{name_prefix}{number}", cookie=cookie)
            for number in range(1, size + 1)
        ]
        super().__init__(self.nodes[0].amqp_url)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> float:
        """Boot every node side by side, join them to the first; returns seconds taken."""
        began = time.monotonic()
        # Spawned from this thread, one after the other: the die-with-parent guard needs the
        # main thread, and the boots still overlap.
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready(timeout)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            # The documented way: a fresh node leaves its own one-node cluster for the seed's.
            node.stop_app()
            node.rabbitmqctl("join_cluster", seed.nodename, timeout=timeout)
            node.start_app()
            node.wait_ready(timeout)
        self.wait_until_running(timeout)
        return time.monotonic() - began

    def ensure_running(self, timeout: float = 120) -> None:
        """Start the nodes a test killed and left down; wait until all run as one cluster."""
        down = [node for node in self.nodes if not node.is_running()]
        for node in down:
            if node.process_alive():
                node.start_app()  # a beam whose app a test stopped
            else:
                node.spawn()
        for node in down:
            node.wait_ready(timeout)
        self.wait_until_running(timeout)

    def wait_until_running(self, timeout: float = 120) -> None:
        """Wait until the cluster lists every node as running."""
        deadline = time.monotonic() + timeout
        wanted = {node.nodename for node in self.nodes}
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = self.running_nodes()
            if seen == wanted:
                return
            time.sleep(0.5)
        raise TimeoutError(f"cluster runs {sorted(seen)}, not all of {sorted(wanted)}")

    def wait_until_safe_to_stop(self, node: RabbitMQNode, timeout: float = 120) -> None:
        """Wait until every quorum queue keeps a majority without `node` (all other members
        online and caught up): what an operator checks before taking a node down."""
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            result = node.cli("rabbitmq-queues", "check_if_node_is_quorum_critical", check=False)
            if result.returncode == 0:
                return
            time.sleep(1)
        detail = f"{result.stdout}{result.stderr}" if result is not None else ""
        raise TimeoutError(f"{node.nodename} is still critical for quorum:\n{detail}")

    def close(self) -> None:
        """Kill every node (nothing in them is worth a graceful stop) and delete their dirs."""
        # Every callback runs, even after one of them raised.
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.callback(node.close)
                stack.callback(node.kill)

    # -- finding things out --------------------------------------------------------------------

    def running(self) -> list[RabbitMQNode]:
        """The nodes whose AMQP listener accepts connections right now."""
        return [node for node in self.nodes if node.is_running()]

    def node_on_port(self, port: int) -> RabbitMQNode:
        """The node whose AMQP listener is on `port`."""
        return next(node for node in self.nodes if node.port == port)

    def url(self, order: Sequence[RabbitMQNode] | None = None) -> str:
        """A RABBITMQ_URL naming every node, in `order` (default: as started), guest login."""
        nodes = ",".join(f"{node.host}:{node.port}" for node in order or self.nodes)
        return f"amqp://guest:guest@{nodes}/{quote('/', safe='')}"

    def rabbitmqctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl on the first node that runs and answers (cluster-wide commands)."""
        failures = []
        for node in self.running():
            try:
                return node.rabbitmqctl(*args, timeout=timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{node.nodename}: {exc}")
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: no node answered; {failures}")

    def running_nodes(self) -> set[str]:
        """Node names the cluster itself reports as running (empty if no node answers)."""
        try:
            out = self.rabbitmqctl("cluster_status", "--formatter", "json").stdout
        except RuntimeError:
            return set()
        return set(json.loads(out)["running_nodes"])

    def list_queues(self) -> dict[str, QueueCounts]:
        """name -> counts for vhost '/', from the first node that answers."""
        failures = []
        for node in self.running():
            try:
                return node.list_queues()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{node.nodename}: {exc}")
        raise RuntimeError(f"list_queues: no node answered; {failures}")

    def queue_counts(self, name: str) -> QueueCounts | None:
        return self.list_queues().get(name)

    def queue_types(self) -> dict[str, str]:
        """name -> type (`classic`, `quorum`) of every queue in vhost '/'."""
        out = self.rabbitmqctl("list_queues", "--quiet", "--formatter", "json", "name", "type")
        return {row["name"]: row["type"] for row in json.loads(out.stdout or "[]")}

    def quorum_members(self, name: str) -> set[str]:
        """The nodes that hold a replica of quorum queue `name`."""
        out = self.rabbitmqctl("list_queues", "--quiet", "--formatter", "json", "name", "members")
        rows = [row for row in json.loads(out.stdout or "[]") if row["name"] == name]
        return set(rows[0]["members"] or []) if rows else set()

    def client_connections(self, node: RabbitMQNode) -> collections.Counter[str]:
        """connection_name -> how many client connections `node` itself serves (asked of any
        node that answers)."""
        return connection_counts(self.rabbitmqctl(*LIST_CONNECTIONS).stdout, node.port)

    # -- as a Broker ---------------------------------------------------------------------------

    def connect(self, **overrides: object) -> pika.BlockingConnection:
        """A connection to the first node that takes it, as a client with the node list does."""
        failure: Exception = pika.exceptions.AMQPConnectionError("no node of the cluster runs")
        for node in self.nodes:
            try:
                return node.connect(**overrides)
            except (pika.exceptions.AMQPError, OSError) as exc:
                failure = exc
        raise failure
