"""Access control: loopback by default, CurveZMQ keys beyond it, unknown clients refused, no pickle.

Real sockets and real keys made in tmp_path; every test has its own zmq.Context.
"""
import ast
import logging
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from encoders.client import EncoderClient, EncoderError
from encoders.encoding import PrequentialEncoder
from encoders.service import EncoderService
from replay.security import ClientCurve, ServerCurve, check_bind, make_keys
from simulator.cli import main

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LAYERS, LAGS, N_VOXELS, N_FRAMES = ["a"], [0, 1], 3, 6
OPEN = {"layers": LAYERS, "n_voxels": N_VOXELS, "n_units": 2, "lags": LAGS, "alphas": [1.0, 10.0],
        "warmup": 1}


@pytest.fixture
def keys(tmp_path):
    """A server pair, a client pair whose public key is in the server's clients folder, an intruder."""
    server_public, server_secret = make_keys(tmp_path / "server", "server")
    client_public, client_secret = make_keys(tmp_path / "client", "client")
    intruder_public, intruder_secret = make_keys(tmp_path / "intruder", "client")
    clients = tmp_path / "clients"
    clients.mkdir()
    shutil.copy(client_public, clients)
    return {"server": ServerCurve(server_secret, clients),
            "client": ClientCurve(client_secret, server_public),
            "intruder": ClientCurve(intruder_secret, server_public)}


class Served:
    """An EncoderService with Curve keys on all interfaces, answering in a thread."""

    def __init__(self, curve):
        self.context = zmq.Context()
        self.service = EncoderService("tcp://0.0.0.0:*", context=self.context, curve=curve)
        port = self.service.endpoint.rsplit(":", 1)[1]
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def client(self, curve, timeout_s=5.0):
        return EncoderClient(self.endpoint, timeout_s=timeout_s, context=self.context, curve=curve)

    def stop(self, curve):
        if self.thread.is_alive():
            client = self.client(curve)
            try:
                client.shutdown()
            finally:
                client.close()
        self.thread.join(5)


@pytest.fixture
def served(keys):
    s = Served(keys["server"])
    yield s
    s.stop(keys["client"])
    assert not s.thread.is_alive() and not s.service.authenticator.is_alive()
    _term(s.context)  # hangs if the service left a socket (its own or the authenticator's) open


def _term(context, timeout_s=5.0):
    done = threading.Thread(target=context.term, daemon=True)
    done.start()
    done.join(timeout_s)
    assert not done.is_alive(), "context.term() blocked: a socket was left open"


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", "tcp://localhost:5555", "tcp://[::1]:5555",
                                      "ipc:///tmp/encoder.sock", "inproc://encoder"])
def test_loopback_ipc_and_inproc_need_no_keys(endpoint):
    assert check_bind(endpoint) == endpoint


def test_a_loopback_service_without_keys_answers():
    context = zmq.Context()
    service = EncoderService("tcp://127.0.0.1:*", context=context)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    client = EncoderClient(service.endpoint, timeout_s=5, context=context)
    try:
        client.shutdown()
    finally:
        client.close()
    thread.join(5)
    assert not thread.is_alive() and service.authenticator is None
    _term(context)


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:5555", "tcp://192.168.1.10:5555",
                                      "tcp://eth0:5555"])
def test_a_non_loopback_bind_without_keys_is_refused_with_the_fix(endpoint):
    with pytest.raises(ValueError, match=r"refusing to bind .* without CurveZMQ keys: .*"
                                         r"`cortexreplay keys --out DIR --name NAME`.*"
                                         r"--curve-secret FILE --curve-clients DIR") as err:
        check_bind(endpoint)
    assert "\n" not in str(err.value) and repr(endpoint) in str(err.value)
    context = zmq.Context()
    with pytest.raises(ValueError, match="without CurveZMQ keys"):
        EncoderService(endpoint, context=context)
    _term(context)  # the refused service made no socket


