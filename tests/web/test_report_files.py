"""What the report embeds from a run folder: its own regular PNG and GIF files, never what a link, a FIFO or
an odd name brings in; and a report that fails never fails the training it ends."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from genlab import report
from genlab.cli import main

from conftest import train_args


@contextmanager
def at_most(seconds: int):
    """Fail, instead of hanging the suite, if the block blocks (a FIFO opened for reading waits for a writer)."""

    def fail(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def png(path: Path, colour: tuple[int, int, int] = (200, 10, 10), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def a_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"family": "vae", "train": {"lr": 0.005}}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.0}\n')
    return folder


def page_data(html: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))


def test_links_and_files_that_are_not_pictures_stay_out(tmp_path: Path) -> None:
    run = a_run(tmp_path / "run")
    png(run / "good.png")
    secret = tmp_path / "id_rsa"
    secret.write_bytes(png(tmp_path / "x.png").read_bytes() + b"-----BEGIN OPENSSH PRIVATE KEY-----")
    (run / "link.png").symlink_to(secret)  # a picture by its bytes, but not the run's
    (run / "key.png").write_text("-----BEGIN OPENSSH PRIVATE KEY-----")  # the run's, but not a picture
    (run / "folder.png").mkdir()
    out = report.write_report([run], tmp_path / "r.html")
    html = out.read_text()
    assert "OPENSSH" not in html and base64.b64encode(secret.read_bytes()).decode() not in html
    titles = [g["title"] for g in page_data(html)["galleries"][0]]
    assert titles == ["good"]
    warnings = report.load_view(run).status["warnings"]
    assert "link.png not shown: a symbolic link" in warnings and "key.png not shown: not a PNG or GIF file" in warnings
    assert "folder.png not shown: not a regular file" in warnings


def test_a_samples_folder_linked_elsewhere_and_oversized_pictures_stay_out(tmp_path: Path, monkeypatch) -> None:
    run = a_run(tmp_path / "run")
    png(tmp_path / "elsewhere" / "epoch_0001.png")
    (run / "samples").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    png(run / "big.png", size=64)
    monkeypatch.setattr(report, "MAX_PICTURE_BYTES", 100)
    view = report.load_view(run)
    assert view.galleries == []
    assert "samples/epoch_0001.png not shown: outside the run folder" in view.status["warnings"]
    assert "big.png not shown: larger than 0.0001 MB" in view.status["warnings"]


def test_odd_names_in_samples_do_not_break_the_sliders(tmp_path: Path) -> None:
    run = a_run(tmp_path / "run")
    for name in ("epoch_0002.png", "epoch_0010.png", "epoch_final.png", "epoch_.png", "epoch_3_old.png", "last.png"):
        png(run / "samples" / name)
    (samples,) = report.load_view(run).galleries
    assert [label for label, _ in samples.frames] == ["epoch 2", "epoch 10", "end of run"]


def test_a_fifo_named_png_does_not_hang_the_report(tmp_path: Path) -> None:
    run = a_run(tmp_path / "run")
    os.mkfifo(run / "pipe.png")
    os.mkfifo(tmp_path / "elsewhere.png")
    (run / "samples").mkdir()
    (run / "samples" / "last.png").symlink_to(tmp_path / "elsewhere.png")
    with at_most(20):
        view = report.load_view(run)
    assert view.galleries == [] and "pipe.png not shown: not a regular file" in view.status["warnings"]


def test_torn_sweep_json_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "sweep.json").write_text('{"family": "vae", "rows": [{"val')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sweep.json is damaged" in err and "\n" not in err


def test_a_failing_report_does_not_fail_the_finished_run(idx_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = a_run(tmp_path / "run")  # a genlab run folder, so --out takes it; a FIFO in it, as in a shared folder
    os.mkfifo(run / "pipe.png")
    real = report.render

    def broken(views):
        assert [g.title for g in views[0].galleries] == ["samples (fixed noise) by epoch", "latent traversals by epoch"]
        real(views)  # the page is made, the FIFO passed over...
        raise RuntimeError("the template is broken")  # ...and then it fails anyway

    monkeypatch.setattr(report, "render", broken)
    with at_most(60):
        assert main(train_args("vae", idx_data, run, "--max-steps", "1", "--batch-size", "128")) == 0
    err = capsys.readouterr().err
    assert "the run finished but its report was not written (the template is broken)" in err
    assert (run / "checkpoints" / "latest").exists() and json.loads((run / "status.json").read_text())["reason"] == "max_steps"


def test_the_sweep_figure_goes_through_the_same_checks(tmp_path: Path) -> None:
    (tmp_path / "sweep.json").write_text(json.dumps({"family": "vae", "key": "loss.beta", "values": [1], "rows": []}))
    (tmp_path / "sweep.png").symlink_to(png(tmp_path / "outside" / "x.png"))
    view = report.load_view(tmp_path)
    assert view.galleries == [] and view.status["warnings"] == ["sweep.png not shown: a symbolic link"]
