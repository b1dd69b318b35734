"""A TCP request/response load for the lab: ``python -m tracer.rr server|client``.

Each exchange sends a 100-byte request and waits for a 100-byte response on
one connection, so every packet's journey is short and easy to read.
"""

from __future__ import annotations

import socket
import sys

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
    """Run ``count`` request/response exchanges against ``addr``."""
    with socket.create_connection((addr, PORT), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            conn.sendall(b"q" * SIZE)
            if len(_recv_exact(conn, SIZE)) != SIZE:
                raise SystemExit("rr: short response")
    print(f"rr: {count} exchanges done")


def main(argv: list[str]) -> None:
    """Entry point: ``server ADDR`` or ``client ADDR COUNT``."""
    if len(argv) >= 2 and argv[0] == "server":
        serve(argv[1])
    elif len(argv) >= 3 and argv[0] == "client":
        client(argv[1], int(argv[2]))
    else:
        raise SystemExit("usage: python -m tracer.rr server ADDR | client ADDR COUNT")


if __name__ == "__main__":
    main(sys.argv[1:])
