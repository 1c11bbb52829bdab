"""Who may talk to a socket: loopback-only binds by default, CurveZMQ keys for anything else.

A socket of ours binds to the loopback interface (or ``ipc://``, ``inproc://``) unless it is given
CurveZMQ keys: then it may bind any interface, its traffic is encrypted, and only clients whose
public key sits in the server's clients folder get through (the others fail the handshake and never
reach the service). ``cortexreplay keys`` makes a key pair; docs/protocol.md ("Access control")
says which file goes where.

Key files are ZeroMQ certificates (``NAME.key`` public, ``NAME.key_secret`` secret), read as text:
nothing here, or anywhere on the wire, is unpickled or evaluated.

>>> check_bind("tcp://127.0.0.1:*")
'tcp://127.0.0.1:*'
>>> check_bind("tcp://0.0.0.0:5555")  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: refusing to bind 'tcp://0.0.0.0:5555' without CurveZMQ keys: ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.base import Authenticator
from zmq.auth.thread import ThreadAuthenticator

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
KEYS_HINT = "run `cortexreplay keys --out DIR --name NAME`"


def check_bind(endpoint: str, curve: ServerCurve | None = None) -> str:
    """Return ``endpoint`` if a socket may bind it, else raise a one-line ValueError.

    Loopback TCP, ``ipc://`` and ``inproc://`` are always allowed; any other TCP address (an
    interface, ``*``, ``0.0.0.0``) only with a :class:`ServerCurve`, since without keys anyone on
    the network could send requests.

    >>> check_bind("ipc:///run/encoder.sock")
    'ipc:///run/encoder.sock'
    >>> check_bind("tcp://0.0.0.0:5555", ServerCurve("server.key_secret", "clients"))
    'tcp://0.0.0.0:5555'
    """
    if curve is not None and not isinstance(curve, ServerCurve):
        raise TypeError(f"check_bind needs a ServerCurve (the bind side), but got "
                        f"{type(curve).__name__}")
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return endpoint
    host = urlparse(endpoint.replace("*", "0")).hostname if scheme == "tcp" else None
    if scheme != "tcp" or host is None:
        raise ValueError(f"Invalid endpoint {endpoint!r}: use tcp://127.0.0.1:PORT, ipc://PATH "
                         "or inproc://NAME")
    if host not in LOOPBACK_HOSTS and curve is None:
        raise ValueError(f"refusing to bind {endpoint!r} without CurveZMQ keys: an unauthenticated "
                         "socket binds to the loopback interface only (tcp://127.0.0.1:PORT); to "
                         f"serve other hosts, {KEYS_HINT} and give the server its NAME.key_secret "
                         "and a folder of client .key files (--curve-secret FILE --curve-clients DIR)")
    return endpoint


def make_keys(directory: str | os.PathLike, name: str = "cortexreplay") -> tuple[Path, Path]:
    """Write a new CurveZMQ key pair ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret``.

    Refuses to overwrite either file. Returns ``(public_file, secret_file)``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     public, secret = make_keys(tmp, "server")
    ...     print(public.name, secret.name, oct(secret.stat().st_mode & 0o777))
    server.key server.key_secret 0o600
    """
    _require_curve()
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"Invalid value for the 'name' parameter: a plain file name such as "
                         f"'server' or 'client', but got {name!r}")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ValueError(f"{path} exists: refusing to overwrite a key; pick another --name "
                             "or --out, or delete the old pair first")
    directory.mkdir(parents=True, exist_ok=True)
    # The secret file must never be readable by others: create it 0600 before pyzmq writes it.
    secret.touch(mode=0o600)
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    except BaseException:
        secret.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        raise
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


@dataclass(frozen=True)
class ServerCurve:
    """The bind side's keys: its own secret key file and a folder of allowed clients' ``.key`` files.

    :meth:`apply` makes a socket a CURVE server and starts a ZAP authenticator on the socket's
    context that lets in only the clients whose public key is in ``clients_dir`` (read once, at
    start: restart the service after adding a key). Stop the authenticator when the socket closes.
    One authenticator per ZeroMQ context.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = make_keys(tmp, "server"); _ = make_keys(f"{tmp}/clients", "client")
    ...     context = zmq.Context()
    ...     sock = context.socket(zmq.ROUTER)
    ...     auth = ServerCurve(f"{tmp}/server.key_secret", f"{tmp}/clients").apply(sock)
    ...     print(sock.mechanism == zmq.CURVE, sock.curve_server, len(auth.certs["*"]))
    ...     sock.close(); auth.stop(); context.term()
    True 1 1
    """

    secret_file: str | os.PathLike
    clients_dir: str | os.PathLike

    def apply(self, socket: zmq.Socket) -> ThreadAuthenticator:
        """Set the socket's CURVE server options (before it binds); start and return its authenticator."""
        public, secret = _load_key(self.secret_file, secret=True, option="--curve-secret")
        clients = _client_keys(self.clients_dir)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
        auth = _Authenticator(socket.context)
        try:
            auth.start()
        except zmq.ZMQError as err:
            auth.stop()
            if err.errno == zmq.EADDRINUSE:
                raise ValueError("this ZeroMQ context already has an authenticator: give each "
                                 "Curve-secured service its own zmq.Context") from None
            raise
        auth.configure_curve(domain="*", location=str(self.clients_dir))
        if set(auth.certs.get("*", {})) != set(clients):  # pyzmq logs load errors and goes on
            auth.stop()
            raise ValueError(f"could not load the client keys of {self.clients_dir}")
        return auth