def test_a_non_loopback_bind_with_keys_is_allowed(keys):
    assert check_bind("tcp://192.168.1.10:5555", keys["server"]) == "tcp://192.168.1.10:5555"
    with pytest.raises(TypeError, match="needs a ServerCurve"):
        check_bind("tcp://0.0.0.0:5555", keys["client"])


def _trials(seed, n_trials=4):
    rng = np.random.default_rng(seed)
    return [(t % 2, {"a": rng.standard_normal((N_FRAMES, 2)).astype(np.float32)},
             rng.standard_normal((N_FRAMES, N_VOXELS)).astype(np.float32)) for t in range(n_trials)]


def test_an_authorised_client_is_served_on_all_interfaces(served, keys):
    assert served.service.endpoint.startswith("tcp://0.0.0.0:")
    trials = _trials(0)
    local = PrequentialEncoder(LAYERS, OPEN["n_voxels"], OPEN["n_units"], OPEN["lags"],
                               OPEN["alphas"], OPEN["warmup"])
    client = served.client(keys["client"])
    try:
        client.open("run-1", **OPEN)
        for t, (unit, features, frames) in enumerate(trials):
            expected = local.step(t, unit, features, frames)
            np.testing.assert_array_equal(client.trial("run-1", t, unit, features, frames),
                                          [expected[name] for name in LAYERS])
        np.testing.assert_array_equal(client.finish("run-1")["r"][0], local.r()["a"])
    finally:
        client.close()
    assert served.service.errors == 0


def _monitored(client):
    """The client's socket monitor, attached before a fresh connect so it sees the handshake.

    (libzmq gives up on a peer after a failed handshake instead of retrying, and the client
    connected in its constructor, before the monitor existed.)
    """
    monitor = client.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                               | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        client.socket.disconnect(client.endpoint)
    except zmq.ZMQError as err:  # the first attempt already failed and was dropped
        if err.errno != zmq.ENOENT:
            raise
    client.socket.connect(client.endpoint)
    return monitor


def _events(monitor):
    events = []
    while monitor.poll(100):
        events.append(recv_monitor_message(monitor))
    return events


def _refused(client):
    """Send a request that must go unanswered; return what the client's socket monitor saw."""
    monitor = _monitored(client)
    try:
        with pytest.raises(EncoderError, match="no reply from the encoder service"):
            client.shutdown()
        return _events(monitor)
    finally:
        client.socket.disable_monitor()
        monitor.close()
        client.close()


