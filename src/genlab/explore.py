"""A latent explorer: a local web page that decodes with the run's model as the user moves sliders.

The server is the standard library's ThreadingHTTPServer: one local user, a handful of JSON and PNG
routes, and no dependency to install or keep up. Every route validates its input and answers a bad
request with a 4xx and a one-line reason; nothing is served from disk but the page itself.

It is still a web server that any page in the user's browser can reach, so it answers only requests
that name it in their Host header (a DNS-rebinding page names its own site), takes POSTs only as
same-origin JSON (what a cross-site form or no-preflight fetch cannot send), and bounds what one
client can hold: a socket timeout, a cap on concurrent handlers, a 64 KiB body.
"""

from __future__ import annotations

import ipaddress
import json
import math
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from genlab.data import crop_to, to_float, vae_input
from genlab.errors import GenlabError
from genlab.io import png_bytes, to_uint8
from genlab.latents import MAX_ROWS, decode, kl_per_dim
from genlab.models import family

Z_LIMIT = 10.0  # |z_i| beyond this is far outside N(0, 1) and surely a client error
MAP_POINTS = 2000  # test images on the 2-D map
MAX_BODY = 1 << 16
REQUEST_TIMEOUT = 10.0  # seconds a connection may stay silent before it is closed
MAX_HANDLERS = 64  # connections served at once; a browser opens 6 per site, the rest wait in the queue
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
GAN_FIT = 4000  # draws of z for the GAN's principal directions


class BadRequest(Exception):
    """A client error: status and a one-line reason."""

    def __init__(self, reason: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Direction:
    label: str
    vector: list[float]
    kl: float | None = None


class Explorer:
    """The model side of the explorer: directions, decode, encode, the map. No HTTP here."""

    def __init__(self, config, model: torch.nn.Module, test, seed: int = 0) -> None:
        self.config, self.model, self.test = config, model.eval(), test
        self.family = config.family
        self.kind = family(config.family).kind
        self.latent_dim = int(config.model.latent_dim)
        self.original_size = tuple(test.original_size)
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()  # one decode at a time: torch already uses every core for one
        self.classes = getattr(config.model, "num_classes", None)  # conditional models: a class picker
        gen = torch.Generator().manual_seed(seed)
        self.directions = self._vae_directions() if self.kind == "vae" else self._gan_directions(gen)
        self.map = self._map() if self.kind == "vae" else None

    @torch.no_grad()
    def _vae_directions(self) -> list[Direction]:
        """The latent axes, by mean KL over test images (the dimensions the model uses first)."""
        kl = kl_per_dim(self.model, self.test.images[:1000], self.config.data.binarize)
        order = torch.argsort(kl, descending=True)[:MAX_ROWS].tolist()
        eye = torch.eye(self.latent_dim)
        return [Direction(f"z{d}", eye[d].tolist(), float(kl[d])) for d in order]

    @torch.no_grad()
    def _gan_directions(self, gen: torch.Generator) -> list[Direction]:
        """GANSpace's recipe on the generator's first layer: PCA of its activations over draws of z,
        then each component carried back into z by least squares; unit length, by explained variance."""
        z = torch.randn(GAN_FIT, self.latent_dim, generator=gen)
        h = self.model.generator.stem(z.to(self.device)).cpu().double()
        h = h - h.mean(0)
        k = min(MAX_ROWS, *h.shape)
        # Randomised PCA: a conv generator's first map has ~10^4 features, where a full SVD takes seconds.
        with torch.random.fork_rng():  # pca_lowrank draws its projection from the global generator: seed a copy
            torch.manual_seed(0)
            _, s, v_h = torch.pca_lowrank(h, q=k, center=False, niter=4)
        coeff = h @ v_h  # (n, k) coordinates along the components
        v = torch.linalg.lstsq(coeff, z.double()).solution  # (k, latent): z ~ coeff @ v
        v = v / v.norm(dim=1, keepdim=True)
        share = (s**2 / h.square().sum()).tolist()
        return [Direction(f"PC{i + 1} ({share[i]:.0%})", v[i].float().tolist()) for i in range(k)]

    @torch.no_grad()
    def _map(self) -> dict[str, Any]:
        """Posterior means of test images projected on their two principal components."""
        n = min(MAP_POINTS, len(self.test))
        mu = self._encode(self.test.images[:n]).numpy().astype(np.float64)
        centred = mu - mu.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        labels = self.test.labels[:n].tolist() if self.test.labels is not None else [0] * n
        return {"xy": np.round(xy, 4).tolist(), "labels": labels, "axes": "principal components 1 and 2 of the test set's μ"}

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        x = vae_input(images.to(self.device), self.config.model.decoder, self.config.data.binarize)
        return self.model.encode(x)[0].cpu()

    def info(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "kind": self.kind,
            "latent_dim": self.latent_dim,
            "directions": [d.__dict__ for d in self.directions],
            "direction_kind": "latent dimensions by KL (nats)"
            if self.kind == "vae"
            else "principal directions of G's first layer",
            "test_images": len(self.test),
            "classes": self.classes,
            "map": self.map,
            "z_limit": Z_LIMIT,
        }

    def parse_z(self, body: Any) -> tuple[torch.Tensor, int | None]:
        if not isinstance(body, dict) or "z" not in body:
            raise BadRequest('the body must be a JSON object {"z": [...]}')
        z = body["z"]
        if not isinstance(z, list) or len(z) != self.latent_dim:
            raise BadRequest(
                f"z must be a list of {self.latent_dim} numbers, got {len(z) if isinstance(z, list) else type(z).__name__}"
            )
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in z)
        if not numbers or any(isinstance(v, float) and not math.isfinite(v) for v in z):
            raise BadRequest("z must hold finite numbers only")
        # Compared as they are: an int of 400 digits overflows a float, but int-float comparison is exact.
        if any(abs(v) > Z_LIMIT for v in z):
            raise BadRequest(f"z values must lie in [-{Z_LIMIT:g}, {Z_LIMIT:g}]")
        label = body.get("class")
        integer = isinstance(label, int) and not isinstance(label, bool)
        if label is not None and (self.classes is None or not integer or not 0 <= label < self.classes):
            raise BadRequest(
                "class given to an unconditional model" if self.classes is None else f"class must be in 0..{self.classes - 1}"
            )
        return torch.tensor(z, dtype=torch.float32).unsqueeze(0), label

    @torch.no_grad()
    def decode(self, z: torch.Tensor, label: int | None = None) -> np.ndarray:
        """(1, latent) -> (H, W, C) uint8 pixels, cropped to the data's own size."""
        with self.lock:
            # A conditional model draws the picked class (0 unless given).
            labels = torch.tensor([label or 0], device=self.device) if self.classes else None
            out = decode(self.model, self.kind, z.to(self.device), labels)
        return to_uint8(crop_to(out.cpu(), self.original_size))[0]

    def index(self, query: dict[str, list[str]]) -> int:
        raw = query.get("index", [""])[0]
        # str.isdigit alone takes '²' and other digits int() refuses; 18 digits stay far below int()'s limit.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) < len(self.test)):
            raise BadRequest(f"index must be an integer in 0..{len(self.test) - 1}")
        return int(raw)

    @torch.no_grad()
    def encode_index(self, i: int) -> list[float]:
        if self.kind != "vae":
            raise BadRequest("a GAN has no encoder: use random draws instead", HTTPStatus.NOT_FOUND)
        with self.lock:
            return self._encode(self.test.images[i : i + 1])[0].tolist()

    def test_image(self, i: int) -> np.ndarray:
        return to_uint8(crop_to(to_float(self.test.images[i : i + 1]), self.original_size))[0]


