#!/usr/bin/env python3
"""Drives one berth streaming URL with the official Kubernetes Python client (PyPI `kubernetes`),
a reference client berth did not write, and prints what the client saw as one JSON object.

    k8s_exec.py [--trace] [--protocol P] URL exec                  run to the end; stdout, stderr, returncode
    k8s_exec.py [--trace] [--protocol P] URL stdin LINE...         write each LINE to stdin and read it back from
                                                    stdout (the exec runs `cat`), then close stdin
    k8s_exec.py [--trace] URL portforward PORT LINE [DEADPORT...]
                                                    send LINE to PORT and read it back (an echo
                                                    server); DEADPORTs have no listener: report
                                                    what each one's error channel says

Exec goes through `kubernetes.stream.ws_client.websocket_call(..., _preload_content=False)`, the
function `kubernetes.stream.stream()` hands an exec to, and the `WSClient` it returns (it offers
v5.channel.k8s.io and v4.channel.k8s.io); port forwarding through `portforward_call`, the function
behind `kubernetes.stream.portforward()`, and its `PortForward` (v4.channel.k8s.io).

Run by test/tests/interop.rs with the venv hack/install-deps.sh makes (/opt/berth-test-venv).
--protocol offers only subprotocol P (the client's `sec-websocket-protocol` header) for an exec.
--trace logs the WebSocket handshake and every frame to stderr (websocket-client's own trace).
"""

import json
import signal
import sys
import time

import kubernetes
import websocket
from kubernetes.stream import ws_client

TIMEOUT = 30  # seconds for any one wait
DEADLINE = 60  # seconds for the whole run


class Timeout(Exception):
    pass


def on_alarm(_sig, _frame):
    raise Timeout(f"no result after {DEADLINE}s")


def configuration():
    # Plain http:// (ws://) to berth's streaming server: no auth, no TLS, no proxy.
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1"
    cfg.verify_ssl = False
    return cfg


def run_exec(url, headers, out):
    c = ws_client.websocket_call(configuration(), "GET", url, headers=headers, _preload_content=False)
    out["subprotocol"] = c.subprotocol
    c.run_forever(timeout=TIMEOUT)
    out["closed"] = not c.is_open()
    out["stdout"] = c.read_stdout()
    out["stderr"] = c.read_stderr()
    out["status"] = c.peek_channel(ws_client.ERROR_CHANNEL)
    out["returncode"] = c.returncode
    c.close()


def run_stdin(url, headers, lines, out):
    c = ws_client.websocket_call(configuration(), "GET", url, headers=headers, _preload_content=False)
    out["subprotocol"] = c.subprotocol
    out["echoed"] = []
    for line in lines:
        c.write_stdin(line + "\n")
        out["echoed"].append(c.readline_stdout(timeout=TIMEOUT))
    # v5.channel.k8s.io only (a no-op on v4): `cat` sees EOF and exits.
    c.close_channel(ws_client.STDIN_CHANNEL)
    c.run_forever(timeout=TIMEOUT)
    out["closed"] = not c.is_open()
    out["stdout"] = c.read_stdout()
    out["stderr"] = c.read_stderr()
    out["status"] = c.peek_channel(ws_client.ERROR_CHANNEL)
    out["returncode"] = c.returncode
    c.close()


def recv_all(sock, until_newline):
    buf = b""
    while not (until_newline and buf.endswith(b"\n")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def run_portforward(url, port, line, dead_ports, out):
    ports = [port] + dead_ports
    # The client reads the ports it forwards from `ports` (the API server's parameter); a CRI
    # streaming server (kubelet's, berth's) reads `port`, once per port. Send both.
    query = [("ports", ",".join(str(p) for p in ports))] + [("port", str(p)) for p in ports]
    pf = ws_client.portforward_call(configuration(), "GET", url, query_params=query)
    # As WSClient finds it: websocket-client validates no subprotocol it was not given as a list.
    headers = pf.websocket.getheaders() or {}
    out["subprotocol"] = next((v for k, v in headers.items() if k.lower() == "sec-websocket-protocol"), None)
    s = pf.socket(port)
    s.settimeout(TIMEOUT)
    s.sendall(line.encode() + b"\n")
    out["echoed"] = recv_all(s, True).decode(errors="replace")
    out["errors"] = {}
    for p in dead_ports:
        d = pf.socket(p)
        d.settimeout(TIMEOUT)
        # The client closes a port's socket once its error channel speaks.
        out.setdefault("dead_port_data", {})[str(p)] = recv_all(d, False).decode(errors="replace")
        out["errors"][str(p)] = pf.error(p)
    out["error"] = pf.error(port)
    s.close()
    # With every local socket closed the client's proxy thread closes the WebSocket.
    t0 = time.monotonic()
    while pf.connected and time.monotonic() - t0 < TIMEOUT:
        time.sleep(0.05)
    out["closed"] = not pf.connected


def main(argv):
    trace = "--trace" in argv
    argv = [a for a in argv if a != "--trace"]
    headers = None  # as kubernetes.stream.stream() passes for an exec: the client offers v5 and v4
    if "--protocol" in argv:
        i = argv.index("--protocol")
        headers = {"sec-websocket-protocol": argv[i + 1]}
        del argv[i : i + 2]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, mode, args = argv[1], argv[2], argv[3:]
    if trace:
        websocket.enableTrace(True)
        # create_websocket() turns the trace off before it connects; keep it on.
        ws_client.enableTrace = lambda *_a, **_k: None
    out = {
        "mode": mode,
        "client": f"kubernetes {kubernetes.__version__}, websocket-client {websocket.__version__}",
    }
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE)
    try:
        if mode == "exec":
            run_exec(url, headers, out)
        elif mode == "stdin":
            run_stdin(url, headers, args, out)
        elif mode == "portforward":
            run_portforward(url, int(args[0]), args[1], [int(p) for p in args[2:]], out)
        else:
            print(f"unknown mode {mode!r}", file=sys.stderr)
            return 2
    except Exception as e:  # report what the client raised, with what was seen so far
        out["exception"] = f"{type(e).__name__}: {e}"
    signal.alarm(0)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