def test_a_client_with_an_unknown_key_gets_no_reply(served, keys, caplog):
    caplog.set_level(logging.DEBUG, logger="zmq.auth")
    events = _refused(served.client(keys["intruder"], timeout_s=1.0))
    failed = [e for e in events if e["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH]
    assert failed and failed[0]["value"] == 400  # the ZAP status code of a refused key
    assert not any(e["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED for e in events)
    assert any("DENIED (CURVE)" in r.getMessage() for r in caplog.records)  # the authenticator said no
    # The request never reached the service (not even as an error), which still serves the others.
    assert served.thread.is_alive() and served.service.errors == 0


def test_a_client_without_curve_gets_no_reply(served):
    events = _refused(served.client(None, timeout_s=1.0))
    assert any(e["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL for e in events)
    assert served.thread.is_alive() and served.service.errors == 0


def test_a_service_with_keys_stops_when_its_context_is_terminated(keys):
    context = zmq.Context()
    service = EncoderService("tcp://127.0.0.1:*", context=context, curve=keys["server"])
    raised = []

    def serve():
        try:
            service.serve_forever()
        except zmq.ZMQError as err:
            raised.append(err.errno)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # One authorised round trip first: the authenticator's thread is up and answering, so the
    # termination below meets a running service, not one still starting.
    client = EncoderClient(f"tcp://127.0.0.1:{service.endpoint.rsplit(':', 1)[1]}", timeout_s=5,
                           context=context, curve=keys["client"])
    client.status()
    client.close()
    _term(context)  # returns once the service and its authenticator have closed their sockets
    thread.join(5)
    assert not thread.is_alive() and raised == [zmq.ETERM]
    assert not service.authenticator.is_alive()


def _bad_key_cases(tmp_path, keys):
    server, clients = keys["server"], Path(keys["server"].clients_dir)
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text('curve\n    public-key = "short"\n    secret-key = "also short"\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_clients = tmp_path / "bad_clients"
    bad_clients.mkdir()
    (bad_clients / "x.key").write_text("not a certificate\n")
    public = Path(keys["client"].server_public_file)
    return {
        "missing secret": (ServerCurve(tmp_path / "nope.key_secret", clients),
                           r"no key file .*nope\.key_secret \(--curve-secret\): run `cortexreplay keys"),
        "public file as secret": (ServerCurve(public, clients),
                                  r"server\.key \(--curve-secret\) is not a ZeroMQ secret key file "
                                  r"\(it holds a public key only\)"),
        "garbage secret": (ServerCurve(garbage, clients), r"garbage\.key_secret .*is not a ZeroMQ secret"),
        "missing clients dir": (ServerCurve(server.secret_file, tmp_path / "nobody"),
                                r"no clients folder .*nobody \(--curve-clients\): run `cortexreplay keys "
                                r"--out DIR --name client` and copy DIR/client\.key into .*nobody"),
        "no client keys": (ServerCurve(server.secret_file, empty),
                           r"no client public keys \(\*\.key\) in .*empty: run `cortexreplay keys"),
        "bad client key": (ServerCurve(server.secret_file, bad_clients),
                           r"x\.key is not a ZeroMQ public key file: run"),
    }


@pytest.mark.parametrize("case", ["missing secret", "public file as secret", "garbage secret",
                                  "missing clients dir", "no client keys", "bad client key"])
def test_bad_key_files_get_one_line_naming_the_file_and_the_fix(tmp_path, keys, case):
    curve, message = _bad_key_cases(tmp_path, keys)[case]
    context = zmq.Context()
    with pytest.raises(ValueError, match=message) as err:
        EncoderService("tcp://0.0.0.0:*", context=context, curve=curve)
    assert "\n" not in str(err.value)
    _term(context)  # the failed service closed its socket and stopped its authenticator


def test_two_services_with_keys_need_two_contexts(keys):
    context = zmq.Context()
    first = EncoderService("tcp://127.0.0.1:*", context=context, curve=keys["server"])
    try:
        with pytest.raises(ValueError, match="already has an authenticator: give each "
                                             "Curve-secured service its own zmq.Context"):
            EncoderService("tcp://127.0.0.1:*", context=context, curve=keys["server"])
    finally:
        first.socket.close()
        first.authenticator.stop()
    _term(context)


def test_a_client_with_a_bad_key_file_fails_before_connecting(tmp_path, keys):
    context = zmq.Context()
    curve = ClientCurve(keys["client"].secret_file, tmp_path / "server.key")
    with pytest.raises(ValueError, match=r"no key file .*server\.key \(the server's public key\)"):
        EncoderClient("tcp://127.0.0.1:5555", context=context, curve=curve)
    _term(context)


def test_a_libzmq_without_curve_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    with pytest.raises(ValueError, match=r"this libzmq \(.*\) was built without CurveZMQ"):
        make_keys(tmp_path, "server")
    assert not list(tmp_path.iterdir())


def test_keys_command_writes_a_pair_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "--name", "lab"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["lab.key", "lab.key_secret"]
    assert f"{out / 'lab.key'} (public)" in printed and str(out / "lab.key_secret") in printed
    assert "--curve-secret" in printed and "--curve-clients" in printed
    assert (out / "lab.key_secret").stat().st_mode & 0o077 == 0  # others cannot read the secret
    zmq.auth.load_certificate(out / "lab.key_secret")  # a valid certificate
    before = (out / "lab.key").read_bytes()
    assert main(["keys", "--out", str(out), "--name", "lab"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"cortexreplay keys: error: .*lab\.key exists: refusing to overwrite a key; .*\n",
                        err), err
    assert (out / "lab.key").read_bytes() == before
    assert main(["keys", "--out", str(out)]) == 0  # the default name
    assert (out / "cortexreplay.key").exists()


def test_encoder_serve_refuses_a_public_bind_without_keys_in_one_line(tmp_path, capsys):
    assert main(["encoder", "serve", "--bind", "tcp://0.0.0.0:*"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "without CurveZMQ keys" in err[0] and "cortexreplay keys" in err[0]
    assert main(["encoder", "serve", "--bind", "tcp://0.0.0.0:*", "--curve-secret", "x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["cortexreplay encoder serve: --curve-secret and --curve-clients go together: "
                   "give both or neither"]


def test_the_service_process_with_keys_serves_an_authorised_client(keys):
    server = keys["server"]
    proc = subprocess.Popen([sys.executable, "-m", "encoders", "--bind", "tcp://0.0.0.0:*",
                             "--curve-secret", str(server.secret_file),
                             "--curve-clients", str(server.clients_dir)],
                            stdout=subprocess.PIPE, text=True)
    context = zmq.Context()
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on tcp://0.0.0.0:"), line
        endpoint = f"tcp://127.0.0.1:{line.rsplit(':', 1)[1]}"
        client = EncoderClient(endpoint, timeout_s=20, context=context, curve=keys["client"])
        try:
            client.shutdown()
        finally:
            client.close()
        assert proc.wait(timeout=20) == 0  # and the authenticator did not keep it alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        context.term()


# Calls and imports that would turn received bytes into objects or code.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_METHODS = {"recv_pyobj", "send_pyobj", "recv_serialized", "send_serialized"}


def _forbidden(source: str, name: str) -> list[str]:
    """Every forbidden import or call in one module's source, as 'name:line what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func, kwargs = node.func, {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where} calls {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS:
                found.append(f"{where} calls .{func.attr}()")
            elif (isinstance(func, ast.Attribute) and func.attr == "load"
                  and isinstance(func.value, ast.Name) and func.value.id == "torch"
                  and not _is_constant(kwargs.get("weights_only"), True)):
                found.append(f"{where} calls torch.load without weights_only=True")
            elif "allow_pickle" in kwargs and not _is_constant(kwargs["allow_pickle"], False):
                found.append(f"{where} passes allow_pickle")
    return found


def _is_constant(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_the_scan_finds_what_it_forbids():
    source = ("import pickle\nfrom dill import loads\neval(x)\nexec(y)\nsock.recv_pyobj()\n"
              "torch.load(f)\nnp.load(f, allow_pickle=True)\n"
              "model.eval()\ntorch.load(f, weights_only=True)\nnp.load(f)\n")  # the last 3 are fine
    assert [hit.split(" ", 1)[0] for hit in _forbidden(source, "m")] == [f"m:{i}" for i in range(1, 8)]


@pytest.mark.parametrize("package", ["replay", "encoders", "simulator"])
def test_nothing_is_unpickled_or_evaluated(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        found += _forbidden(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, found


def test_cortexreplay_run_reaches_a_keyed_service_beyond_loopback(served, keys, tmp_path,
                                                                  tiny_recording, tiny_checkpoint):
    """The main job through an authenticated service bound on every interface."""
    from simulator.cli import main
    from simulator.results import read_runs

    scenario = tmp_path / "scen.toml"
    scenario.write_text("mode = 'frozen'\n[encoder]\nlags = [0, 1]\nwarmup = 2\n")
    port = served.service.endpoint.rsplit(":", 1)[1]
    argv = ["run", str(scenario), "--store", str(tiny_recording), "--results",
            str(tmp_path / "res.zarr"), "--set", f"model.checkpoint={tiny_checkpoint}",
            "--encoder", f"tcp://127.0.0.1:{port}", "--no-progress", "--jobs", "1",
            "--curve-key", str(keys["client"].secret_file),
            "--curve-server", str(keys["client"].server_public_file)]
    assert main(argv) == 0
    (run,) = read_runs(tmp_path / "res.zarr")
    assert run["scores"]["r"].shape[1] == 24 and served.service.trials == 12
    assert main(argv[:-2]) == 2  # --curve-key without --curve-server: refused in one line
