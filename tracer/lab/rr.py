"""Lab traffic: ``python -m skbpath.tracer.lab.rr server|client|closed``.

``server``/``client`` make a TCP request/response load; ``closed`` sends to
closed ports, so the peer drops packets with a reason (TCP answers RST, UDP
an ICMP port unreachable); ``filtered`` sends to the port the lab's firewall
drops (tracer/lab/firewall.nft), so nothing answers.

Each exchange sends a 100-byte request and waits for a 100-byte response on
one connection, so every packet's journey is short and easy to read.
"""

from __future__ import annotations

import socket
import sys
import time

PORT = 5202
SIZE = 100


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def serve(addr: str) -> None:
    """Answer every request with a response of the same size, forever."""
    with socket.create_server((addr, PORT), reuse_port=True) as srv:
        while True:
            conn, _ = srv.accept()
            with conn:
                while (req := _recv_exact(conn, SIZE)) and len(req) == SIZE:
                    conn.sendall(b"r" * SIZE)


def client(addr: str, count: int) -> None:
    """Run ``count`` request/response exchanges against ``addr``; print how long they took."""
    with socket.create_connection((addr, PORT), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        for _ in range(count):
            conn.sendall(b"q" * SIZE)
            if len(_recv_exact(conn, SIZE)) != SIZE:
                raise SystemExit("rr: short response")
        elapsed = time.monotonic() - start
    # bench/attach_cost.py reads this line.
    print(f"rr: {count} exchanges done in {elapsed:.4f} s")


CLOSED_PORT = 9  # discard: nothing listens on it in the lab


def closed(addr: str, count: int) -> None:
    """Try ``count`` TCP connects and UDP datagrams to a closed port on ``addr``."""
    refused = 0
    for _ in range(count):
        try:
            socket.create_connection((addr, CLOSED_PORT), timeout=5).close()
        except ConnectionRefusedError:
            refused += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"x" * 32, (addr, CLOSED_PORT))
    print(f"closed: {refused}/{count} TCP connects refused, {count} UDP datagrams sent")


FILTERED_PORT = 5299  # dropped by tracer/lab/firewall.nft


def filtered(addr: str, count: int) -> None:
    """Try ``count`` TCP connects and UDP datagrams to the firewalled port on ``addr``."""
    timed_out = 0
    for _ in range(count):
        try:
            # The SYN and its retransmissions are dropped: give up after 1.5 s.
            socket.create_connection((addr, FILTERED_PORT), timeout=1.5).close()
        except (TimeoutError, OSError):
            timed_out += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"x" * 32, (addr, FILTERED_PORT))
    print(f"filtered: {timed_out}/{count} TCP connects got no answer, {count} UDP datagrams sent")


def main(argv: list[str]) -> None:
    """Entry point: ``server ADDR`` or ``client ADDR COUNT``."""
    if len(argv) >= 2 and argv[0] == "server":
        serve(argv[1])
    elif len(argv) >= 3 and argv[0] == "client":
        client(argv[1], int(argv[2]))
    elif len(argv) >= 3 and argv[0] == "closed":
        closed(argv[1], int(argv[2]))
    elif len(argv) >= 3 and argv[0] == "filtered":
        filtered(argv[1], int(argv[2]))
    else:
        raise SystemExit(
            "usage: python -m skbpath.tracer.lab.rr server ADDR | client ADDR COUNT | "
            "closed ADDR COUNT | filtered ADDR COUNT"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
