"""The fast paths compute what the plain ones do; the bench runs. (No timings asserted: benchmarks are not tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from genlab.bench import notes_gan_step, notes_vae_step
from genlab.cli import main
from genlab.config import GANLossConfig, VAELossConfig
from genlab.losses import vae_loss
from genlab.models import GAN, VanillaVAE
from genlab.models.layers import set_fused_norm_act
from genlab.train.common import fuse_norm_act
from genlab.train.gan import gan_step
from genlab.train.vae import vae_step

from conftest import FEEDS_BATCHNORM, assert_same_weights, train_args


def test_vae_fast_step_equals_the_plain_loop_channels_last_too() -> None:
    torch.manual_seed(0)
    plain = VanillaVAE(3, 8, hidden_dims=(8, 16), image_size=16)
    fast = VanillaVAE(3, 8, hidden_dims=(8, 16), image_size=16)
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    p_opt = torch.optim.Adam(plain.parameters(), lr=1e-3, foreach=False)
    f_opt = {"opt": torch.optim.Adam(fast.parameters(), lr=1e-3, foreach=True)}
    for i in range(3):
        x = torch.rand(8, 3, 16, 16) * 2 - 1
        torch.manual_seed(i)
        notes_vae_step(plain, x, p_opt, 0.00025)
        torch.manual_seed(i)
        vae_step(fast, x.contiguous(memory_format=torch.channels_last), f_opt, VAELossConfig(), i)
    assert_same_weights(plain.state_dict(), fast.state_dict(), noise_atol=2 * 1e-3 * 3)


def test_gan_fast_step_equals_the_plain_loop() -> None:
    torch.manual_seed(0)
    plain, fast = GAN(8, (1, 8, 8), (16, 32), (16,)), GAN(8, (1, 8, 8), (16, 32), (16,))
    fast.load_state_dict(plain.state_dict())
    adam = lambda p, fe: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), foreach=fe)  # noqa: E731
    p_g, p_d = adam(plain.generator.parameters(), False), adam(plain.discriminator.parameters(), False)
    opts = {"opt_g": adam(fast.generator.parameters(), True), "opt_d": adam(fast.discriminator.parameters(), True)}
    for i in range(3):
        x = torch.rand(16, 1, 8, 8) * 2 - 1
        torch.manual_seed(i)
        notes_gan_step(plain, x, p_g, p_d)
        torch.manual_seed(i)
        gan_step(fast, x, opts, GANLossConfig(), i)
    assert_same_weights(plain.state_dict(), fast.state_dict(), noise_atol=2 * 2e-4 * 3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes_on_cpu(precision: str, idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = train_args("gan", idx_data, run, "--max-steps", "6", "--set", f'train.precision="{precision}"')
    assert main(args) == 0
    assert main(["train", "gan", "--resume", str(run), "--max-steps", "9", "--quiet"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 9 and all(r["g_loss"] == r["g_loss"] for r in rows if "g_loss" in r)


def test_channels_last_training_matches_default(idx_data: Path, tmp_path: Path) -> None:
    from conftest import weights

    assert main(train_args("vae", idx_data, tmp_path / "a", "--max-steps", "4")) == 0
    assert main(train_args("vae", idx_data, tmp_path / "b", "--max-steps", "4", "--set", "train.channels_last=true")) == 0
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"), noise_atol=2 * 0.005 * 4, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_compiled_gan_matches_eager(idx_data: Path, tmp_path: Path) -> None:
    from conftest import weights

    assert main(train_args("gan", idx_data, tmp_path / "eager", "--max-steps", "5")) == 0
    assert main(train_args("gan", idx_data, tmp_path / "compiled", "--max-steps", "5", "--set", "train.compile=true")) == 0
    assert_same_weights(weights(tmp_path / "eager"), weights(tmp_path / "compiled"), noise_atol=2 * 2e-4 * 5, atol=1e-5)


def loss_backward(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The notes' VAE loss of one batch, backpropagated into model's .grad; eps drawn from seed 5."""
    torch.manual_seed(5)
    recons, _, mu, logvar = model(x)
    loss = vae_loss(recons, x, mu, logvar, 0.00025)["loss"]
    loss.backward()
    return loss.item()


@pytest.mark.slow
def test_compiled_vae_step_matches_eager() -> None:
    # A 2x2 bottom: eager takes the GEMM formulations, compiled code the direct kernels.
    torch.manual_seed(0)
    eager = VanillaVAE(1, 4, hidden_dims=(8, 16, 16, 16), image_size=32)
    compiled = VanillaVAE(1, 4, hidden_dims=(8, 16, 16, 16), image_size=32)
    compiled.load_state_dict(eager.state_dict())
    x = torch.rand(24, 1, 32, 32) * 2 - 1
    # The same eps for both: the noise is drawn eagerly inside compiled code too.
    losses = [loss_backward(model, x) for model in (eager, torch.compile(compiled))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if FEEDS_BATCHNORM.fullmatch(name):
            continue  # true gradient 0: both are float noise
        # BatchNorm's backward over 2x2 maps amplifies reduction-order rounding to ~1e-3 of the scale.
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-2 * float(a.grad.abs().max()), msg=name)


