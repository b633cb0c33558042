"""A latent explorer: a local web page that decodes with the run's model as the user moves sliders.

The server is the standard library's ThreadingHTTPServer: one local user, a handful of JSON and PNG
routes, and no dependency to install or keep up. Every route validates its input and answers a bad
request with a 4xx and a one-line reason; nothing is served from disk but the page itself.
"""

from __future__ import annotations

import json
import math
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
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in z):
            raise BadRequest("z must hold finite numbers only")
        if max(abs(v) for v in z) > Z_LIMIT:
            raise BadRequest(f"z values must lie in [-{Z_LIMIT:g}, {Z_LIMIT:g}]")
        label = body.get("class")
        if label is not None and (self.classes is None or not isinstance(label, int) or not 0 <= label < self.classes):
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
        raw = query.get("index", [None])[0]
        if raw is None or not raw.isdigit() or int(raw) >= len(self.test):
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


def make_handler(explorer: Explorer, page: bytes):
    class Handler(BaseHTTPRequestHandler):
        server_version = "genlab-explore"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: the terminal shows the URL and errors only

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _fail(self, status: HTTPStatus, reason: str) -> None:
            self._send(status, (reason + "\n").encode(), "text/plain; charset=utf-8")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            try:
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
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise BadRequest("Content-Length must be an integer") from None
            if length > MAX_BODY:
                raise BadRequest(f"request body over {MAX_BODY} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            try:
                return json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadRequest("the body is not valid JSON") from None

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
    from genlab.report import asset, page

    return page("explore.html.j2").render(run=run, family=explorer.family, css=asset("style.css")).encode()


def make_server(explorer: Explorer, run: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to host:port (0: any free port); serve_forever() to run it."""
    server = ThreadingHTTPServer((host, port), make_handler(explorer, render_page(explorer, run)))
    server.daemon_threads = True
    return server


def load_explorer(run: str, device: str = "cpu") -> Explorer:
    from genlab.runs import load_run, test_split

    config, model, _ = load_run(run, device)
    record = family(config.family)
    if record.conditional and record.kind == "vae":
        raise GenlabError(f"{run} is a conditional VAE; the explorer does not take labels for it yet (conditional GANs work)")
    return Explorer(config, model, test_split(config))


def bench(server: ThreadingHTTPServer, explorer: Explorer, n: int = 200, seed: int = 0) -> dict[str, float]:
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
