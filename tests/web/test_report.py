"""The run report: what the page is given (curves, charts, tables) and the page itself, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

from genlab import report
from genlab.cli import main

# The only absolute URL the page may hold: the SVG namespace that createElementNS needs (never fetched).
SVG_NS = "http://www.w3.org/2000/svg"


def external_urls(html: str) -> list[str]:
    """Every absolute or protocol-relative URL in the page but the SVG namespace."""
    found = re.findall(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'<>)]*""", html)
    return [u for u in found if u != SVG_NS]


def write_metrics(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "cut')
    (run / "config.json").write_text(json.dumps({"family": "gan", "train": {"lr": 2e-4, "seed": 0}}))


def test_curves_charts_and_warnings_from_the_metrics_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_metrics(
        run,
        [
            {"step": 50, "epoch": 0, "g_loss": 1.0, "d_loss": 0.5, "d_real": 0.7, "d_fake": 0.3, "images_per_s": 900.0},
            {"step": 100, "epoch": 0, "g_loss": 2.0, "d_loss": float("nan"), "d_real": 0.8, "d_fake": 0.2},
            {"step": 100, "epoch": 1, "val_d_acc": 0.75, "new_term": 3.0},
            {"step": 120, "epoch": 1, "warning": "D wins"},
        ],
    )
    view = report.load_view(run)
    assert view.curves["g_loss"] == [(50.0, 1.0), (100.0, 2.0)]
    assert view.curves["d_loss"] == [(50.0, 0.5)]  # the NaN is not drawn
    assert "epoch" not in view.curves and "step" not in view.curves
    assert view.status["warnings"] == ["step 120: D wins"]
    assert view.status["reason"].startswith("unknown")  # no status.json: killed or still running
    charts = {c.title: c for c in report.charts([view])}
    d_chart = charts["D(x), D(G(z)) and D's test accuracy"]
    assert d_chart.reference == 0.5 and set(d_chart.series) == {"d_real", "d_fake", "val_d_acc"}
    assert set(charts["losses"].series) == {"g_loss", "d_loss"}
    assert charts["new_term"].series == {"new_term": [(100.0, 3.0)]}  # a key no family groups: its own chart
    assert charts["images per second"].reference is None


def test_a_family_without_charts_gets_one_chart_per_key(tmp_path: Path) -> None:
    view = report.RunView("r", tmp_path, "some-new-family", {}, {}, {"a": [(1.0, 1.0)], "b": [(1.0, 2.0)]})
    assert [c.title for c in report.charts([view])] == ["a", "b"]


def test_several_runs_overlay_with_run_names() -> None:
    a = report.RunView("a", Path("a"), "vae", {}, {}, {"loss": [(1.0, 1.0)], "val_loss": [(1.0, 2.0)]})
    b = report.RunView("b", Path("b"), "vae", {}, {}, {"loss": [(1.0, 3.0)]})
    (chart,) = report.charts([a, b])
    assert set(chart.series) == {"a: loss", "a: val_loss", "b: loss"}


def test_thin_keeps_the_ends_and_the_limit() -> None:
    items = list(range(10_001))
    thinned = report.thin(items, 2000)
    assert len(thinned) <= 2000 and thinned[0] == 0 and thinned[-1] == 10_000
    assert thinned == sorted(thinned)
    assert report.thin([1, 2, 3], 10) == [1, 2, 3]


def test_config_table_shows_only_what_differs() -> None:
    cfg = {"family": "vae", "loss": {"beta": 1.0}, "train": {"lr": 0.005, "seed": 0}}
    other = {"family": "vae", "loss": {"beta": 4.0}, "train": {"lr": 0.005, "seed": 0}, "model": {"x": 1}}
    views = [report.RunView(n, Path(n), "vae", c, {}, {}) for n, c in (("a", cfg), ("b", other))]
    rows, hidden = report.config_table(views)
    assert rows == [("loss.beta", [1.0, 4.0]), ("model.x", ["–", 1])]
    assert hidden == 3  # family, train.lr, train.seed
    single, none_hidden = report.config_table(views[:1])
    assert len(single) == 4 and none_hidden == 0


def test_eval_table_marks_the_best_by_direction() -> None:
    def ev(fd: float, coverage: float, odd: float) -> dict:
        return {"n": 100, "seed": 0, "sample_quality": {"fd": fd, "coverage": coverage, "odd": odd}}

    views = [
        report.RunView(n, Path(n), "gan", {}, {}, {}, evaluation=e) for n, e in (("a", ev(10.0, 0.2, 1)), ("b", ev(5.0, 0.1, 2)))
    ]
    rows, method = report.eval_table(views)
    by_key = {r["key"]: r for r in rows}
    assert by_key["sample_quality.fd"]["best"] == 1 and by_key["sample_quality.fd"]["direction"] == "↓"
    assert by_key["sample_quality.coverage"]["best"] == 0
    assert by_key["sample_quality.odd"]["best"] is None  # no known direction: not marked
    assert ("n", ["100", "100"]) in method


def test_training_writes_status_and_a_report_that_opens_offline(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    for family, run in tiny_runs.items():
        status = json.loads((run / "status.json").read_text())
        assert status["reason"] == "done" and status["epochs"] == 2 and status["steps"] == 32 and status["wall_s"] > 0
        html = (run / "report.html").read_text()
        assert external_urls(html) == [], family
        data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))
        (samples, *_) = data["galleries"][0]
        assert [label for label, _ in samples["frames"]] == ["epoch 1", "epoch 2"]
        assert all(uri.startswith("data:image/png;base64,") for _, uri in samples["frames"])
        assert data["charts"] and all(c["series"] for c in data["charts"])


def test_report_of_two_runs_with_an_evaluation(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    gan = tiny_runs["gan"]
    assert main(["eval", str(gan), "--n", "64"]) == 0
    assert list((gan / "evals").glob("eval-step32-n64-seed0.json"))
    out = tmp_path / "both.html"
    assert main(["report", str(tiny_runs["vae"]), str(gan), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    html = out.read_text()
    assert external_urls(html) == []
    assert "gan_health.d_acc" in html and "method: n" in html
    assert "Only what differs between the runs" in html and "model.g_hidden_dims" in html


def test_external_url_check_catches_what_it_should() -> None:
    assert external_urls('<script src="https://cdn.example.com/x.js"></script>') == ["https://cdn.example.com/x.js"]
    assert external_urls("<link href='//fonts.example.org/a.css'>") == ["//fonts.example.org/a.css"]
    assert external_urls(f'document.createElementNS("{SVG_NS}", "svg")') == []


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a genlab run folder" in err


def test_a_sweep_folder_shows_its_figure_and_table(tmp_path: Path) -> None:
    from PIL import Image

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    rows = [{"value": 1, "seed": 0, "neg_elbo": 27.5, "mig": 0.01}, {"value": 4, "seed": 0, "neg_elbo": 32.7, "mig": 0.02}]
    (sweep / "sweep.json").write_text(json.dumps({"family": "vae", "key": "loss.beta", "values": [1, 4], "rows": rows}))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(sweep / "sweep.png")
    out = tmp_path / "r.html"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    html = out.read_text()
    assert "sweep sweep: loss.beta over 1, 4" in html and "32.7" in html and "the sweep&#39;s figure" in html
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    assert data["galleries"][0][0]["frames"][0][1].startswith("data:image/png;base64,")