@pytest.mark.slow
def test_compiled_vae_trains_through_a_second_batch_size(idx_data: Path, tmp_path: Path) -> None:
    # Validation batches of 64 after training batches of 96: the compiled graph meets a new size.
    extra = ["--epochs", "1", "--batch-size", "96", "--set", "model.hidden_dims=[8, 16, 16, 16]"]
    assert main(train_args("vae", idx_data, tmp_path / "eager", *extra)) == 0
    assert main(train_args("vae", idx_data, tmp_path / "compiled", *extra, "--set", "train.compile=true")) == 0
    last = [json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[-1]) for r in ("eager", "compiled")]
    assert last[1]["val_loss"] == pytest.approx(last[0]["val_loss"], rel=1e-3)


FAULTS = """
import resource, sys, torch
from genlab.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # glibc settles into reusing the block after a few rounds
    torch.ones(64, 32, 64, 64).sum()  # 32 MiB, past glibc's largest mmap threshold
before = faults()
for _ in range(5):
    torch.ones(64, 32, 64, 64).sum()
print(tuned, faults() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_setting_reuses_large_blocks_and_can_be_declined() -> None:
    def run(env: dict[str, str]) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", FAULTS], env={**os.environ, **env}, capture_output=True, text=True)
        tuned, faults = done.stdout.split()
        return tuned, int(faults)

    tuned, faults_tuned = run({})
    declined, faults_default = run({"GENLAB_MALLOC": "default"})
    assert (tuned, declined) == ("True", "False")
    # Default glibc maps each 32 MiB tensor afresh: >= 8192 page faults apiece; reused blocks fault ~never.
    assert faults_default > 5 * 4096 and faults_tuned < faults_default / 10, (faults_tuned, faults_default)


@pytest.mark.parametrize("family,option", [("gan", "train.compile"), ("vae", "train.fuse_norm_act")])
def test_compile_without_a_cpp_compiler_is_one_line(
    family: str, option: str, idx_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ / clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    assert main(train_args(family, idx_data, tmp_path / "run", "--max-steps", "1", "--set", f"{option}=true")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"genlab: error: {option}=true on CPU needs a C++ compiler")


def tiny_vae() -> VanillaVAE:
    torch.manual_seed(0)
    return VanillaVAE(3, 4, hidden_dims=(8, 16), image_size=16).to(memory_format=torch.channels_last)


@pytest.mark.slow
def test_fused_norm_act_step_matches_eager() -> None:
    eager, fused = tiny_vae(), set_fused_norm_act(tiny_vae(), True)  # the same seed: the same weights
    x = (torch.rand(12, 3, 16, 16) * 2 - 1).contiguous(memory_format=torch.channels_last)
    losses = [loss_backward(m, x) for m in (eager, fused)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), fused.parameters()):
        if not FEEDS_BATCHNORM.fullmatch(name):  # those have true gradient 0: both float noise
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4 * float(a.grad.abs().max()), msg=name)
    for (name, a), b in zip(eager.named_buffers(), fused.buffers()):  # running statistics, batches counted
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_fused_norm_act_option_runs_the_compiled_kernels(idx_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.kernels import norm_act

    compiled = norm_act._fused_norm_act()
    calls = []
    monkeypatch.setattr(norm_act, "_fused_norm_act", lambda: calls.append(1) or compiled)
    assert main(train_args("vae", idx_data, tmp_path / "eager", "--max-steps", "3", "--set", "train.fuse_norm_act=false")) == 0
    assert not calls
    assert main(train_args("vae", idx_data, tmp_path / "fused", "--max-steps", "3", "--set", "train.fuse_norm_act=true")) == 0
    assert len(calls) == 3 * 4  # 3 steps x 4 BatchNorm2d + LeakyReLU pairs (2 encoder, 1 decoder, 1 final)
    rows = [json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[0]) for r in ("eager", "fused")]
    assert rows[1]["loss"] == pytest.approx(rows[0]["loss"], rel=1e-4)


def test_fused_norm_act_is_refused_for_the_gan(idx_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(train_args("gan", idx_data, tmp_path / "run", "--max-steps", "1", "--set", "train.fuse_norm_act=true")) == 2
    assert "the GAN has none: set it false" in capsys.readouterr().err.strip().splitlines()[-1]


def test_auto_fusion_takes_the_pairs_from_the_threshold_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.kernels import norm_act
    from genlab.models import layers
    from genlab.train import common

    model = tiny_vae()
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).contiguous(memory_format=torch.channels_last)
    sizes: list[int] = []  # every BatchNorm2d input of one eager forward
    norms = [m for m in model.modules() if type(m) is torch.nn.BatchNorm2d]
    hooks = [m.register_forward_pre_hook(lambda m, a: sizes.append(a[0].numel())) for m in norms]
    model(x)
    for h in hooks:
        h.remove()
    threshold = sorted(sizes)[len(sizes) // 2]
    monkeypatch.setattr(common, "FUSE_MIN_ELEMENTS", threshold)
    assert fuse_norm_act(model, "auto", torch.device("cpu"), "fp32")
    fused: list[int] = []
    spy = lambda x, norm, act, strict: fused.append(x.numel()) or norm_act._norm_act(x, norm, act)  # noqa: E731
    monkeypatch.setattr(layers, "fused_pair", spy)
    model(x)
    assert sorted(fused) == sorted(n for n in sizes if n >= threshold)
    assert 0 < len(fused) < len(sizes)
    model.eval()  # evaluation passes never compile
    model(x)
    assert len(fused) == len([n for n in sizes if n >= threshold])


def test_auto_fusion_stays_off_without_a_compiler_or_outside_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from genlab.models.layers import ConvBlock

    model = tiny_vae()
    cpu = torch.device("cpu")
    assert not fuse_norm_act(model, "auto", cpu, "bf16")
    assert not fuse_norm_act(model, "auto", torch.device("cuda"), "fp32")  # not measured there: true turns it on
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ / clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    assert not fuse_norm_act(model, "auto", cpu, "fp32")
    assert all(b.fuse_min_elements is None for b in model.modules() if isinstance(b, ConvBlock))


def test_auto_fusion_falls_back_with_one_warning_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.kernels import norm_act

    def failing_compile():
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler\n(long inductor detail)")

        return run

    monkeypatch.setattr(norm_act, "_fused_norm_act", failing_compile)
    monkeypatch.setitem(norm_act._fusion, "broken", False)
    eager, auto = tiny_vae(), tiny_vae()
    set_fused_norm_act(auto, True, 0, strict=False)
    x = (torch.rand(12, 3, 16, 16) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with pytest.warns(UserWarning, match=r"could not compile the fused BatchNorm \+ LeakyReLU \(InvalidCxxCompiler: no working"):
        losses = [loss_backward(m, x) for m in (eager, auto)]
    assert losses[0] == losses[1]
    for a, b in zip(eager.parameters(), auto.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    for a, b in zip(eager.buffers(), auto.buffers()):  # running statistics updated once, not twice
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: later steps run unfused without another attempt
        loss_backward(auto, x)
    set_fused_norm_act(auto, True, 0, strict=True)  # train.fuse_norm_act = true: the failure is the user's to see
    with pytest.raises(RuntimeError, match="no working C"):
        loss_backward(auto, x)


SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def test_flush_denormals_reaches_every_thread_and_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.machine import flush_denormals, flushing_denormals

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    x = torch.full((1 << 22,), SUBNORMAL)  # large enough that every thread of the team takes a share
    assert (x * 1.0).ne(0).all()
    with flush_denormals(True):
        assert flushing_denormals()
        assert (x * 1.0).eq(0).all(), "a thread of torch's team still computes subnormals"
    assert not flushing_denormals()
    assert (x * 1.0).ne(0).all(), "the mode outlived the block"


def test_training_flushes_denormals_on_the_cpu_as_its_setting_says(idx_data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import genlab.train.loop as loop

    seen: list[bool] = []
    real = loop.flush_denormals
    monkeypatch.setattr(loop, "flush_denormals", lambda on: seen.append(on) or real(on))
    assert main(train_args("vae", idx_data, tmp_path / "on", "--max-steps", "1")) == 0
    assert main(train_args("vae", idx_data, tmp_path / "off", "--max-steps", "1", "--set", "train.flush_denormal=false")) == 0
    assert seen == [True, False]


def test_a_resumed_windows_speed_counts_only_the_steps_it_timed(idx_data: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import genlab.train.loop as loop

    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--max-steps", "4")) == 0  # logs every 3: 1 step pending
    timed: list[tuple[int, int]] = []
    real = loop.log_window
    monkeypatch.setattr(loop, "log_window", lambda r, bar, s, n: timed.append((r.state.window_steps, n)) or real(r, bar, s, n))
    assert main(["train", "vae", "--resume", str(run), "--quiet", "--max-steps", "9"]) == 0
    assert timed == [(3, 2), (3, 3)]  # steps 5-6 close the window begun before the restart; 7-9 are all timed
