"""IDX data sets (Fashion-MNIST, MNIST): found on disk, in Debian's package, or downloaded with MD5 checks."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from genlab.data.images import ImageData
from genlab.errors import DataError
from genlab.io import atomic_write
from genlab.limits import require

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class RemoteIDX:
    """Where a built-in IDX data set is published, with the MD5 of each official .gz file."""

    url: str
    md5: dict[str, str]
    system_dir: str  # where a Debian package installs it
    size: dict[str, int] = field(default_factory=dict)  # bytes of each .gz: a download stops there


BUILTIN = {
    "fashion-mnist": RemoteIDX(
        "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",  # the authors' bucket; its website endpoint is http only
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "/usr/share/datasets/fashion-mnist",
        {
            "train-images-idx3-ubyte.gz": 26_421_880,
            "train-labels-idx1-ubyte.gz": 29_515,
            "t10k-images-idx3-ubyte.gz": 4_422_102,
            "t10k-labels-idx1-ubyte.gz": 5_148,
        },
    ),
    "mnist": RemoteIDX(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "/usr/share/datasets/mnist",
        {
            "train-images-idx3-ubyte.gz": 9_912_422,
            "train-labels-idx1-ubyte.gz": 28_881,
            "t10k-images-idx3-ubyte.gz": 1_648_877,
            "t10k-labels-idx1-ubyte.gz": 4_542,
        },
    ),
}
_IDX_DTYPES = {0x08: np.uint8}
# The largest image side an IDX file may declare: far above the MNIST family's 28 (a batch of 64 is 4 GiB
# of floats at 4096), and a 1x65536 image no longer becomes a 65536x65536 model that F.pad fills.
IDX_MAX_SIDE = 4096
MAX_DOWNLOAD = 2**30  # bytes, where the size of a file is not known: every data set genlab fetches is smaller


def _read_header(f: BinaryIO, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) from an IDX header: magic 0, 0, type, number of dimensions, then one uint32 per dimension."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4:
        raise DataError(f"{name}: not an IDX file (bad magic number {head.hex() or 'empty'}); use the original file")
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise DataError(f"{name}: IDX header is truncated; download the file again")
    return np.dtype(_IDX_DTYPES[head[2]]), tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))


def check_image_shape(shape: tuple[int, ...], name: str) -> None:
    """An IDX images file holds (N, H, W) with sides in 1..IDX_MAX_SIDE; DataError otherwise."""
    if len(shape) != 3:
        raise DataError(f"{name}: expected (N, H, W) images, got shape {shape}; point --data at an IDX images file")
    if not (1 <= shape[1] <= IDX_MAX_SIDE and 1 <= shape[2] <= IDX_MAX_SIDE):
        raise DataError(
            f"{name}: {shape[1]}x{shape[2]} images, beyond the 1 to {IDX_MAX_SIDE} pixels a side genlab reads from IDX "
            "files; resize them, or use a folder of image files"
        )


def _open_idx(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def read_idx(path: str | Path, images: bool = False) -> np.ndarray:
    """Parse an IDX file (gzip or raw): the format of the MNIST family (LeCun et al.).

    Streamed, never reading more than the header declares (+1 byte to tell a longer file): a small .gz
    that inflates to gigabytes costs no more than its header's size. images: require (N, H, W).
    """
    path = Path(path)
    try:
        with _open_idx(path) as f:
            dtype, shape = _read_header(f, str(path))
            if images:
                check_image_shape(shape, str(path))
            count = math.prod(shape) * dtype.itemsize
            require(count, f"{path} (its header declares {shape})", "use the original file", DataError)
            body = f.read(count + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress ({e}); delete it so genlab fetches it again") from None
    return _body(body, dtype, shape, count, str(path))


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """IDX bytes -> array; a DataError naming the file for anything malformed."""
    f = io.BytesIO(raw)
    dtype, shape = _read_header(f, name)
    count = math.prod(shape) * dtype.itemsize  # Python ints: a product past 2**63 does not wrap to 0
    return _body(memoryview(raw)[f.tell() :], dtype, shape, count, name)


def _body(body: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    if len(body) < count:
        raise DataError(f"{name}: IDX file is truncated ({len(body)} of {count} bytes); download the file again")
    if len(body) > count:
        raise DataError(f"{name}: IDX file is longer than its header says ({count} bytes); download the file again")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the publishers give MD5: integrity, not security
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, size: int | None = None) -> Path:
    """Fetch url to dest through a temp file of this call's own; keep it only if its size and MD5 match.

    size: the official file's bytes (the download stops past them); None: at most MAX_DOWNLOAD.
    """
    cap = MAX_DOWNLOAD if size is None else size
    by_hand = f"put {dest.name} (MD5 {md5}) in {dest.parent} by hand"

    def fetch(f: BinaryIO) -> None:
        digest, got = hashlib.md5(usedforsecurity=False), 0
        with urllib.request.urlopen(url, timeout=60) as response:
            while block := response.read(min(1 << 20, cap + 1 - got)):
                got += len(block)
                if got > cap:
                    raise DataError(f"{url}: the server sends more than the {cap:,} bytes expected; try again later or {by_hand}")
                digest.update(block)
                f.write(block)
        if size is not None and got != size:
            raise DataError(f"{url}: got {got:,} of {size:,} bytes; try again later or {by_hand}")
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); try again later or {by_hand}")

    try:
        return atomic_write(dest, fetch)  # a unique temp name: two runs fetching at once do not mix their bytes
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise DataError(f"cannot download {url} ({e}); {by_hand}") from None


def default_root(name: str) -> Path:
    return Path(os.environ.get("GENLAB_DATA", Path.home() / ".cache" / "genlab" / "data")) / name


def find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_idx(name: str, root: str | Path | None, download_missing: bool) -> Path:
    """The folder holding a built-in data set's four IDX files: root, the system folder, else a download."""
    spec = BUILTIN[name]
    folders = [Path(root)] if root else [default_root(name)]
    folders.append(Path(spec.system_dir))
    stems = [s for pair in IDX_FILES.values() for s in pair]
    for folder in folders:
        if all(find_idx(folder, s) for s in stems):
            return folder
    if not download_missing:
        hint = "apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else f"put the IDX files in {folders[0]}"
        raise DataError(f"{name} not found in {', '.join(map(str, folders))}; {hint}, or allow download")
    target = folders[0]
    for stem in stems:
        if not find_idx(target, stem):
            gz = f"{stem}.gz"
            download(spec.url + gz, target / gz, spec.md5[gz], spec.size.get(gz))
    return target


def load_idx_split(folder: Path, split: str, source: str) -> ImageData:
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_idx(folder, images_stem), find_idx(folder, labels_stem)
    if images_path is None:
        raise DataError(f"{folder}: no {images_stem}[.gz]; point --data at a folder with the IDX files")
    images = read_idx(images_path, images=True)
    labels = None
    if labels_path is not None:
        labels_np = read_idx(labels_path)
        if labels_np.shape != images.shape[:1]:
            raise DataError(f"{labels_path}: {labels_np.shape[0]} labels for {images.shape[0]} images")
        labels = torch.from_numpy(labels_np.astype(np.int64))
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W)
    return ImageData(tensor, labels, source, (images.shape[1], images.shape[2]))


def is_idx_folder(path: Path) -> bool:
    return path.is_dir() and find_idx(path, IDX_FILES["train"][0]) is not None


def read_idx_header(path: Path) -> tuple[int, ...]:
    """The (N, H, W) an IDX images file declares, reading only its header; DataError if it is not one."""
    try:
        with _open_idx(path) as f:
            _, shape = _read_header(f, str(path))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress ({e}); delete it so genlab fetches it again") from None
    check_image_shape(shape, str(path))
    return shape
