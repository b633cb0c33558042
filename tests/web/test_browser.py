"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

No browser or driver is downloaded: the system's are used. Where none is installed the tests skip
and say why, except under CI, where .ci/run installs them and a missing browser is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

pytestmark = pytest.mark.slow  # multi-process / browser


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        why = "no system chromium and chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: .ci/run installs them, so CI must have them")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,2400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # the system driver: nothing fetched
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting in the browser")


def data_uri_pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_report_slider_changes_the_picture(browser, tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get((tiny_runs["gan"] / "report.html").resolve().as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "#charts svg")  # the charts were drawn
    figure = browser.find_element(By.CSS_SELECTOR, "figure.gallery")
    img, slider = figure.find_element(By.TAG_NAME, "img"), figure.find_element(By.CLASS_NAME, "frame-slider")
    label = figure.find_element(By.CLASS_NAME, "frame-label")
    before_src, before_shot = img.get_attribute("src"), img.screenshot_as_png
    assert label.text == "epoch 2"
    browser.save_screenshot(str(tmp_path / "report-before.png"))
    slider.send_keys(Keys.ARROW_LEFT)
    wait_for(lambda: label.text == "epoch 1")
    after_shot = img.screenshot_as_png
    browser.save_screenshot(str(tmp_path / "report-after.png"))
    assert img.get_attribute("src") != before_src
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(before_shot))), np.asarray(Image.open(io.BytesIO(after_shot))))


def test_report_smoothing_is_tensorboards(browser, tiny_runs: dict[str, Path]) -> None:
    browser.get((tiny_runs["vae"] / "report.html").resolve().as_uri())
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    for weight in (0.0, 0.6, 0.95):
        got = browser.execute_script("return genlabSmooth(arguments[0], arguments[1]);", values, weight)
        ema, expected = 0.0, []
        for i, v in enumerate(values):  # TensorBoard's debiased EMA
            ema = ema * weight + (1 - weight) * v
            expected.append(v if weight == 0 else ema / (1 - weight ** (i + 1)))
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_flat_series_is_drawn_at_once(browser, tiny_runs: dict[str, Path]) -> None:
    # active_dims is often constant; smoothed, it spans one ulp, and the old tick loop (t += step, with the step
    # below t's rounding) hung the page for a minute building ticks.
    page = (tiny_runs["vae"] / "report.html").resolve().as_uri()
    started = time.monotonic()
    if browser.current_url != page:
        browser.get(page)
    chart = {"title": "active_dims", "series": {"active_dims": [[s, 4.0] for s in range(10)]}}
    got = browser.execute_script(
        """const box = document.createElement("div"); document.body.appendChild(box);
        drawChart(box, arguments[0], {smoothing: 0.6, log: false});
        return {labels: box.querySelectorAll('line[stroke="#eee"]').length,
                ulp: niceTicks(4, 4 + 8.881784197001252e-16, 5).length, flat: niceTicks(4, 4, 5)};""",
        chart,
    )
    assert got["flat"] == [4, 4.2, 4.4, 4.6, 4.8, 5]  # a zero span is drawn over [lo, lo + 1]
    assert 2 <= got["labels"] <= 12 and got["ulp"] <= 21  # a handful of y grid lines, never one per ulp
    assert time.monotonic() - started < 20


def test_a_one_point_series_is_drawn_in_its_legend_colour(browser, tiny_runs: dict[str, Path]) -> None:
    page = (tiny_runs["vae"] / "report.html").resolve().as_uri()
    if browser.current_url != page:  # the smoothing test's page
        browser.get(page)
    chart = {"title": "loss", "series": {"loss": [[s, 1.0 / (s + 1)] for s in range(0, 200, 2)], "val_loss": [[199, 0.4]]}}
    marks = browser.execute_script(
        """const box = document.createElement("div"); document.body.appendChild(box);
        drawChart(box, arguments[0], {smoothing: 0.6, log: false});
        const colour = i => box.querySelectorAll(".legend i")[i].style.background;
        return {val: [...box.querySelectorAll('circle[data-series="val_loss"]')].map(c => c.getAttribute("fill")),
                dense: box.querySelectorAll('circle[data-series="loss"]').length, legend: colour(1)};""",
        chart,
    )
    assert len(marks["val"]) == 1  # a path of one point draws nothing; the mark is what shows
    assert marks["dense"] == 0  # 100 points are a line, not dots
    assert marks["legend"] == "rgb(214, 39, 40)" and marks["val"][0] == "#d62728"


def test_explorer_arrow_key_decodes_what_the_server_decodes(browser, tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from genlab.explore import load_explorer, make_server

    explorer = load_explorer(str(tiny_runs["vae"]))
    server = make_server(explorer, "tiny vae")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        browser.get(f"http://{host}:{port}/")
        idle = lambda: browser.execute_script("return window.genlabIdle && window.genlabIdle();")  # noqa: E731
        img = browser.find_element(By.ID, "decoded")
        wait_for(lambda: idle() and img.get_attribute("data-z"))
        before = img.get_attribute("src")
        browser.save_screenshot(str(tmp_path / "explore-before.png"))
        slider = browser.find_element(By.ID, "dir-0")
        for _ in range(15):  # 1.5 along the highest-KL dimension
            slider.send_keys(Keys.ARROW_RIGHT)
        wait_for(lambda: idle() and img.get_attribute("src") != before and float(slider.get_attribute("value")) == 1.5)
        wait_for(idle)
        browser.save_screenshot(str(tmp_path / "explore-after.png"))
        z = json.loads(img.get_attribute("data-z"))
        shown = data_uri_pixels(img.get_attribute("src"))
        assert not np.array_equal(shown, data_uri_pixels(before))
        d0 = int(explorer.directions[0].label[1:])
        assert abs(z[d0] - 1.5) < 1e-6 and sum(abs(v) for i, v in enumerate(z) if i != d0) == 0
        np.testing.assert_array_equal(shown, explorer.decode(torch.tensor([z]))[..., 0])
    finally:
        server.shutdown()
        server.server_close()
