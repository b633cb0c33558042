"""Data: IDX data sets (Fashion-MNIST, MNIST) and image folders, as one uint8 tensor in memory.

Batches are built by indexing that tensor: no per-item PIL work or DataLoader in the hot loop.
Image folders too large for memory stream through a DataLoader with workers instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
_IDX_DTYPES = {0x08: np.uint8}


@dataclass
class ImageData:
    """One split held in memory: uint8 images (N, C, H, W) and optional int64 labels (N,)."""

    images: Tensor
    labels: Tensor | None
    source: str
    original_size: tuple[int, int]

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------- IDX files


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


def _md5(path: Path) -> str:
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
        raise DataError(f"cannot download {url} ({e}); put the file in {dest.parent} by hand") from None
    got = _md5(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); try again later or fetch it by hand")
    os.replace(tmp, dest)
    return dest


def default_root(name: str) -> Path:
    return Path(os.environ.get("GENLAB_DATA", Path.home() / ".cache" / "genlab" / "data")) / name


def _find_idx(folder: Path, stem: str) -> Path | None:
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
        if all(_find_idx(folder, s) for s in stems):
            return folder
    if not download_missing:
        hint = "apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else f"put the IDX files in {folders[0]}"
        raise DataError(f"{name} not found in {', '.join(map(str, folders))}; {hint}, or allow download")
    target = folders[0]
    for stem in stems:
        if not _find_idx(target, stem):
            download(spec.url + f"{stem}.gz", target / f"{stem}.gz", spec.md5[f"{stem}.gz"])
    return target


def load_idx_split(folder: Path, split: str, source: str) -> ImageData:
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find_idx(folder, images_stem), _find_idx(folder, labels_stem)
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


# ---------------------------------------------------------------- image folders


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; pass --data a folder of images or a built-in name")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the path")
    return files


def decode_image(path: Path, channels: int, size: int, center_crop: int | None) -> np.ndarray:
    """One file -> (C, size, size) uint8: center crop, resize, convert mode. DataError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: PIL's convert("L") would clip at 255; rescale to 8 bits instead.
                array = np.asarray(img, dtype=np.float64) / 257.0
                img = Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8), "L")
            img = img.convert("RGB" if channels == 3 else "L")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e}); remove it or set data.skip_bad_files = true") from None
    if min(img.size) < min(size, center_crop or size):
        raise DataError(
            f"{path}: {img.width}x{img.height} is smaller than the model's {size}x{size}; "
            "remove it, lower model.image_size, or set data.skip_bad_files = true"
        )
    if center_crop:
        c = min(center_crop, *img.size)
        left, top = (img.width - c) // 2, (img.height - c) // 2
        img = img.crop((left, top, left + c, top + c))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    array = np.array(img, dtype=np.uint8)  # a writable copy, for torch.from_numpy
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class ImageFolder(torch.utils.data.Dataset):
    """Files under a folder, decoded to (C, size, size) uint8 tensors; for streaming and bulk decoding."""

    def __init__(self, files: list[Path], channels: int, size: int, center_crop: int | None, skip_bad: bool) -> None:
        self.files, self.channels, self.size, self.center_crop, self.skip_bad = files, channels, size, center_crop, skip_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        try:
            return torch.from_numpy(decode_image(self.files[i], self.channels, self.size, self.center_crop))
        except DataError:
            if not self.skip_bad:
                raise
            return torch.empty(0, dtype=torch.uint8)  # dropped by the caller, counted


def load_folder_split(
    folder: Path,
    split: str,
    channels: int,
    size: int,
    center_crop: int | None,
    val_fraction: float,
    skip_bad: bool,
    workers: int,
    max_memory_mb: float,
) -> ImageData | ImageFolder:
    """A folder's train or test split, decoded into memory, or an ImageFolder to stream if too large.

    The split is a fixed function of the sorted file list (not of the seed), so every run agrees on it.
    """
    files = list_images(folder)
    order = np.random.default_rng(0).permutation(len(files))
    n_test = max(1, round(val_fraction * len(files))) if val_fraction > 0 and len(files) > 1 else 0
    chosen = order[-n_test:] if split == "test" and n_test else order[: len(files) - n_test]
    dataset = ImageFolder([files[i] for i in sorted(chosen)], channels, size, center_crop, skip_bad)
    if len(dataset) == 0:
        raise DataError(f"{folder}: too few images for a {split} split; add images")
    if len(dataset) * channels * size * size > max_memory_mb * 2**20:
        return dataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=list)
    decoded = [t for batch in loader for t in batch]
    kept = [t for t in decoded if t.numel()]
    if skip_bad and len(kept) < len(decoded):
        print(f"genlab: skipped {len(decoded) - len(kept)} unreadable or too small image(s) in {folder}")
    if not kept:
        raise DataError(f"{folder}: no readable image of at least {size}x{size} pixels")
    return ImageData(torch.stack(kept), None, str(folder), (size, size))


def _stack_readable(items: list[Tensor]) -> Tensor:
    return torch.stack([t for t in items if t.numel()])  # skipped files come back empty


# ---------------------------------------------------------------- fitting to the model


