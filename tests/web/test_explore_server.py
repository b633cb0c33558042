"""The explorer as a web server: it answers only under its own name, takes same-origin JSON POSTs,
bounds what a client may hold, and answers hostile input with a 4xx and one line, over real HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from genlab.explore import Explorer, load_explorer, make_server


@pytest.fixture(scope="module")
def explorer(tiny_runs: dict[str, Path]) -> Explorer:
    return load_explorer(str(tiny_runs["vae"]))


@contextmanager
def serving(explorer: Explorer, run: str = "run", **options) -> Iterator:
    server = make_server(explorer, run, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(explorer: Explorer):
    with serving(explorer) as server:
        yield server


def z_body(explorer: Explorer) -> str:
    return json.dumps({"z": [0.5] * explorer.latent_dim})


def exchange(server, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes, str]:
    """Send raw bytes, read to the server's close: (status, body, head)."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, head.decode("latin-1")


def post(server, body: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request("POST", "/api/decode", body, headers)
    resp = conn.getresponse()
    return resp.status, resp.read(), resp.getheader("Content-Type", "")


def assert_one_line(status: int, body: bytes, expected: int, reason: str) -> None:
    line = body.decode()
    assert status == expected and reason in line, (status, line)
    assert line.count("\n") == 1 and line.endswith("\n") and "<" not in line


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


# --- Host and Origin: what a DNS-rebinding or cross-site page sends is refused ---------------------


@pytest.mark.parametrize("path", ["/", "/api/info", "/api/image?index=0", "/api/encode?index=0"])
@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "localhost.evil.example:{port}"])
def test_a_host_that_is_not_this_server_is_refused(server, path: str, host: str) -> None:
    port = server.server_port
    status, body, _ = exchange(server, f"GET {path} HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
    assert_one_line(status, body, 403, "Host header does not name this explorer")


def test_an_http11_request_without_host_is_refused(server) -> None:
    status, body, _ = exchange(server, b"GET /api/info HTTP/1.1\r\n\r\n")
    assert_one_line(status, body, 403, "Host header")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}", None])
def test_this_servers_own_names_are_served(server, host: str | None) -> None:
    # None: HTTP/1.0 may leave Host out, and no browser does.
    version, line = ("HTTP/1.1", f"Host: {host.format(port=server.server_port)}\r\n") if host else ("HTTP/1.0", "")
    status, body, _ = exchange(server, f"GET /api/info {version}\r\n{line}\r\n".encode())
    assert status == 200 and "latent_dim" in json.loads(body)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Type": "text/plain"}, "Content-Type: application/json"),  # what a no-preflight fetch sends
        ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type: application/json"),  # a form
        ({}, "Content-Type: application/json"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, "cross-origin"),
        ({"Content-Type": "application/json", "Origin": "null"}, "cross-origin"),  # a sandboxed or file:// page
        ({"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, "cross-origin"),
    ],
)
def test_cross_site_posts_are_refused(server, explorer: Explorer, headers: dict[str, str], reason: str) -> None:
    status, body, _ = post(server, z_body(explorer), headers)
    assert_one_line(status, body, 403, reason)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},  # scripts, the bench
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/json", "Origin": "http://127.0.0.1:{port}"},  # the page itself
    ],
)
def test_same_origin_json_posts_decode(server, explorer: Explorer, headers: dict[str, str]) -> None:
    headers = {k: v.format(port=server.server_port) for k, v in headers.items()}
    status, _, kind = post(server, z_body(explorer), headers)
    assert status == 200 and kind == "image/png"


@pytest.mark.parametrize(("host", "status"), [("192.0.2.7:{port}", 200), ("0.0.0.0:{port}", 200), ("evil.example:{port}", 403)])
def test_bound_to_every_address_any_ip_but_no_other_name_is_served(explorer: Explorer, host: str, status: int) -> None:
    # Reached from the network by one of its IPs; an IP literal cannot be rebound to another machine.
    with serving(explorer, host="0.0.0.0") as server:
        raw = f"GET /api/info HTTP/1.1\r\nHost: {host.format(port=server.server_port)}\r\n\r\n"
        assert exchange(server, raw.encode())[0] == status


def test_no_cors_header_even_for_an_origin(server) -> None:
    origin = "http://evil.example"
    for raw in (f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nOrigin: {origin}\r\n\r\n",
                f"OPTIONS /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nOrigin: {origin}\r\n\r\n"):  # fmt: skip
        _, _, head = exchange(server, raw.encode())
        assert "access-control" not in head.lower()


def test_run_names_are_escaped_in_the_page(explorer: Explorer) -> None:
    with serving(explorer, run="<script>alert(1)</script>") as server:
        status, page, _ = exchange(server, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\n\r\n".encode())
    assert status == 200 and b"<script>alert(1)" not in page and b"&lt;script&gt;alert(1)" in page


# --- Content-Length ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "status", "reason"),
    [
        ("-1", 411, "Content-Length"),  # int() takes it, and rfile.read(-1) reads to the client's close
        ("+5", 411, "Content-Length"),
        ("1_0", 411, "Content-Length"),
        (None, 411, "Content-Length"),
        ("9" * 30, 413, "over 65536 bytes"),
        ("65537", 413, "over 65536 bytes"),
        ("0", 400, "JSON object"),
    ],
)
def test_content_length_must_be_0_to_64_kib(server, length: str | None, status: int, reason: str) -> None:
    head = f"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {length}\r\n" if length is not None else ""
    # The client keeps its side open: a server that waits for more, or for the close, times out here.
    got, body, _ = exchange(server, (head + "\r\n" + '{"z": [0]}').encode(), timeout=3)
    assert_one_line(got, body, status, reason)


