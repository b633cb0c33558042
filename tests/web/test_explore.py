"""The latent explorer's HTTP API: decodes equal the model's own, and bad requests get a 4xx and one line."""

from __future__ import annotations

import http.client
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import crop_to
from genlab.explore import Z_LIMIT, load_explorer, make_server
from genlab.io import to_uint8


@pytest.fixture(scope="module", params=["vae", "gan"])
def served(request, tiny_runs: dict[str, Path]):
    explorer = load_explorer(str(tiny_runs[request.param]))
    server = make_server(explorer, "run")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield explorer, server
    server.shutdown()
    server.server_close()


def call(server, method: str, path: str, body: bytes | str | None = None) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request(method, path, body, {"Content-Type": "application/json"} if body is not None else {})
    resp = conn.getresponse()
    return resp.status, resp.read(), resp.getheader("Content-Type", "")


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_binds_to_this_machine_only_by_default(served) -> None:
    assert served[1].server_address[0] == "127.0.0.1"


def test_decode_over_http_equals_the_models_decode(served) -> None:
    explorer, server = served
    z = torch.randn(1, explorer.latent_dim, generator=torch.Generator().manual_seed(3)).clamp(-3, 3)
    status, body, kind = call(server, "POST", "/api/decode", json.dumps({"z": z[0].tolist()}))
    assert status == 200 and kind == "image/png"
    model = explorer.model
    with torch.no_grad():
        out = model.to_image(model.decode(z)) if explorer.family == "vae" else model.generator(z)
    expected = to_uint8(crop_to(out, explorer.original_size))[0]
    np.testing.assert_array_equal(png_pixels(body), expected[..., 0])  # grey PNG: (H, W)


def test_info_and_directions(served) -> None:
    explorer, server = served
    status, body, _ = call(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and info["family"] == explorer.family and info["latent_dim"] == explorer.latent_dim
    vectors = torch.tensor([d["vector"] for d in info["directions"]])
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(vectors)))
    if explorer.family == "vae":
        kls = [d["kl"] for d in info["directions"]]
        assert kls == sorted(kls, reverse=True)  # by KL, largest first
        assert len(info["map"]["xy"]) == len(info["map"]["labels"]) == min(2000, info["test_images"])
    else:
        assert info["map"] is None and info["directions"][0]["label"].startswith("PC1")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    [
        ("POST", "/api/decode", '{"z": [1, 2]}', 400, "z must be a list of"),
        ("POST", "/api/decode", "not json", 400, "not valid JSON"),
        ("POST", "/api/decode", "[1]", 400, "JSON object"),
        ("POST", "/api/decode", "BIG", 400, "must lie in"),
        ("POST", "/api/decode", "NAN", 400, "finite"),
        ("POST", "/api/decode", "CLASS", 400, "unconditional"),
        ("POST", "/api/decode", "x" * 70_000, 413, "over 65536 bytes"),
        ("GET", "/api/image?index=999999", None, 400, "index must be an integer"),
        ("GET", "/api/image?index=-1", None, 400, "index must be an integer"),
        ("GET", "/static/../../etc/passwd", None, 400, "may not contain '..'"),
        ("GET", "/etc/passwd", None, 404, "unknown path"),
        ("GET", "/api/decode", None, 405, "not allowed"),
        ("PUT", "/api/decode", "{}", 405, "not allowed"),
    ],
)
def test_bad_requests_get_a_4xx_and_one_line(served, method, path, body, status, reason) -> None:
    explorer, server = served
    z = [0.0] * explorer.latent_dim
    body = {
        "BIG": json.dumps({"z": [Z_LIMIT + 1] + z[1:]}),
        "NAN": '{"z": [NaN' + ", 0" * (explorer.latent_dim - 1) + "]}",
        "CLASS": json.dumps({"z": z, "class": 1}),
    }.get(body, body)
    got, text, kind = call(server, method, path, body)
    line = text.decode()
    assert got == status and reason in line and kind.startswith("text/plain")
    assert line.count("\n") == 1 and "Traceback" not in line


def test_gan_has_no_encoder_and_vae_encodes(served) -> None:
    explorer, server = served
    status, body, _ = call(server, "GET", "/api/encode?index=3")
    if explorer.family == "gan":
        assert status == 404 and b"no encoder" in body
        return
    z = json.loads(body)["z"]
    with torch.no_grad():
        mu = explorer._encode(explorer.test.images[3:4])[0]
    assert status == 200 and torch.allclose(torch.tensor(z), mu)


def test_page_is_served_and_self_contained(served) -> None:
    from test_report import external_urls

    status, body, kind = call(served[1], "GET", "/")
    assert status == 200 and kind.startswith("text/html") and external_urls(body.decode()) == []
