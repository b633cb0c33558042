"""Config files and sizes that cannot fit: refused before any work with one line that says what they would
need; reprs in messages stay short; nothing a machine can train today is refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from genlab import limits
from genlab.cli import main
from genlab.configfile import from_dict, load_config
from genlab.errors import ConfigError
from genlab.models import FAMILIES, family

from conftest import TINY, small_config

LEGACY_VAE = Path(__file__).parent / "fixtures" / "runs-e5f5ec9" / "vae"


@pytest.fixture
def machine_16g(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine of 16 GiB and no GPU, whatever runs the tests."""
    monkeypatch.setattr(limits, "memory_bytes", lambda: 16 << 30)
    monkeypatch.setattr(limits, "device_memory_bytes", lambda device: None)


def alias_bomb(levels: int = 9) -> str:
    """A YAML value of ~400 bytes whose nested aliases expand to 10**levels items."""
    parts = ["&a0 [" + ", ".join(["1"] * 10) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_a_yaml_alias_bomb_gives_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"model:\n  latent_dim: {alias_bomb()}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="model.latent_dim must be int, got") as e:
        load_config("vae", path)
    assert len(str(e.value)) < 200 and time.monotonic() - started < 5
    path.write_text(f"model: {alias_bomb()}\n")
    with pytest.raises(ConfigError, match=r"\[model\] must be a table") as e:
        load_config("vae", path)
    assert len(str(e.value)) < 200


def test_keys_that_are_not_strings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text("model:\n  7: 1\n")
    with pytest.raises(ConfigError, match="unknown key model.7"):
        load_config("vae", path)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("vae", {"model.latent_dim": 10**9}, r"parameters \(weights, gradients, Adam state\) needs about [\d.]+ TiB"),
        ("vae", {"model.latent_dim": 10**7}, "parameters .* needs about .* GiB"),
        ("vae", {"model.hidden_dims": [10**9]}, "sizes give tensors torch cannot make"),
        ("vae", {"model.image_size": 2**30}, "a batch of 64 1x1073741824x1073741824 images needs about"),
        ("vae", {"model.latent_dim": 10**30}, "model.latent_dim holds 1e[+]30, more than any machine can build"),
        ("gan", {"model.g_hidden_dims": [10**6, 10**6]}, "parameters .* needs about"),
        ("dcgan", {"model.width": 10**5}, "needs about"),
        ("vae", {"train.num_samples": 10**9}, "drawing train.num_samples = 1,000,000,000 pictures at once"),
        ("dcgan", {"train.num_samples": 10**9}, "lower train.num_samples"),
    ],
)
def test_sizes_that_cannot_fit_are_one_line_config_errors(name: str, overrides: dict, message: str, machine_16g) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_config(name, None, {"data.dataset": "/nonexistent", **overrides})
    assert "\n" not in str(e.value)


def test_the_message_says_how_much_and_what_to_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1 << 30)
    monkeypatch.setattr(limits, "device_memory_bytes", lambda device: None)
    with pytest.raises(ConfigError, match=r"at train.batch_size 4,096 .* needs about .* more than the 1.0 GiB") as e:
        load_config("vae", None, {"data.dataset": "/nonexistent", "model.in_channels": 3, "model.image_size": 64,
                                  "train.batch_size": 4096})  # fmt: skip
    assert str(e.value).endswith("lower train.batch_size, model.image_size or the model's widths")


def test_what_works_today_is_accepted(machine_16g) -> None:
    notes = {"model.in_channels": 3, "model.image_size": 64, "model.latent_dim": 128, "train.batch_size": 64}
    load_config("vae", None, {"data.dataset": "/nonexistent", **notes})
    load_config("vae", Path(__file__).parents[1] / "configs" / "vae_celeba64.toml", {"data.dataset": "/nonexistent"})
    load_config("vae", None, {"data.dataset": "/nonexistent", "train.eval_n": 10**9})  # capped by the test split
    load_config("vae", None, {"data.dataset": "/nonexistent", "model.latent_dim": 10**4})
    for name in FAMILIES:
        load_config(name, None, {"data.dataset": "/nonexistent"})


def test_a_saved_run_loads_on_a_smaller_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = small_config("vae").to_dict()
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1 << 10)
    assert from_dict(saved).family == "vae"  # sampling and evaluating it are not training it here


@pytest.mark.parametrize("name", list(TINY))
def test_the_meta_device_count_is_exact(name: str) -> None:
    config = small_config(name)
    record = family(name)
    parameters, per_image = limits.footprint(record, config.model)
    model = record.build(config.model)
    assert parameters == sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert per_image is not None and per_image > 0


def test_memory_sizes_read_as_text() -> None:
    assert limits.size_text(512) == "512 B" and limits.size_text(7.5 * 2**30) == "7.5 GiB"
    assert limits.size_text(512 * 2**20) == "512 MiB" and limits.memory_bytes() > 2**28


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", str(10**9), "--out", "x.png"], "a grid of 1,000,000,000 images .* lower --n"),
        (["--n", str(10**8), "--out", "x.npy"], "100,000,000 images of .* as floats needs about .* lower --n"),
        (["--scale", str(10**6), "--out", "x.png"], "enlarged 1000000x .* needs about .* lower --scale"),
    ],
)
def test_sample_refuses_outputs_that_cannot_fit(args: list[str], message: str, tmp_path: Path, capsys, machine_16g) -> None:
    args[args.index("--out") + 1] = str(tmp_path / args[args.index("--out") + 1])
    started = time.monotonic()
    assert main(["sample", str(LEGACY_VAE), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert time.monotonic() - started < 30 and not list(tmp_path.iterdir())


def test_sample_at_sane_sizes_still_writes(tmp_path: Path) -> None:
    out = tmp_path / "s.png"
    assert main(["sample", str(LEGACY_VAE), "--device", "cpu", "--n", "100", "--scale", "4", "--out", str(out)]) == 0
    assert out.exists()