def test_a_chunked_body_is_refused(server) -> None:
    raw = (f"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"z\":\r\n0\r\n\r\n")  # fmt: skip
    status, body, _ = exchange(server, raw.encode(), timeout=3)
    assert_one_line(status, body, 411, "Content-Length")


# --- Hostile values: a 400 and one line, never a traceback ----------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"z": [1' + "0" * 400 + "REST]}", "must lie in"),  # overflows float(): math.isfinite raised
        ('{"z": [-1' + "0" * 400 + "REST]}", "must lie in"),
        ('{"z": [' + "1" * 5000 + "REST]}", "too many digits"),  # over int()'s 4,300 digits
        ('{"z": ' + "[" * 30_000 + "]" * 30_000 + "}", "nests too deeply"),  # RecursionError in json
        ('{"z": [1e400REST]}', "finite"),  # json reads it as inf
    ],
)
def test_hostile_z_gets_400_and_no_traceback(server, explorer: Explorer, capsys, body: str, reason: str) -> None:
    body = body.replace("REST", ", 0" * (explorer.latent_dim - 1))
    status, text, _ = post(server, body, {"Content-Type": "application/json"})
    assert_one_line(status, text, 400, reason)
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("index", ["%C2%B2", "%D9%A3", "1" * 5000, "0x1", "1.0", "", "%201"])  # ², Arabic 3
@pytest.mark.parametrize("route", ["/api/image", "/api/encode"])
def test_index_must_be_ascii_digits(server, capsys, route: str, index: str) -> None:
    raw = f"GET {route}?index={index} HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\n\r\n"
    status, body, _ = exchange(server, raw.encode())
    assert_one_line(status, body, 400, "index must be an integer")
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ],
)
def test_http_servers_own_refusals_are_one_line(server, raw: bytes, status: int) -> None:
    got, body, head = exchange(server, raw)
    assert got == status and "text/plain" in head and body.count(b"\n") == 1


# --- Timeouts and the handler cap -----------------------------------------------------------------


def test_idle_connections_are_closed_and_do_not_block_a_decode(explorer: Explorer) -> None:
    with serving(explorer, timeout=0.5) as server:
        address = server.server_address[:2]
        idle = [socket.create_connection(address, timeout=5) for _ in range(50)]
        for s in idle[::2]:  # half of them half-send a request and stall
            s.sendall(f"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nContent-Le".encode())
        try:
            t0 = time.monotonic()
            status, _, _ = post(server, z_body(explorer), {"Content-Type": "application/json"})
            assert status == 200 and time.monotonic() - t0 < 1.0
            for s in idle:  # the server lets each go: recv sees the close, not our 5 s timeout
                assert s.recv(1 << 16) == b""
            assert time.monotonic() - t0 < 3.0
        finally:
            for s in idle:
                s.close()


def test_a_burst_is_queued_and_answered_by_a_bounded_number_of_handlers(explorer: Explorer) -> None:
    with serving(explorer, max_handlers=4) as server:
        body = z_body(explorer)
        request = (f"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()  # fmt: skip
        peak, done, burst = [0], threading.Event(), []

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], handler_threads())
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            t0 = time.monotonic()
            for _ in range(100):
                burst.append(socket.create_connection(server.server_address[:2], timeout=10))
            # A listen queue of 5 drops the rest of a burst, and the kernel retries a dropped connect after 1 s.
            assert time.monotonic() - t0 < 1.0
            for s in burst:
                s.sendall(request)
            answers = []
            for s in burst:
                data = b""
                while chunk := s.recv(1 << 16):
                    data += chunk
                answers.append(data.split(b" ", 2)[1])
        finally:
            done.set()
            watcher.join()
            for s in burst:
                s.close()
        assert answers == [b"200"] * 100 and 1 <= peak[0] <= 4


def test_silent_clients_holding_every_handler_are_let_go(explorer: Explorer) -> None:
    with serving(explorer, timeout=0.3, max_handlers=2) as server:
        idle = [socket.create_connection(server.server_address[:2], timeout=5) for _ in range(2)]
        try:
            time.sleep(0.05)  # both accepted and holding a handler
            t0 = time.monotonic()
            status, _, _ = post(server, z_body(explorer), {"Content-Type": "application/json"})
            assert status == 200 and time.monotonic() - t0 < 2.0
        finally:
            for s in idle:
                s.close()


# --- --host beyond this machine --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "localhost"])
def test_a_host_beyond_this_machine_is_warned_about(tiny_runs: dict[str, Path], capsys, host: str) -> None:
    from genlab.cli import main

    run = str(tiny_runs["vae"])
    assert main(["explore", run, "--host", host, "--port", "0", "--bench", "2"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    if host == "0.0.0.0":
        assert len(warnings) == 1 and "--host 0.0.0.0" in warnings[0] and run in warnings[0]
        assert "model" in warnings[0] and "test images" in warnings[0]
    else:
        assert warnings == []
