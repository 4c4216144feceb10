"""How the launchers of several nodes find each other: node 0's launcher listens on the master
port, the others connect and say who they are; node 0 answers every node's address, in node-rank
order, once all have joined (or refuses a node whose --nnodes/--nproc_per_node disagree).
The messages are one JSON object per line over TCP.
"""

import json
import socket
import time


class RendezvousError(Exception):
    """The nodes could not meet; the message says what to check."""


def _send(conn, message):
    conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return json.loads(data)


def serve_join(master_addr, port, nnodes, nproc, timeout, log):
    """Node 0: waits for the other nnodes-1 launchers; returns every node's host, by node rank."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", port))
    except OSError as e:
        raise RendezvousError("the master port %d is in use on this host (%s): another job's launcher? "
                          "Pick another --master_port (the same on every node)." % (port, e))
    server.listen(nnodes)
    joined = {}                                   # node rank -> (connection, host)
    deadline = time.time() + timeout
    log("waiting for %d other node(s) on port %d" % (nnodes - 1, port))
    try:
        while len(joined) < nnodes - 1:
            if time.time() > deadline:
                missing = [r for r in range(1, nnodes) if r not in joined]
                raise RendezvousError("node(s) %s did not join within %d s: start launch.run on every "
                                  "node with the same --nnodes, --master_addr and --master_port."
                                  % (", ".join(map(str, missing)), timeout))
            server.settimeout(max(deadline - time.time(), 0.01))
            try:
                conn, (host, _) = server.accept()
                conn.settimeout(10)
                hello = _receive(conn)
            except (OSError, ValueError, ConnectionError):
                continue                          # a timeout, or something that is not a launcher
            rank = hello.get("node_rank")
            if hello.get("nnodes") != nnodes or hello.get("nproc") != nproc:
                problem = ("it runs --nnodes=%s --nproc_per_node=%s but node 0 runs %d and %d"
                           % (hello.get("nnodes"), hello.get("nproc"), nnodes, nproc))
            elif rank in joined:
                problem = "node rank %d already joined from %s" % (rank, joined[rank][1])
            else:
                problem = None
            if problem:
                log("refused a node from %s: %s" % (host, problem))
                _send(conn, {"error": problem})
                conn.close()
                continue
            joined[rank] = (conn, host)
            log("node %d joined from %s" % (rank, host))
        hosts = [master_addr] + [joined[r][1] for r in range(1, nnodes)]
        for conn, _ in joined.values():
            _send(conn, {"hosts": hosts})
        return hosts
    finally:
        for conn, _ in joined.values():
            conn.close()
        server.close()


def join(master_addr, port, node_rank, nnodes, nproc, timeout):
    """Nodes 1..n-1: reach the master's launcher; returns every node's host, by node rank."""
    try:
        socket.getaddrinfo(master_addr, port)
    except socket.gaierror as e:
        raise RendezvousError("cannot resolve --master_addr %r: %s." % (master_addr, e))
    deadline = time.time() + timeout
    while True:
        try:
            timeout_now = max(min(5.0, deadline - time.time()), 0.1)
            conn = socket.create_connection((master_addr, port), timeout=timeout_now)
            break
        except OSError as e:
            if time.time() > deadline:
                raise RendezvousError("cannot reach the master at %s:%d within %d s (%s): start "
                                  "launch.run with --node_rank=0 there, and check --master_addr, "
                                  "--master_port and the firewall." % (master_addr, port, timeout, e))
            time.sleep(0.5)
    with conn:
        _send(conn, {"node_rank": node_rank, "nnodes": nnodes, "nproc": nproc})
        conn.settimeout(max(deadline - time.time(), 1.0))
        try:
            reply = _receive(conn)
        except (OSError, ValueError, ConnectionError) as e:
            raise RendezvousError("reached the master at %s:%d, but not every node joined within %d s "
                              "(%s)." % (master_addr, port, timeout, e))
    if "error" in reply:
        raise RendezvousError("the master at %s:%d refused this node: %s."
                              % (master_addr, port, reply["error"]))
    return reply["hosts"]


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are fine
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False
