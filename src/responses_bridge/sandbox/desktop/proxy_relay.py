"""The browser's way to a proxy that wants a credential, inside the desktop's call (sent with agent.py, before it:
the standard library only, no import of the bridge).

In an agent-sandbox pod the call's egress proxy is behind the bridge's egress door, which admits a connection only
if its first request names the call's credential (``Proxy-Authorization``, from the password of the proxy URL in
``HTTP_PROXY``: sandbox/agent_sandbox/egress_door.py). Chromium takes no credential in ``--proxy-server`` — it would
answer the door's 407 with a sign-in dialog on the screen. So the desktop's process listens on the pod's loopback,
the browser's proxy is that, and each connection's first request head goes on to the door with the credential put
in; the door then hands the whole connection to the call's proxy, which needs nothing more, and the bytes are
relayed both ways as they come. The credential stays in this process (its environment and this relay): the browser,
its pages and every screenshot never hold it. On bubblewrap the proxy URL carries no credential and is used as is.

A head the door and the call's proxy would refuse as too large (over their 32 KiB with the credential put in: a URL
that long) is refused here, as the proxy does — a 400 ``head_too_large`` after its rest is read — where the door,
which finds no credential within its bound, would close it unanswered and the proxy would never hear of it: its
request line's start is kept (:func:`take_refused`) and goes to the bridge with the desktop's next answer
(agent.py), which tells the model as it tells the proxy's refusals (egress_watch.py).

The call's authority, too: under a policy with domain secrets the proxy answers the browser's HTTPS to those hosts
itself, with certificates of the call's own authority (sandbox/egress/tls.py), which code trusts through
``SSL_CERT_FILE`` (the system's authorities, then the call's, last). Chromium reads no such file (its store is
NSS's), so it is told the authority's key instead (:func:`authority_key_hash`: the proxy sends the authority's
certificate after each leaf, and ``--ignore-certificate-errors-spki-list`` accepts a chain holding that key) — the
key of this call's authority only, made for this call and gone with it.
"""

import base64
import contextlib
import hashlib
import socket
import threading
import time
import urllib.parse

RELAY_HEAD_LIMIT = 32 * 1024
"""The door's and the call's proxy's bound on a request head (sandbox/egress/request_head.MAX_HEAD_BYTES), the
credential put in counted."""
RELAY_CHUNK = 64 * 1024
REFUSED_START = 512
"""The start of a refused head's request line that is kept: its method and its target's host."""
REFUSED_KEPT = 20
DISCARD_BYTES, DISCARD_SECONDS = 4 << 20, 1.0
"""What is read and dropped of a head refused (the proxy's refusals.py): the browser then reads its answer, not a
reset."""
TOO_LARGE = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
             b"X-Egress-Outcome: head_too_large\r\nConnection: close\r\n\r\n%s")
_refused: list[bytes] = []
_refused_lock = threading.Lock()


def take_refused() -> list[str]:
    """The starts of the request lines refused here since the last call (and forgotten here), at most
    ``REFUSED_KEPT``."""
    with _refused_lock:
        found = [start.decode("latin-1") for start in _refused]
        _refused.clear()
    return found


def relayed_proxy(url: str | None) -> str | None:
    """The proxy URL the browser is given for ``url``: ``url`` itself without a credential in it, else the
    relay's (started here, serving until the process ends)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None or parts.hostname is None:
        return url
    credential = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password)}"
    header = b"Proxy-Authorization: Basic " + base64.b64encode(credential.encode()) + b"\r\n"
    upstream = (parts.hostname, parts.port or 80)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=_accept, args=(listener, upstream, header), daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def _accept(listener: socket.socket, upstream: tuple[str, int], header: bytes) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, upstream, header), daemon=True).start()


def _relay(client: socket.socket, upstream: tuple[str, int], header: bytes) -> None:
    """One browser connection: its first head with the credential, then both ways until either side ends."""
    server = None
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            piece = client.recv(RELAY_CHUNK)
            if not piece:
                return
            head += piece
            if len(head.split(b"\r\n\r\n", 1)[0]) + 4 + len(header) > RELAY_HEAD_LIMIT:
                _too_large(client, head)
                return
        line_end = head.index(b"\r\n") + 2  # the request line, then the credential, then the browser's headers
        server = socket.create_connection(upstream)
        server.sendall(head[:line_end] + header + head[line_end:])
        back = threading.Thread(target=_pump, args=(server, client), daemon=True)
        back.start()
        _pump(client, server)
        back.join()
    except OSError:
        pass
    finally:
        client.close()
        if server is not None:
            server.close()


def _too_large(client: socket.socket, head: bytes) -> None:
    """Refuse a head past the bound as the call's proxy does, and keep its request line's start to be told."""
    with _refused_lock:
        if len(_refused) < REFUSED_KEPT:
            _refused.append(head.split(b"\r\n", 1)[0][:REFUSED_START])
    body = (f"egress proxy: the request head is over {RELAY_HEAD_LIMIT // 1024} KiB, the proxy's bound: a URL (or "
            "header fields) that long is refused\n").encode()
    client.sendall(TOO_LARGE % (len(body), body))
    left, until = DISCARD_BYTES, time.monotonic() + DISCARD_SECONDS
    with contextlib.suppress(OSError, ValueError):  # a timeout among them; ValueError: the time was up
        while left > 0:
            client.settimeout(until - time.monotonic())
            data = client.recv(min(RELAY_CHUNK, left))
            if not data:
                break
            left -= len(data)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(RELAY_CHUNK)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):  # the other way may still carry its answer: only this way ends
            target.shutdown(socket.SHUT_WR)


def authority_key_hash(bundle: str | None) -> str | None:
    """The base64 SHA-256 of the SubjectPublicKeyInfo of the last certificate in the PEM file ``bundle`` (the
    call's authority, sandbox/egress/tls.py's bundle), or None without one."""
    if not bundle:
        return None
    try:
        with open(bundle, "rb") as found:
            text = found.read()
    except OSError:
        return None
    begin = text.rfind(b"-----BEGIN CERTIFICATE-----")
    end = text.find(b"-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return None
    der = base64.b64decode(b"".join(text[begin:end].splitlines()[1:]))
    try:
        _, certificate, _ = _element(der, 0)
        _, tbs, tbs_end = _element(der, certificate)  # the certificate's first element: what is signed
        fields: list[bytes] = []
        at = tbs
        while at < tbs_end and len(fields) < 7:
            start = at
            tag, _, at = _element(der, at)
            if not (tag == 0xA0 and not fields):  # the version, [0], when there is one
                fields.append(der[start:at])
        spki = fields[5]  # serial, signature algorithm, issuer, validity, subject, then the key
    except (IndexError, ValueError):
        return None
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at ``at``: its tag, where its contents start, and where it ends."""
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("a DER length this file cannot hold")
        length, at = int.from_bytes(der[at:at + count], "big"), at + count
    if at + length > len(der):
        raise ValueError("a DER element past the end")
    return tag, at, at + length