@dataclass(frozen=True)
class ClientCurve:
    """The connect side's keys: its own secret key file and the server's public ``.key`` file.

    The client's ``NAME.key`` must be in the server's clients folder, or the server refuses the
    handshake: the client's requests then go unanswered (its request times out).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = make_keys(tmp, "server"); _ = make_keys(tmp, "client")
    ...     context = zmq.Context()
    ...     sock = context.socket(zmq.DEALER)
    ...     ClientCurve(f"{tmp}/client.key_secret", f"{tmp}/server.key").apply(sock)
    ...     print(sock.mechanism == zmq.CURVE, sock.curve_server)
    ...     sock.close(); context.term()
    True 0
    """

    secret_file: str | os.PathLike
    server_public_file: str | os.PathLike

    def apply(self, socket: zmq.Socket) -> None:
        """Set the socket's CURVE client options (before it connects)."""
        public, secret = _load_key(self.secret_file, secret=True, option="the client's secret key")
        server, _ = _load_key(self.server_public_file, secret=False, option="the server's public key")
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, whose ``stop`` never blocks, even while its context is terminated."""

    STOP_WAIT_S = 2.0

    def stop(self) -> None:
        thread = self.thread
        if self.pipe is not None:
            try:
                self.pipe.send(b"TERMINATE", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # ETERM: someone terminates the context; the message cannot go
        if thread is not None:
            thread.join(self.STOP_WAIT_S)
        if thread is not None and thread.is_alive():
            # pyzmq's asyncio poll in the thread never wakes once the context is terminated (nor
            # may a TERMINATE reach it): close all three sockets here, so that zmq_ctx_term can
            # return; the parked daemon thread then holds no socket.
            for sock in (self.pipe, self.zap_socket, thread.pipe):
                if sock is not None:
                    sock.close(linger=0)
            thread.pipe = None
            self.thread = self.pipe = self.zap_socket = None
            return
        self.thread = None
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        Authenticator.stop(self)  # closes the ZAP socket


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ValueError(f"this libzmq ({zmq.zmq_version()}) was built without CurveZMQ, so it "
                         "cannot use keys: install a pyzmq wheel (it bundles libzmq with "
                         "libsodium) or a libzmq built with curve")


def _load_key(path, secret: bool, option: str) -> tuple[bytes, bytes | None]:
    """(public, secret) z85 keys of a key file, checked, with a one-line error naming the file."""
    _require_curve()
    path = Path(path)
    want = "NAME.key_secret" if secret else "NAME.key"
    fix = f"{KEYS_HINT} and pass its {want} file"
    if not path.is_file():
        raise ValueError(f"no key file {path} ({option}): {fix}")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError):
        public, secret_key = None, None
    keys = [public, secret_key] if secret else [public]
    if any(key is None or not _is_z85_key(key) for key in keys):
        what = "secret key file" if secret else "public key file"
        if secret and public is not None and secret_key is None:
            what += " (it holds a public key only)"
        raise ValueError(f"{path} ({option}) is not a ZeroMQ {what}: {fix}")
    return public, secret_key


def _client_keys(clients_dir) -> list[bytes]:
    """The public keys of every ``*.key`` file in the clients folder (at least one)."""
    clients_dir = Path(clients_dir)
    fix = (f"{KEYS_HINT.replace('NAME', 'client')} and copy DIR/client.key into "
           f"{clients_dir}")
    if not clients_dir.is_dir():
        raise ValueError(f"no clients folder {clients_dir} (--curve-clients): {fix}")
    files = sorted(clients_dir.glob("*.key"))
    if not files:
        raise ValueError(f"no client public keys (*.key) in {clients_dir}: {fix}")
    keys = []
    for path in files:
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError):
            public = None
        if public is None or not _is_z85_key(public):
            raise ValueError(f"{path} is not a ZeroMQ public key file: {fix}")
        keys.append(public)
    return keys


def _is_z85_key(key: bytes) -> bool:
    """A CurveZMQ key in Z85 text: 40 characters that decode to 32 bytes."""
    try:
        return len(key) == 40 and len(zmq.utils.z85.decode(key)) == 32
    except (ValueError, TypeError, KeyError):
        return False


def add_server_curve_arguments(parser, who: str) -> None:
    """``--curve-secret FILE --curve-clients DIR`` of a command that binds (read by `server_curve`)."""
    parser.add_argument("--curve-secret", metavar="FILE", default=None,
                        help=f"{who}'s NAME.key_secret (from 'cortexreplay keys'): encrypt and "
                             "authenticate; with --curve-clients it may bind beyond loopback")
    parser.add_argument("--curve-clients", metavar="DIR", default=None,
                        help="folder of the public .key files of the clients let in")


def server_curve(args) -> ServerCurve | None:
    """The `ServerCurve` of `add_server_curve_arguments`' options, or None without them."""
    if (args.curve_secret is None) != (args.curve_clients is None):
        raise ValueError("--curve-secret and --curve-clients go together: give both or neither")
    return None if args.curve_secret is None else ServerCurve(args.curve_secret, args.curve_clients)
