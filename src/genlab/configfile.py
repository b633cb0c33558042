"""Config files onto the typed dataclasses of config.py: TOML/YAML sections [model], [loss], [train], [data].

Every key is checked before any work starts: unknown keys get a "did you mean", wrong types and
impossible values name the key and what is allowed. Defaults come from the family's record.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from genlab.config import DataConfig, RunConfig, TrainConfig
from genlab.errors import ConfigError
from genlab.limits import check_training
from genlab.losses import beta_from_normalised
from genlab.models import FAMILIES, Family, family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# Values in messages are cut to a few items, levels and characters: a YAML alias bomb (a 1 KB file whose
# nested lists expand to 10**9 items) stays one short line instead of a repr that never ends.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 30


def short(value: Any, width: int = 100) -> str:
    """repr(value) in at most width characters: what a ConfigError quotes of a bad value."""
    text = _REPR.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _name(key: Any) -> str:
    """A key as written, unless it is long or not a string."""
    return key if isinstance(key, str) and len(key) <= 80 else short(key)


def data_shape_defaults(record: Family, model: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """The model keys that describe its images, taken from the data where the config leaves them unset.

    Channels follow the data (an RGB folder gives 3, grey 1). IDX data keep their size (28), a VAE
    padding it up to what its encoder can halve (32 for the notes' five blocks); image folders
    default to the notes' 64x64.
    """
    from genlab.data import FOLDER_IMAGE_SIZE, native_shape

    keys = ("in_channels", "image_size") if record.kind == "vae" else ("img_shape",)
    if all(k in model for k in keys):
        return {}
    channels, native = native_shape(data)
    if record.kind == "gan":
        size = native or FOLDER_IMAGE_SIZE
        return {"img_shape": (channels, size, size)}
    out: dict[str, Any] = {}
    if "in_channels" not in model:
        out["in_channels"] = channels
    if "image_size" not in model:
        if native is None:
            out["image_size"] = FOLDER_IMAGE_SIZE
        else:
            multiple = getattr(record.config, "input_multiple", lambda values: 1)(model)
            out["image_size"] = -(-native // multiple) * multiple
    return out


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """value as the dataclass field type hint, or a ConfigError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(key, value, inner[0])
        for one in inner:  # the first type that takes the value
            try:
                return _coerce(key, value, one)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {' or '.join(a.__name__ for a in inner)}, got {short(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {short(list(value))}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover
        return value
    raise ConfigError(f"{key} must be {getattr(hint, '__name__', hint)}, got {short(value)}")


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """A dataclass from a dict, refusing unknown keys (with a suggestion) and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table of key = value, got {short(values)}")
    names = [f.name for f in fields(cls)]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)  # YAML keys may be numbers
            hint = f"; did you mean {section}.{close[0]}?" if close else f"; allowed: {', '.join(names)}"
            raise ConfigError(f"unknown key {section}.{_name(key)}{hint}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def read_file(path: str | Path) -> dict[str, Any]:
    """A TOML or YAML config file as a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # both parsers' errors carry line and column
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected sections [model], [loss], [train], [data]")
    return data


def parse_value(text: str) -> Any:
    """A command-line override value, read as TOML (numbers, booleans, lists), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config(
    name: str, file: str | Path | None = None, overrides: dict[str, Any] | None = None, *, resumed: bool = False
) -> RunConfig:
    """Family defaults <- config file <- overrides ({"train.lr": 1e-3, ...}), checked and frozen; resumed:
    a saved run's config, which keeps what it trained with."""
    record = family(name)
    raw = merge(record.defaults(), read_file(file) if file else {})
    if "family" in raw:
        if raw.pop("family") != name:
            raise ConfigError(f"{file} is a config for another model family; pass it to that family's command")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    if isinstance(raw.get("model", {}), dict):
        data = build_section(DataConfig, raw.get("data", {}), "data")
        raw["model"] = {**data_shape_defaults(record, raw.get("model", {}), data), **raw.get("model", {})}
    config = load_config_from_sections(record, raw)
    # A config to train here must fit here; a saved run (from_dict) may come from a larger machine.
    check_training(record, config)
    if not resumed and hasattr(config.loss, "ignored_settings"):
        config.loss.ignored_settings()
    return config


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from its to_dict() form (a run folder's config.json)."""
    data = dict(data)
    name = data.pop("family", None)
    if name not in FAMILIES:
        raise ConfigError(f"config names unknown model family {short(name)}")
    record = FAMILIES[name]
    # A key a model gained after the run was saved takes the value that describes how that run was built.
    for section, cls in (("model", record.config), ("loss", record.loss)):
        legacy = getattr(cls, "LEGACY", {})
        if legacy and isinstance(data.get(section), dict):
            data[section] = {**legacy, **data[section]}
    return load_config_from_sections(record, data)


def load_config_from_sections(record: Family, sections: dict[str, Any]) -> RunConfig:
    classes = {"model": record.config, "loss": record.loss, "train": TrainConfig, "data": DataConfig}
    for name in sections:
        if name not in classes:
            close = difflib.get_close_matches(str(name), classes, n=1)
            raise ConfigError(f"unknown section [{_name(name)}]" + (f"; did you mean [{close[0]}]?" if close else ""))
    check_family_keys(record, sections)
    parts = {name: build_section(cls, sections.get(name, {}), name) for name, cls in classes.items()}
    if getattr(parts["loss"], "beta_norm", None) is not None:
        loss = parts["loss"]
        m = parts["model"]
        pixels = getattr(m, "in_channels", 1) * getattr(m, "image_size", 1) ** 2
        beta = beta_from_normalised(loss.beta_norm, m.latent_dim, loss.kld_weight, pixels, getattr(loss, "recon_sum", False))
        if loss.beta != 1.0 and abs(loss.beta - beta) > 1e-9 * abs(beta):
            raise ConfigError(f"set loss.beta or loss.beta_norm, not both (beta_norm {loss.beta_norm} means beta {beta:.6g})")
        parts["loss"] = dataclasses.replace(loss, beta=beta)
    config = RunConfig(record.name, **parts)
    config.validate()
    check_combination(record, config)
    return config


def check_family_keys(record: Family, sections: dict[str, Any]) -> None:
    """A [model] or [loss] key of another family (FactorVAE's discriminator on a VAE, say) names that family."""
    for section in ("model", "loss"):
        values = sections.get(section)
        if not isinstance(values, dict):
            continue
        for key in values:
            if key in _keys(record, section):
                continue
            others = [n for n, r in FAMILIES.items() if key in _keys(r, section)]
            if others:
                raise ConfigError(
                    f"{section}.{_name(key)} is a setting of {', '.join(others)}, not of {record.name}: "
                    f"train {others[0]} to use it, or drop the key"
                )


def _keys(record: Family, section: str) -> set[str]:
    return {f.name for f in fields(record.loss if section == "loss" else record.config)}


def check_combination(record: Family, config: RunConfig) -> None:
    """What no single section can check alone: settings that do not go with this family or each other."""
    if config.train.fuse_norm_act is True and not record.fuses_norm_act:
        raise ConfigError(
            f"train.fuse_norm_act fuses the BatchNorm2d + LeakyReLU pairs of conv VAEs ({record.name}: the "
            f"{record.kind.upper()} has none: set it false)"
        )
    decoder = getattr(config.model, "decoder", None)
    if decoder == "sigma" and config.loss.loss_type != "beta":
        raise ConfigError(
            f'model.decoder = "sigma" trains the ELBO in nats with loss.beta on the KL; loss.loss_type = '
            f'"{config.loss.loss_type}" weighs in the notes\' per-pixel units: set loss.loss_type = "beta"'
        )
    if config.train.factor_metrics_every and record.kind != "vae":
        raise ConfigError(f"train.factor_metrics_every scores a VAE's codes; {record.name} has no encoder: drop it")
    if config.train.ema and record.kind != "gan":
        raise ConfigError(f"train.ema averages a GAN generator's weights; {record.name} has none: drop it")
    loss = config.loss
    if getattr(loss, "recon_sum", False) and decoder != "bernoulli":
        raise ConfigError('loss.recon_sum sums the Bernoulli NLL over each image: set model.decoder = "bernoulli" (binary data)')
    if getattr(loss, "loss_type", None) == "tcvae" and loss.estimator == "mss" and config.train.batch_size < 2:
        raise ConfigError('loss.estimator = "mss" weighs each code against the batch\'s others: train.batch_size must be >= 2')
    steps = config.train.max_steps
    if getattr(loss, "loss_type", None) == "capacity" and steps and loss.capacity_max_iter > steps:
        raise ConfigError(
            f"loss.capacity_max_iter = {loss.capacity_max_iter} is longer than the run's {steps} steps: C would never "
            f"reach loss.max_capacity; set loss.capacity_max_iter <= {steps} (~70% of the run, {int(0.7 * steps)})"
        )
