"""IDX data sets (Fashion-MNIST, MNIST): found on disk, in Debian's package, or downloaded with MD5 checks."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.data.images import ImageData
from genlab.errors import DataError

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


BUILTIN = {
    "fashion-mnist": RemoteIDX(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "/usr/share/datasets/fashion-mnist",
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
    ),
}
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (gzip or raw): the format of the MNIST family (LeCun et al.)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read or decompress ({e}); delete it so genlab fetches it again") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """IDX bytes -> array; a DataError naming the file for anything malformed."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{name}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); use the original file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{name}: IDX header is truncated; download the file again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != count:
        what = "truncated" if len(body) < count else "longer than its header says"
        raise DataError(f"{name}: IDX file is {what} ({len(body)} of {count} bytes); download the file again")
    return np.frombuffer(body, dtype=_IDX_DTYPES[raw[2]]).reshape(shape)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the publishers give MD5: integrity, not security
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """Fetch url to dest through a temp file; keep it only if its MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url} ({e}); put {dest.name} (MD5 {md5}) in {dest.parent} by hand") from None
    got = md5_of(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); try again later or fetch it by hand")
    os.replace(tmp, dest)
    return dest


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
            download(spec.url + f"{stem}.gz", target / f"{stem}.gz", spec.md5[f"{stem}.gz"])
    return target


def load_idx_split(folder: Path, split: str, source: str) -> ImageData:
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_idx(folder, images_stem), find_idx(folder, labels_stem)
    if images_path is None:
        raise DataError(f"{folder}: no {images_stem}[.gz]; point --data at a folder with the IDX files")
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected (N, H, W) images, got shape {images.shape}")
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
    """The shape an IDX file declares, reading only its header."""
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[3] == 0 or head[3] > 4:
            raise DataError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'}); use the original file")
        dims = f.read(4 * head[3])
    return tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(len(dims) // 4))


