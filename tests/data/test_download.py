"""The download path against a local HTTP server on 127.0.0.1 (tests never reach the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from genlab import data
from genlab.errors import DataError

from conftest import write_idx_dataset


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a throwaway HTTP server holding a small IDX data set."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # a machine's proxy must not see loopback requests
    served = write_idx_dataset(tmp_path / "served", n_train=32, n_test=8)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_the_checksum(server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = server
    name = "t10k-labels-idx1-ubyte.gz"
    got = data.download(url + name, tmp_path / "dl" / name, md5(served / name))
    assert got.read_bytes() == (served / name).read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):
        data.download(url + name, tmp_path / "bad" / name, "0" * 32)
    assert not list((tmp_path / "bad").iterdir())  # nothing half-trusted is left behind
    with pytest.raises(DataError, match="cannot download"):
        data.download(url + "missing.gz", tmp_path / "x" / "missing.gz", "0" * 32)


def test_builtin_data_set_is_fetched_when_missing(server: tuple[str, Path], tmp_path: Path, monkeypatch) -> None:
    url, served = server
    files = {p.name: md5(p) for p in served.iterdir()}
    monkeypatch.setitem(data.BUILTIN, "mnist", data.RemoteIDX(url, files, str(tmp_path / "no-system-copy")))
    folder = data.locate_idx("mnist", tmp_path / "root", download_missing=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    train = data.load_idx_split(folder, "train", "mnist")
    assert train.images.shape == (32, 1, 28, 28) and train.labels is not None
