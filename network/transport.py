"""Transports for LRAE-VC packets: TCP (length-prefixed, the default) and UDP (one packet per datagram).

TCP framing: each packet is preceded by its length as a big-endian uint32 ("!I"). The receiver
reads with :func:`recv_exact` (a loop: a partial ``recv`` never breaks framing) and refuses a length
above ``wire.MAX_PACKET`` before reading the body, closing that connection (framing is lost).

Receivers are polled: ``poll(timeout)`` returns one :class:`Event` - a packet, a timeout (so the
caller can close frames at their deadlines even when nothing arrives), or a connection opening or
closing (TCP). Sockets are closed in ``finally``/``close()``; errors become one clear log line.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from dataclasses import dataclass

from codec.wire import MAX_PACKET

log = logging.getLogger(__name__)
LENGTH = struct.Struct("!I")
UDP_RCVBUF = 4 << 20
UDP_MAX_DATAGRAM = 65535
TRANSPORTS = ("tcp", "udp")


@dataclass
class Event:
    kind: str  # "packet", "timeout", "opened", "closed"
    data: bytes = b""
    info: str = ""


class PeerClosed(ConnectionError):
    """The peer closed the connection in the middle of a message."""


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Read exactly n bytes. None if the peer closed cleanly before the first byte; PeerClosed if it
    closed part-way. Socket timeouts propagate (``socket.timeout``)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0:
                return None
            raise PeerClosed(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def _endpoint_error(action: str, host: str, port: int, e: OSError) -> OSError:
    return OSError(f"cannot {action} {host}:{port}: {e.strerror or e}")


# ---------------------------------------------------------------- senders
class TcpSender:
    """Connects (retrying for ``connect_timeout`` s if the receiver is not up yet) and sends packets."""

    def __init__(self, host: str, port: int, connect_timeout: float = 30.0, retry_interval: float = 0.25):
        deadline = time.monotonic() + connect_timeout
        warned = False
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=5.0)
                break
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"no receiver at {host}:{port} after {connect_timeout:.0f} s "
                                          f"({e.strerror or e}); start receiver_decode.py first") from None
                if not warned:
                    log.warning("receiver at %s:%d not reachable (%s); retrying for up to %.0f s",
                                host, port, e.strerror or e, connect_timeout)
                    warned = True
                time.sleep(retry_interval)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, packet: bytes) -> None:
        try:
            self.sock.sendall(LENGTH.pack(len(packet)) + packet)
        except OSError as e:
            raise ConnectionError(f"receiver went away: {e.strerror or e}") from None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()


class UdpSender:
    """Sends each packet as one datagram. Nothing is retried: a lost datagram is a lost packet."""

    def __init__(self, host: str, port: int):
        self.addr = (host, port)
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect(self.addr)
        except OSError as e:
            raise _endpoint_error("send to", host, port, e) from None
        self.refused = 0

    def send(self, packet: bytes) -> None:
        try:
            self.sock.send(packet)
        except ConnectionRefusedError:  # ICMP port unreachable from an earlier datagram
            if not self.refused:
                log.warning("UDP receiver at %s:%d refuses datagrams (not started yet?)", *self.addr)
            self.refused += 1

    def close(self) -> None:
        self.sock.close()


def open_sender(transport: str, host: str, port: int, connect_timeout: float = 30.0):
    if transport == "tcp":
        return TcpSender(host, port, connect_timeout)
    if transport == "udp":
        return UdpSender(host, port)
    raise ValueError(f"unknown transport {transport!r}; choose from {', '.join(TRANSPORTS)}")


# ---------------------------------------------------------------- receivers
def _bind(kind: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(4)
    except OSError as e:
        sock.close()
        raise _endpoint_error("listen on", host, port, e) from None
    return sock


class TcpReceiver:
    """Serves one sender connection at a time; later senders wait in the listen backlog."""

    def __init__(self, host: str, port: int, io_timeout: float = 2.0):
        self.listener = _bind(socket.SOCK_STREAM, host, port)
        self.address = self.listener.getsockname()
        self.conn: socket.socket | None = None
        self.io_timeout = io_timeout

    def poll(self, timeout: float | None) -> Event:
        sock = self.conn or self.listener
        ready, _, _ = select.select([sock], [], [], None if timeout is None else max(timeout, 0.0))
        if not ready:
            return Event("timeout")
        if self.conn is None:
            conn, peer = self.listener.accept()
            conn.settimeout(self.io_timeout)
            self.conn = conn
            return Event("opened", info=f"{peer[0]}:{peer[1]}")
        try:
            head = recv_exact(self.conn, LENGTH.size)
            if head is None:
                return self._drop("sender closed the connection")
            (n,) = LENGTH.unpack(head)
            if n > MAX_PACKET:
                return self._drop(f"bad length prefix {n} B (limit {MAX_PACKET} B); framing lost")
            body = recv_exact(self.conn, n) if n else b""
            if body is None:
                return self._drop("connection closed mid-packet (sender killed?)")
            return Event("packet", body)
        except PeerClosed:
            return self._drop("connection closed mid-packet (sender killed?)")
        except TimeoutError:
            return self._drop(f"connection stalled mid-packet for {self.io_timeout:.0f} s")
        except OSError as e:
            return self._drop(f"connection error: {e.strerror or e}")

    def _drop(self, reason: str) -> Event:
        self.conn.close()
        self.conn = None
        return Event("closed", info=reason)

    def disconnect(self, reason: str) -> Event | None:
        """Close the current connection (e.g. one that sends nothing valid); None if there is none."""
        return self._drop(reason) if self.conn is not None else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


class UdpReceiver:
    def __init__(self, host: str, port: int):
        self.sock = _bind(socket.SOCK_DGRAM, host, port)
        self.address = self.sock.getsockname()

    def poll(self, timeout: float | None) -> Event:
        ready, _, _ = select.select([self.sock], [], [], None if timeout is None else max(timeout, 0.0))
        if not ready:
            return Event("timeout")
        try:
            data, _ = self.sock.recvfrom(UDP_MAX_DATAGRAM)
        except OSError as e:
            log.warning("UDP receive error: %s", e.strerror or e)
            return Event("timeout")
        return Event("packet", data)

    def close(self) -> None:
        self.sock.close()


def open_receiver(transport: str, host: str, port: int):
    if transport == "tcp":
        return TcpReceiver(host, port)
    if transport == "udp":
        return UdpReceiver(host, port)
    raise ValueError(f"unknown transport {transport!r}; choose from {', '.join(TRANSPORTS)}")
