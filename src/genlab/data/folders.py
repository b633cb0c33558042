"""Folders of image files: decoded in bulk into memory, or streamed when too large."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.data.images import ImageData
from genlab.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
FOLDER_IMAGE_SIZE = 64  # the notes' model: an image folder trains at 64x64 unless the config says otherwise
# What Pillow raises for a file that is not an image, or for an image too large to decode (a decompression
# bomb: Pillow warns past Image.MAX_IMAGE_PIXELS, raised here as an error, and refuses past twice that).
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


@functools.cache
def image_formats() -> tuple[str, ...]:
    """Pillow's formats for IMAGE_SUFFIXES, the only decoders a folder's files reach: a file named .png that
    holds EPS is refused, not handed to the EPS plugin (which runs Ghostscript on it)."""
    by_suffix = Image.registered_extensions()
    return tuple(sorted({by_suffix[s] for s in IMAGE_SUFFIXES if by_suffix.get(s) in Image.OPEN}))


@contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """Image.open restricted to image_formats(), a decompression bomb raised (one of UNREADABLE) while open."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=image_formats()) as img:
            yield img


def walk_files(folder: Path) -> list[Path]:
    """Every file under folder, at any depth (a stack, not recursion: a folder 1,500 levels deep is fine);
    as with Path.rglob, links to folders are not followed and folders it may not read are passed over."""
    files, stack = [], [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as scan:
                entries = list(scan)
        except PermissionError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file():
                files.append(Path(entry.path))
    return files


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; pass --data a folder of images or a built-in name")
    files = sorted(p for p in walk_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the path")
    return files


def folder_classes(folder: Path, files: list[Path]) -> list[int] | None:
    """Each file's class: the index of its top-level subfolder (sorted names), when every image sits in
    one of at least two subfolders; None otherwise (an unlabelled folder)."""
    tops = [p.relative_to(folder).parts for p in files]
    if any(len(parts) < 2 for parts in tops):
        return None
    names = sorted({parts[0] for parts in tops})
    if len(names) < 2:
        return None
    index = {name: i for i, name in enumerate(names)}
    return [index[parts[0]] for parts in tops]


def decode_image(path: Path, channels: int, size: int, center_crop: int | None) -> np.ndarray:
    """One file -> (C, size, size) uint8: center crop, resize, convert mode. DataError if unreadable."""
    try:
        with opened_image(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: PIL's convert("L") would clip at 255; rescale to 8 bits instead.
                array = np.asarray(img, dtype=np.float64) / 257.0
                img = Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8), "L")
            img = img.convert("RGB" if channels == 3 else "L")
    except UNREADABLE as e:
        raise DataError(f"{path}: not a readable image ({e}); remove it or set data.skip_bad_files = true") from None
    if min(img.size) < min(size, center_crop or size):
        raise DataError(
            f"{path}: {img.width}x{img.height} is smaller than the model's {size}x{size}; "
            "remove it, lower the model's size (model.image_size; model.img_shape for the GANs), "
            "or set data.skip_bad_files = true"
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
    chosen = sorted(chosen)
    classes = folder_classes(folder, files)
    dataset = ImageFolder([files[i] for i in chosen], channels, size, center_crop, skip_bad)
    if len(dataset) == 0:
        raise DataError(f"{folder}: too few images for a {split} split; add images")
    if len(dataset) * channels * size * size > max_memory_mb * 2**20:
        return dataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=list)
    try:
        decoded = [t for batch in loader for t in batch]
    except DataError as e:  # from a worker, the message carries the worker's traceback: keep its last line
        raise DataError(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None
    kept = [t for t in decoded if t.numel()]
    labels = None
    if classes is not None:  # the subfolder of each kept image
        labels = torch.tensor([classes[i] for i, t in zip(chosen, decoded) if t.numel()], dtype=torch.int64)
    if skip_bad and len(kept) < len(decoded):
        print(f"genlab: skipped {len(decoded) - len(kept)} unreadable or too small image(s) in {folder}")
    if not kept:
        raise DataError(f"{folder}: no readable image of at least {size}x{size} pixels")
    return ImageData(torch.stack(kept), labels, str(folder), (size, size))


def folder_channels(folder: Path, probe: int = 64) -> int:
    """3 if any of the first `probe` images of folder is in colour, else 1 (grey)."""
    for path in list_images(folder)[:probe]:
        try:
            with opened_image(path) as img:
                mode = img.mode
                if mode == "P":  # a palette image is grey only when its palette is
                    img = img.convert("RGB")
                    mode = "L" if np.ptp(np.asarray(img, dtype=np.int16), axis=2).max() == 0 else "RGB"
        except UNREADABLE:
            continue  # unreadable files are reported when the data are decoded
        if mode not in GREY_MODES:
            return 3
    return 1
