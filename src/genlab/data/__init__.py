"""Data: IDX data sets (Fashion-MNIST, MNIST), image folders and factor data sets (shapes, dSprites),
each as one uint8 tensor in memory.

Batches are built by indexing that tensor: no per-item PIL work or DataLoader in the hot loop.
Image folders too large for memory stream through a DataLoader with workers instead.
"""

from __future__ import annotations

from pathlib import Path

from genlab.data.factors import FACTOR_SETS, load_factor_set
from genlab.data.folders import (
    FOLDER_IMAGE_SIZE,
    IMAGE_SUFFIXES,
    ImageFolder,
    decode_image,
    folder_channels,
    list_images,
    load_folder_split,
)
from genlab.data.idx import (
    BUILTIN,
    IDX_FILES,
    RemoteIDX,
    default_root,
    download,
    find_idx,
    is_idx_folder,
    load_idx_split,
    locate_idx,
    parse_idx,
    read_idx,
    read_idx_header,
)
from genlab.data.images import Factors, ImageData, crop_to, epoch_order, fit_images, iterate_batches, to_float, vae_input
from genlab.errors import DataError


def load_dataset(cfg, channels: int, size: int) -> tuple[ImageData | ImageFolder, ImageData]:
    """(train, test) for a DataConfig, fitted to the model's channels and square size.

    Train may be an ImageFolder to stream when a folder is larger than cfg.max_memory_mb; test is
    always in memory (validation and pictures read only its first batches).
    """
    name = cfg.dataset
    if name in FACTOR_SETS:
        train, test = load_factor_set(name, cfg.root, cfg.download, cfg.image_size)
        for split in (train, test):  # resized, not padded: a 64x64 sprite into a 32x32 model
            split.images = fit_images(split.images, channels, size, "resize")
        return train, test
    if name in BUILTIN or is_idx_folder(Path(name)):
        folder = locate_idx(name, cfg.root, cfg.download) if name in BUILTIN else Path(name)
        train = load_idx_split(folder, "train", name)
        has_test = find_idx(folder, IDX_FILES["test"][0]) is not None
        test = load_idx_split(folder, "test", name) if has_test else train  # else validate on train
        for split in {id(train): train, id(test): test}.values():
            split.images = fit_images(split.images, channels, size, cfg.fit)
        return train, test
    folder = Path(name).expanduser()
    if not folder.exists():
        known = ", ".join([*BUILTIN, *FACTOR_SETS])
        raise DataError(f"--data {name!r} is neither a built-in data set ({known}) nor an existing folder")
    args = (channels, size, cfg.center_crop, cfg.val_fraction, cfg.skip_bad_files, cfg.workers)
    train = load_folder_split(folder, "train", *args, max_memory_mb=cfg.max_memory_mb)
    if cfg.val_fraction > 0:
        test = load_folder_split(folder, "test", *args, max_memory_mb=float("inf"))
    elif isinstance(train, ImageData):
        test = train
    else:
        raise DataError(f"{folder} is streamed from disk and needs a test split; set data.val_fraction > 0")
    return train, test


def native_shape(cfg) -> tuple[int, int | None]:
    """(channels, size) of a DataConfig's images as stored; size None where images vary (folders).

    A missing folder gives the grey defaults: load_dataset reports it with the fix.
    """
    name = cfg.dataset
    if name in FACTOR_SETS:
        return 1, cfg.image_size or 64
    if name in BUILTIN:
        return 1, 28
    path = Path(name).expanduser()
    if is_idx_folder(path):
        raw = read_idx_header(find_idx(path, IDX_FILES["train"][0]))
        return 1, raw[-1]
    if path.is_dir():
        return folder_channels(path), None
    return 1, 28


def describe(cfg, train, test, channels: int, size: int) -> str:
    """One line: what a run trains on and how the images were fitted to the model."""
    name, shape = cfg.dataset, f"{channels}×{size}×{size}"
    separate = test is not train
    if name in FACTOR_SETS:
        side = train.original_size[0]
        fitted = "as" if side == size else "resized to"
        factors = ", ".join(f"{n} {k}" for n, k in zip(train.factors.names, train.factors.sizes))
        return (
            f"data: {name}, {len(train):,} images (grey {side}×{side}; factors {factors}), {fitted} {shape}; "
            f"all train, validation on a fixed {len(test):,} of them (the protocols sample the whole set)"
        )
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


__all__ = [
    "BUILTIN",
    "FACTOR_SETS",
    "FOLDER_IMAGE_SIZE",
    "IDX_FILES",
    "IMAGE_SUFFIXES",
    "Factors",
    "ImageData",
    "ImageFolder",
    "RemoteIDX",
    "crop_to",
    "decode_image",
    "default_root",
    "describe",
    "download",
    "epoch_order",
    "fit_images",
    "iterate_batches",
    "list_images",
    "load_dataset",
    "load_folder_split",
    "locate_idx",
    "native_shape",
    "parse_idx",
    "read_idx",
    "to_float",
    "vae_input",
]
