"""Transports for LRAE-VC packets: TCP (length-prefixed, the default) and UDP (one packet per datagram).

TCP framing: each packet is preceded by its length as a big-endian uint32 ("!I"). The receiver
reads with :func:`recv_exact` (a loop: a partial ``recv`` never breaks framing) and refuses a length
above ``wire.MAX_PACKET`` before reading the body, closing that connection (framing is lost).

Receivers are polled: ``poll(timeout)`` returns one :class:`Event` - a packet, a timeout (so the
caller can close frames at their deadlines even when nothing arrives), or a connection opening or
closing (TCP). Sockets are closed in ``finally``/``close()``; errors become one clear log line.

TCP status bytes (receiver -> sender): the receiver serves one connection at a time. On accepting a
connection it writes ``S`` (being served: start sending) or ``W`` (queued behind another sender;
``S`` follows when its turn comes), or ``R`` and closes it when ``max_waiting`` connections already
wait. After an end-of-stream packet it writes ``E`` (end received), so the sender can tell a
delivered stream from one the receiver lost the end of. A message must arrive whole within
``packet_timeout`` s of its first byte (a slow drip is cut off); a waiting connection is closed
after ``max_wait`` s.

Feedback (I/P streams, codec/wire.py "Feedback packets"): over TCP the receiver writes each feedback
packet on the reverse direction as ``F``, its length (big-endian uint32) and the packet, in order with the
status bytes; a receiver never blocks on it (a bounded outbox, flushed without blocking; when it is full,
newer feedback is dropped - each packet repeats the last K frames). Over UDP it sends each as one datagram
to the address the stream's packets came from. Senders read it without blocking between frames
(``feedback()``); after the end packet a TCP sender keeps the feedback that arrives before ``E``.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass

from codec.wire import MAX_PACKET

log = logging.getLogger(__name__)
LENGTH = struct.Struct("!I")
UDP_RCVBUF = 4 << 20
UDP_MAX_DATAGRAM = 65535
TRANSPORTS = ("tcp", "udp")
SERVING, WAITING, REFUSED, END_RECEIVED, FEEDBACK = b"S", b"W", b"R", b"E", b"F"
OUTBOX_LIMIT = 64 << 10  # TCP: feedback bytes a receiver queues for a sender that does not read
MAX_FEEDBACK_READS = 256  # packets a sender takes per feedback() call


@dataclass
class Event:
    kind: str  # "packet", "timeout", "opened", "closed"
    data: bytes = b""
    info: str = ""
    source: tuple | None = None  # UDP: the datagram's source address (where feedback goes)


class PeerClosed(ConnectionError):
    """The peer closed the connection in the middle of a message."""


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes | None:
    """Read exactly n bytes. None if the peer closed cleanly before the first byte; PeerClosed if it
    closed part-way; TimeoutError past ``deadline`` (time.monotonic()) or the socket's own timeout."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{got} of {n} bytes by the deadline")
            sock.settimeout(left)
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
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._await_turn(host, port, max(deadline - time.monotonic(), 5.0))
        self.sock.settimeout(None)
        self.inbox: list[bytes] = []  # feedback packets read, not yet taken
        self.incoming = bytearray()  # reverse-direction bytes not yet parsed
        self.end_received = False
        self.reverse_open = True  # False once the receiver closed its side or broke the framing

    def _await_turn(self, host: str, port: int, wait: float) -> None:
        """Read the receiver's status byte: S go on; W wait (up to ``wait`` s) for S; R or EOF: busy."""
        self.sock.settimeout(wait)
        try:
            status = self.sock.recv(1)
            if status == WAITING:
                log.warning("receiver at %s:%d is busy with another sender: waiting in its queue", host, port)
                status = self.sock.recv(1)
        except TimeoutError:
            self.sock.close()
            raise ConnectionError(f"receiver at {host}:{port} did not let us send within {wait:.0f} s "
                                  "(busy with another sender)") from None
        except OSError as e:
            status = b""
            log.debug("status read failed: %s", e)
        if status != SERVING:
            self.sock.close()
            raise ConnectionError(f"receiver at {host}:{port} refused the stream (busy: too many senders "
                                  "waiting)" if status == REFUSED else f"receiver at {host}:{port} closed "
                                  "the connection before serving it") from None

    def send(self, packet: bytes) -> None:
        try:
            self.sock.sendall(LENGTH.pack(len(packet)) + packet)
        except OSError as e:
            raise ConnectionError(f"receiver went away: {e.strerror or e}") from None

    def feedback(self, wait: float = 0.0) -> list[bytes]:
        """The feedback packets the receiver sent so far (waiting up to ``wait`` s for more); never blocks
        longer, never raises."""
        deadline = time.monotonic() + wait
        while self.reverse_open and not self.end_received:
            ready, _, _ = select.select([self.sock], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready or not self._read():
                break
            if self.inbox and wait:
                wait, deadline = 0.0, time.monotonic()  # something came: take what is there, then return
        out, self.inbox = self.inbox, []
        return out

    def _read(self) -> bool:
        """One recv of reverse-direction bytes into ``inbox``; False when there is nothing more to read."""
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.reverse_open = False
            return False
        self.incoming += data
        while self.incoming and not self.end_received:
            kind = self.incoming[:1]
            if kind == END_RECEIVED:
                self.end_received = True
            elif kind == FEEDBACK:
                if len(self.incoming) < 1 + LENGTH.size:
                    break
                (n,) = LENGTH.unpack_from(self.incoming, 1)
                if n > MAX_PACKET:
                    log.warning("receiver sent a feedback length of %d B (limit %d B): ignoring its feedback",
                                n, MAX_PACKET)
                    self.reverse_open = False
                    return False
                if len(self.incoming) < 1 + LENGTH.size + n:
                    break
                self.inbox.append(bytes(self.incoming[1 + LENGTH.size:1 + LENGTH.size + n]))
                del self.incoming[:1 + LENGTH.size + n]
                continue
            elif kind not in (SERVING, WAITING):
                log.warning("receiver sent an unknown status byte %r: ignoring its feedback", bytes(kind))
                self.reverse_open = False
                return False
            del self.incoming[:1]
        return True

    def finish(self, timeout: float = 30.0) -> bool:
        """After the end packet: close our side and wait for the receiver's ``E`` (it reads the end only
        after everything before it, so a receiver behind its stream answers late); whether it came.
        Feedback arriving before it is kept for ``feedback()``."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(timeout)
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while self.reverse_open and not self.end_received and time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready or not self._read():
                break
        return self.end_received

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

    def feedback(self, wait: float = 0.0) -> list[bytes]:
        """The feedback datagrams the receiver sent back so far (waiting up to ``wait`` s for the first);
        never raises. The socket is connected, so only the receiver's address gets through."""
        out = []
        while len(out) < MAX_FEEDBACK_READS:
            ready, _, _ = select.select([self.sock], [], [], 0.0 if out else max(wait, 0.0))
            if not ready:
                break
            try:
                out.append(self.sock.recv(UDP_MAX_DATAGRAM))
            except ConnectionRefusedError:  # the ICMP error of an earlier datagram, not feedback
                continue
            except OSError as e:
                log.debug("feedback read failed: %s", e)
                break
        return out

    def finish(self, timeout: float = 0.0) -> None:
        """Whether the end arrived is unknown over UDP (None): no acknowledgement comes back."""
        return None

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
    """Serves one sender connection at a time; up to ``max_waiting`` more wait (told ``W``), later ones
    are refused (``R``). Waiting connections are closed after ``max_wait`` s."""

    def __init__(self, host: str, port: int, packet_timeout: float = 2.0, max_waiting: int = 4,
                 max_wait: float = 60.0):
        self.listener = _bind(socket.SOCK_STREAM, host, port)
        self.address = self.listener.getsockname()
        self.conn: socket.socket | None = None
        self.peer = ""
        self.outbox = bytearray()  # reverse-direction bytes (feedback, E) not yet sent
        self.waiting: deque[tuple[socket.socket, str, float]] = deque()
        self.packet_timeout, self.max_waiting, self.max_wait = packet_timeout, max_waiting, max_wait

    def poll(self, timeout: float | None) -> Event:
        self._expire_waiting()
        if self.outbox:
            self._flush()
        if self.conn is None and self.waiting:
            conn, peer, _ = self.waiting.popleft()
            return self._serve(conn, peer)
        socks = [self.listener] + ([self.conn] if self.conn is not None else [])
        ready, _, _ = select.select(socks, [], [], None if timeout is None else max(timeout, 0.0))
        if not ready:
            return Event("timeout")
        if self.listener in ready:
            conn, addr = self.listener.accept()
            peer = f"{addr[0]}:{addr[1]}"
            if self.conn is None:
                return self._serve(conn, peer)
            if len(self.waiting) >= self.max_waiting:
                _status(conn, REFUSED)
                conn.close()
                log.warning("refused %s: %d senders already wait", peer, len(self.waiting))
            elif _status(conn, WAITING):
                self.waiting.append((conn, peer, time.monotonic()))
                log.info("sender %s waits (%d in the queue)", peer, len(self.waiting))
            if self.conn not in ready:
                return Event("timeout")
        try:
            head = recv_exact(self.conn, LENGTH.size, time.monotonic() + self.packet_timeout)
            if head is None:
                return self._drop("sender closed the connection")
            (n,) = LENGTH.unpack(head)
            if n > MAX_PACKET:
                return self._drop(f"bad length prefix {n} B (limit {MAX_PACKET} B); framing lost")
            body = recv_exact(self.conn, n, time.monotonic() + self.packet_timeout) if n else b""
            if body is None:
                return self._drop("connection closed mid-packet (sender killed?)")
            return Event("packet", body)
        except PeerClosed:
            return self._drop("connection closed mid-packet (sender killed?)")
        except TimeoutError:
            return self._drop(f"a packet did not arrive whole within {self.packet_timeout:g} s (too slow)")
        except OSError as e:
            return self._drop(f"connection error: {e.strerror or e}")

    def _serve(self, conn: socket.socket, peer: str) -> Event:
        if not _status(conn, SERVING):
            conn.close()
            return Event("timeout")
        self.conn, self.peer = conn, peer
        self.outbox.clear()
        return Event("opened", info=peer)

    def _expire_waiting(self) -> None:
        now = time.monotonic()
        while self.waiting and now - self.waiting[0][2] > self.max_wait:
            conn, peer, _ = self.waiting.popleft()
            _status(conn, REFUSED)
            conn.close()
            log.warning("closed %s: waited %.0f s for its turn", peer, self.max_wait)

    def acknowledge_end(self) -> None:
        """Tell the sender its end-of-stream packet arrived (``E``, after the feedback queued before it)."""
        if self.conn is not None:
            self.outbox += END_RECEIVED
            self._flush()

    def send_feedback(self, packet: bytes, source: tuple | None = None) -> bool:
        """Queue a feedback packet to the served sender (``source`` is for UDP); False if there is no
        connection or the outbox is full (the sender does not read)."""
        if self.conn is None or len(self.outbox) > OUTBOX_LIMIT:
            return False
        self.outbox += FEEDBACK + LENGTH.pack(len(packet)) + packet
        self._flush()
        return True

    def _flush(self, timeout: float = 0.0) -> None:
        """Send what the outbox holds without blocking (or for up to ``timeout`` s); keep the rest."""
        if self.conn is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self.conn.setblocking(False)
            while self.outbox:
                try:
                    del self.outbox[:self.conn.send(self.outbox)]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [self.conn], [], left)[1]:
                        break
        except OSError as e:
            log.debug("reverse-direction send failed: %s", e)
            self.outbox.clear()
        finally:
            try:
                self.conn.setblocking(True)
            except OSError:
                pass

    def _drop(self, reason: str) -> Event:
        if self.outbox:  # the E and the last feedback, if the sender still reads
            self._flush(timeout=1.0)
        self.outbox.clear()
        self.conn.close()
        self.conn = None
        return Event("closed", info=reason)

    def disconnect(self, reason: str) -> Event | None:
        """Close the current connection (e.g. one that sends nothing valid); None if there is none."""
        return self._drop(reason) if self.conn is not None else None

    def close(self) -> None:
        for conn in [self.conn] + [w[0] for w in self.waiting]:
            if conn is not None:
                conn.close()
        self.waiting.clear()
        self.listener.close()


