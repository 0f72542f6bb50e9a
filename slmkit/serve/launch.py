"""Running a served app: the port checked before the model loads, HTTP on a thread and the model's loop on the
main thread (OpenMP kernels are slower off it; Batcher.run), and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading

from slmkit.errors import SlmError


def check_port(host: str, port: int) -> None:
    """One clear line, before anything loads, when host:port cannot be listened on."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SlmError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_forever(app, host: str, port: int, log_level: str = "info", max_connections: int = 256) -> None:
    """Serve `app` (create_app's, batcher not started) until Ctrl-C, SIGTERM or the HTTP server ends."""
    import uvicorn

    from slmkit.serve.http import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, host, port, log_level, max_connections))
    http = threading.Thread(target=server.run, name="slmkit-http", daemon=True)
    batcher = app.state.server.batcher
    http.start()

    def stop_when_http_ends() -> None:
        http.join()
        batcher.stop()

    threading.Thread(target=stop_when_http_ends, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: batcher.stop())
    try:
        batcher.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=10)
    print("slm serve: stopped", file=sys.stderr)