def make_handler(explorer: Explorer, page: bytes, request_timeout: float = REQUEST_TIMEOUT):
    class Handler(BaseHTTPRequestHandler):
        server_version = "genlab-explore"
        timeout = request_timeout  # set on each socket: a silent or half-sent request is let go, not waited for
        server: ExplorerServer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: the terminal shows the URL and errors only

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # http.server's own refusals (a garbled request line, a header over 64 KiB) as one line too, not HTML.
            self.close_connection = True
            self._fail(HTTPStatus(code), message or HTTPStatus(code).phrase)

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _fail(self, status: HTTPStatus, reason: str) -> None:
            self._send(status, (reason + "\n").encode(), "text/plain; charset=utf-8")

        def _check_caller(self, method: str) -> None:
            """403 unless the Host header names this server and a POST is same-origin JSON."""
            host = self.headers.get("Host")
            # HTTP/1.0 lets a client leave Host out; a browser never does, so no rebinding page can.
            if not (self.server.serves(host) or (host is None and self.request_version == "HTTP/1.0")):
                raise BadRequest(
                    f"the Host header does not name this explorer: open {self.server.url} "
                    "(or restart it with --host NAME to serve it as NAME)",
                    HTTPStatus.FORBIDDEN,
                )
            if method != "POST":
                return
            # A browser sends Origin with every cross-site POST; scripts and curl send none.
            origin = self.headers.get("Origin")
            if origin is not None and origin.lower() != f"http://{host}".lower():
                raise BadRequest("cross-origin POST refused: only the explorer's own page may decode", HTTPStatus.FORBIDDEN)
            # Cross-site forms and no-preflight fetches can only send text/plain, forms and multipart.
            if self.headers.get_content_type() != "application/json":
                raise BadRequest("POST bodies must be JSON: send Content-Type: application/json", HTTPStatus.FORBIDDEN)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            try:
                self._check_caller(method)
                if ".." in url.path or "\\" in url.path:
                    raise BadRequest("paths may not contain '..' or backslashes")
                query = parse_qs(url.query)
                if method == "GET" and url.path in ("/", "/index.html"):
                    return self._send(200, page, "text/html; charset=utf-8")
                if method == "GET" and url.path == "/api/info":
                    return self._send(200, json.dumps(explorer.info()).encode(), "application/json")
                if method == "GET" and url.path == "/api/encode":
                    return self._send(
                        200, json.dumps({"z": explorer.encode_index(explorer.index(query))}).encode(), "application/json"
                    )
                if method == "GET" and url.path == "/api/image":
                    return self._send(200, png_bytes(explorer.test_image(explorer.index(query))), "image/png")
                if method == "POST" and url.path == "/api/decode":
                    z, label = explorer.parse_z(self._json_body())
                    return self._send(200, png_bytes(explorer.decode(z, label)), "image/png")
                known = {"/", "/index.html", "/api/info", "/api/encode", "/api/image", "/api/decode"}
                if url.path in known:
                    raise BadRequest(f"{method} is not allowed on {url.path}", HTTPStatus.METHOD_NOT_ALLOWED)
                raise BadRequest(f"unknown path {url.path}", HTTPStatus.NOT_FOUND)
            except BadRequest as e:
                self._fail(e.status, str(e))

        def _json_body(self) -> Any:
            raw = self.headers.get("Content-Length", "")
            # int() takes '-1', ' 7', '1_0' and non-ASCII digits: only plain digits are a length.
            if "Transfer-Encoding" in self.headers or not (raw.isascii() and raw.isdigit()):
                raise BadRequest("POST bodies need a Content-Length of 0 or more bytes (no chunking)", HTTPStatus.LENGTH_REQUIRED)
            if len(raw) > 9 or int(raw) > MAX_BODY:
                raise BadRequest(f"request body over {MAX_BODY} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            try:
                return json.loads(self.rfile.read(int(raw)) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadRequest("the body is not valid JSON") from None
            except RecursionError:
                raise BadRequest('the body nests too deeply for {"z": [...]}') from None
            except ValueError:  # what json's int() refuses: over sys.get_int_max_str_digits() digits
                raise BadRequest("a number in the body has too many digits") from None

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._fail(HTTPStatus.METHOD_NOT_ALLOWED, "PUT is not allowed")

        def do_DELETE(self) -> None:  # noqa: N802
            self._fail(HTTPStatus.METHOD_NOT_ALLOWED, "DELETE is not allowed")

    return Handler


def render_page(explorer: Explorer, run: str) -> bytes:
    from genlab.templates import asset, page

    return page("explore.html.j2").render(run=run, family=explorer.family, css=asset("style.css")).encode()


def bracketed(host: str) -> str:
    """A host as a Host header spells it: IPv6 addresses in brackets, lower case."""
    return f"[{host}]".lower() if ":" in host else host.lower()


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class ExplorerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that answers only under its own names and serves at most max_handlers
    connections at once; the next connection waits in the listen queue until a handler is free."""

    daemon_threads = True
    block_on_close = False  # Ctrl-C need not wait out a silent client's timeout
    request_queue_size = 1024  # a burst waits to be accepted instead of being refused at connect

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_handlers: int) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_handlers)
        bound = ipaddress.ip_address(self.server_address[0])
        self.local_only = bound.is_loopback
        self.any_address = bound.is_unspecified
        self.names = {*LOOPBACK_NAMES, self.server_address[0], bracketed(address[0])} - {""}
        self.url = f"http://{'127.0.0.1' if bound.is_loopback or bound.is_unspecified else bound}:{self.server_port}/"

    def serves(self, host: str | None) -> bool:
        """Whether a Host header names this server; a DNS-rebinding page sends its own site's name."""
        if host is None:
            return False
        name, colon, port = host.rpartition(":")
        if not colon or "]" in port:  # no port: browsers leave out :80
            name, port = host, "80"
        if port != str(self.server_port):
            return False
        # Bound to every address, the machine is reached by any of its IPs, and an IP cannot be rebound.
        return name.lower() in self.names or (self.any_address and is_ip(name))

    def process_request(self, request, client_address) -> None:
        self.slots.acquire()  # stop accepting until a handler is free: the kernel queues the rest
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no server error
            super().handle_error(request, client_address)


def make_server(
    explorer: Explorer,
    run: str,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = REQUEST_TIMEOUT,
    max_handlers: int = MAX_HANDLERS,
) -> ExplorerServer:
    """A server bound to host:port (0: any free port); serve_forever() to run it. timeout: seconds a
    connection may stay silent; max_handlers: connections served at once."""
    return ExplorerServer((host, port), make_handler(explorer, render_page(explorer, run), timeout), max_handlers)


def load_explorer(run: str, device: str = "cpu") -> Explorer:
    from genlab.runs import load_run, test_split

    config, model, _ = load_run(run, device)
    record = family(config.family)
    if record.conditional and record.kind == "vae":
        raise GenlabError(f"{run} is a conditional VAE; the explorer does not take labels for it yet (conditional GANs work)")
    return Explorer(config, model, test_split(config))


def bench(server: ExplorerServer, explorer: Explorer, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Decode latency over HTTP (request to PNG received), after 10 warm-up requests: ms percentiles."""
    import http.client

    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection(host, port)
    times = []
    for i in range(n + 10):
        body = json.dumps({"z": rng.standard_normal(explorer.latent_dim).clip(-3, 3).tolist()})
        t0 = time.perf_counter()
        conn.request("POST", "/api/decode", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"decode answered {resp.status}")
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1000)
    server.shutdown()
    return {"n": n, "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "max_ms": max(times)}