def _status(conn: socket.socket, status: bytes) -> bool:
    """Write one status byte without blocking; whether it went out."""
    try:
        conn.setblocking(False)
        return conn.send(status) == 1
    except OSError:
        return False
    finally:
        try:
            conn.setblocking(True)
        except OSError:
            pass


class UdpReceiver:
    waiting = ()  # no connections, so nobody waits (TcpReceiver.waiting)

    def __init__(self, host: str, port: int):
        self.sock = _bind(socket.SOCK_DGRAM, host, port)
        self.address = self.sock.getsockname()

    def poll(self, timeout: float | None) -> Event:
        ready, _, _ = select.select([self.sock], [], [], None if timeout is None else max(timeout, 0.0))
        if not ready:
            return Event("timeout")
        try:
            data, source = self.sock.recvfrom(UDP_MAX_DATAGRAM)
        except OSError as e:
            log.warning("UDP receive error: %s", e.strerror or e)
            return Event("timeout")
        return Event("packet", data, source=source)

    def send_feedback(self, packet: bytes, source: tuple | None = None) -> bool:
        """Send a feedback datagram to ``source`` (where the stream's packets come from), without blocking."""
        if source is None:
            return False
        try:
            return self.sock.sendto(packet, getattr(socket, "MSG_DONTWAIT", 0), source) == len(packet)
        except OSError as e:
            log.debug("feedback to %s failed: %s", source, e)
            return False

    def acknowledge_end(self) -> None:
        """No reply channel over UDP."""

    def disconnect(self, reason: str) -> None:
        """Nothing to close over UDP."""
        return None

    def close(self) -> None:
        self.sock.close()


def open_receiver(transport: str, host: str, port: int, **tcp_kwargs):
    if transport == "tcp":
        return TcpReceiver(host, port, **tcp_kwargs)
    if transport == "udp":
        return UdpReceiver(host, port)
    raise ValueError(f"unknown transport {transport!r}; choose from {', '.join(TRANSPORTS)}")