def fit_images(images: Tensor, channels: int, size: int, mode: str = "pad") -> Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, channels, size, size): gray<->RGB, then centre pad or resize."""
    c = images.shape[1]
    if c == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 luma, as PIL's "L"
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif c != channels:
        raise DataError(f"cannot turn {c}-channel images into {channels}-channel ones; set model channels to 1 or 3")
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images.contiguous()
    if mode == "pad":
        if h > size or w > size:
            raise DataError(f'{h}x{w} images do not fit a {size}x{size} model by padding; set data.fit = "resize"')
        top, left = (size - h) // 2, (size - w) // 2
        # Pad with 0 (-1 after scaling): the black background of the MNIST family.
        return F.pad(images, (left, size - w - left, top, size - h - top)).contiguous()
    out = []
    for chunk in images.split(4096):
        out.append(F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def crop_to(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre crop (..., H, W) to size: undo fit_images' padding for outputs at the data's own size."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(size) or h < size[0] or w < size[1]:
        return images
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def to_float(batch: Tensor) -> Tensor:
    """uint8 pixels -> float in [-1, 1], matching the Tanh output range."""
    return batch.float().div_(127.5).sub_(1.0)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of epoch: a fixed function of (seed, epoch), so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=g)


def iterate_batches(
    data: ImageData | ImageFolder,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Tensor]:
    """uint8 batches of epoch, from batch index start on; the last partial batch is dropped.

    With world_size > 1, global batches hold batch_size * world_size images and rank r gets the
    r-th slice of each: together the ranks see the global batch a single process would.
    """
    n, step = len(data), batch_size * world_size
    order = epoch_order(n, seed, epoch)
    lo, hi = rank * batch_size, (rank + 1) * batch_size
    batches = [order[i * step : (i + 1) * step][lo:hi] for i in range(start, n // step)]
    if isinstance(data, ImageData):
        for idx in batches:
            yield data.images[idx.to(data.images.device)]
        return
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=workers,
        collate_fn=_stack_readable,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader


# ---------------------------------------------------------------- one entry point


def is_idx_folder(path: Path) -> bool:
    return path.is_dir() and _find_idx(path, IDX_FILES["train"][0]) is not None


def load_dataset(cfg, channels: int, size: int) -> tuple[ImageData | ImageFolder, ImageData]:
    """(train, test) for a DataConfig, fitted to the model's channels and square size.

    Train may be an ImageFolder to stream when a folder is larger than cfg.max_memory_mb; test is
    always in memory (validation and pictures read only its first batches).
    """
    name = cfg.dataset
    if name in BUILTIN or is_idx_folder(Path(name)):
        folder = locate_idx(name, cfg.root, cfg.download) if name in BUILTIN else Path(name)
        train = load_idx_split(folder, "train", name)
        has_test = _find_idx(folder, IDX_FILES["test"][0]) is not None
        test = load_idx_split(folder, "test", name) if has_test else train  # else validate on train
        for split in {id(train): train, id(test): test}.values():
            split.images = fit_images(split.images, channels, size, cfg.fit)
        return train, test
    folder = Path(name).expanduser()
    if not folder.exists():
        raise DataError(f"--data {name!r} is neither a built-in data set ({', '.join(BUILTIN)}) nor an existing folder")
    args = (channels, size, cfg.center_crop, cfg.val_fraction, cfg.skip_bad_files, cfg.workers)
    train = load_folder_split(folder, "train", *args, max_memory_mb=cfg.max_memory_mb)
    if cfg.val_fraction > 0:
        test = load_folder_split(folder, "test", *args, max_memory_mb=float("inf"))
    elif isinstance(train, ImageData):
        test = train
    else:
        raise DataError(f"{folder} is streamed from disk and needs a test split; set data.val_fraction > 0")
    return train, test


# ---------------------------------------------------------------- what the data looks like


GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
FOLDER_IMAGE_SIZE = 64  # the notes' model: an image folder trains at 64x64 unless the config says otherwise


def folder_channels(folder: Path, probe: int = 64) -> int:
    """3 if any of the first `probe` images of folder is in colour, else 1 (grey)."""
    for path in list_images(folder)[:probe]:
        try:
            with Image.open(path) as img:
                mode = img.mode
                if mode == "P":  # a palette image is grey only when its palette is
                    img = img.convert("RGB")
                    mode = "L" if np.ptp(np.asarray(img, dtype=np.int16), axis=2).max() == 0 else "RGB"
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            continue  # unreadable files are reported when the data are decoded
        if mode not in GREY_MODES:
            return 3
    return 1


def native_shape(cfg) -> tuple[int, int | None]:
    """(channels, size) of a DataConfig's images as stored; size None where images vary (folders).

    A missing folder gives the grey defaults: load_dataset reports it with the fix.
    """
    name = cfg.dataset
    if name in BUILTIN:
        return 1, 28
    path = Path(name).expanduser()
    if is_idx_folder(path):
        raw = read_idx_header(_find_idx(path, IDX_FILES["train"][0]))
        return 1, raw[-1]
    if path.is_dir():
        return folder_channels(path), None
    return 1, 28


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


def describe(cfg, train, test, channels: int, size: int) -> str:
    """One line: what a run trains on and how the images were fitted to the model."""
    name, shape = cfg.dataset, f"{channels}×{size}×{size}"
    separate = test is not train
    if name in BUILTIN or is_idx_folder(Path(name)):
        h, w = train.original_size
        fitted = "as" if (h, w) == (size, size) else "padded to" if cfg.fit == "pad" else "resized to"
        split = f"{len(train):,} train / {len(test):,} test" if separate else f"{len(train):,} train (validated on train)"
        return f"data: {name}, {split} images (grey {h}×{w}), {fitted} {shape}"
    folder = Path(name).expanduser()
    stored = folder_channels(folder)
    colour = "RGB" if stored == 3 else "grey"
    if stored != channels:
        colour += ", converted to RGB" if channels == 3 else ", converted to grey"
    crop = f"center-cropped to {cfg.center_crop}×{cfg.center_crop} and " if cfg.center_crop else ""
    held = f"{len(train):,} train / {len(test):,} validation" if separate else f"{len(train):,} train (validated on train)"
    total = len(train) + (len(test) if separate else 0)
    return f"data: {total:,} images from {folder} ({colour}), {crop}resized to {shape}; {held}"
