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


def test_builtin_data_sets_come_over_https_with_known_sizes() -> None:
    for spec in data.BUILTIN.values():
        assert spec.url.startswith("https://") and spec.size.keys() == spec.md5.keys()


def test_download_stops_at_the_known_size(server: tuple[str, Path], tmp_path: Path, monkeypatch) -> None:
    url, served = server
    name = "train-images-idx3-ubyte.gz"
    size, digest = (served / name).stat().st_size, md5(served / name)
    with pytest.raises(DataError, match=f"sends more than the {size - 100:,} bytes"):
        data.download(url + name, tmp_path / "long" / name, digest, size - 100)
    with pytest.raises(DataError, match=f"got {size:,} of {size + 1:,} bytes"):
        data.download(url + name, tmp_path / "short" / name, digest, size + 1)
    assert not list((tmp_path / "long").iterdir()) and not list((tmp_path / "short").iterdir())
    monkeypatch.setattr(data.idx, "MAX_DOWNLOAD", size // 2)  # a file of unknown size: the general cap
    with pytest.raises(DataError, match=f"sends more than the {size // 2:,} bytes"):
        data.download(url + name, tmp_path / "unknown" / name, digest)
    spec = data.RemoteIDX(url, {p.name: md5(p) for p in served.iterdir()}, str(tmp_path / "none"), {name: size - 1})
    monkeypatch.setitem(data.BUILTIN, "mnist", spec)
    with pytest.raises(DataError, match="sends more than"):
        data.locate_idx("mnist", tmp_path / "root", download_missing=True)


def test_downloads_do_not_share_a_temporary_file(server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = server
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "dl" / name
    dest.parent.mkdir()
    other = dest.with_name(dest.name + ".part")  # the temporary file of another run fetching the same file
    other.write_bytes(b"another run's bytes")
    data.download(url + name, dest, md5(served / name), (served / name).stat().st_size)
    assert dest.read_bytes() == (served / name).read_bytes() and other.read_bytes() == b"another run's bytes"
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([name, other.name])
