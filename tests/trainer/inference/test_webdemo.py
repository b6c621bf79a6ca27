"""The web demo (trainer/inference/webdemo, `python -m trainer.serve`): its JSON API and its
page in a real headless Chromium.

The server runs here on 127.0.0.1 on a free port (waitress, in a thread, serving the session's
model); the browser test drives Debian's chromium + chromium-driver with Selenium. Outside CI
the browser test is skipped when they are not installed; in CI (CI=true) their absence fails.
"""

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from tests.trainer.conftest import CLASS_NAMES
from tests.trainer.inference.composites import hopper
from tests.trainer.inference.test_files import png_declaring
from trainer.inference.webdemo.app import Limits, UnusableAddressError, create_app, create_server

LIMITS = Limits(max_upload_bytes=2 * 1024 * 1024, max_files=3, max_pixels=20_000_000)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
LINE_KEYS = ["file", "faces", "face", "box", "emotion", "probability", "probabilities",
             "landmarks"]


@pytest.fixture(scope="module")
def server(saved_model):
    """The demo app served by waitress on 127.0.0.1:<free port>; yields its base URL."""
    import waitress

    app = create_app(saved_model, limits=LIMITS)
    httpd = waitress.create_server(app, host="127.0.0.1", port=0, threads=4,
                                   max_request_body_size=4 * LIMITS.max_upload_bytes)
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.effective_port}"
    httpd.close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def hopper_jpeg() -> bytes:
    return cv2.imencode(".jpg", hopper())[1].tobytes()


def _post(server, files=None, data=None, params=None, headers=None):
    return requests.post(f"{server}/predict", files=files, data=data, params=params,
                         headers=headers, timeout=60)


@pytest.mark.slow
def test_the_page_its_scripts_and_the_model_description_are_served(server):
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and "Facial emotion demo" in page.text
    for name in ("app.js", "style.css"):
        assert requests.get(f"{server}/static/{name}", timeout=10).status_code == 200
    info = requests.get(f"{server}/api/info", timeout=10).json()
    assert info["class_names"] == CLASS_NAMES and info["max_files"] == LIMITS.max_files


@pytest.mark.slow
def test_a_photo_upload_answers_the_predict_commands_lines(server, hopper_jpeg):
    response = _post(server, files={"photo": ("hopper.jpg", hopper_jpeg, "image/jpeg")})
    assert response.status_code == 200
    [line] = response.json()
    assert list(line) == LINE_KEYS and line["file"] == "hopper.jpg" and line["faces"] == 1
    assert list(line["probabilities"]) == CLASS_NAMES

    raw = _post(server, data=hopper_jpeg, params={"annotate": "1"},
                headers={"Content-Type": "image/jpeg"})
    [annotated] = raw.json()
    assert annotated["file"] == "upload" and annotated["emotion"] == line["emotion"]
    for content_type in (None, "application/x-www-form-urlencoded"):  # curl --data-binary
        headers = {"Content-Type": content_type} if content_type else None
        [untyped] = _post(server, data=hopper_jpeg, headers=headers).json()
        assert untyped["probabilities"] == line["probabilities"], content_type
    prefix, encoded = annotated["annotated"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    image = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == hopper().shape


@pytest.mark.slow
def test_bad_uploads_get_a_4xx_json_error_and_the_server_keeps_serving(server, hopper_jpeg):
    cases = {
        "not an image": (_post(server, files={"photo": ("notes.jpg", b"hello", "image/jpeg")}),
                         400, "not an image"),
        "empty body": (_post(server, data=b""), 400, "no photo"),
        "too many files": (_post(server, files=[("photo", (f"{i}.jpg", hopper_jpeg))
                                                for i in range(LIMITS.max_files + 1)]),
                           400, "too many files"),
        "too large": (_post(server, data=b"\xff" * (LIMITS.max_upload_bytes + 1)), 413,
                      "larger than"),
        "too many pixels": (_post(server, data=cv2.imencode(
            ".png", np.zeros((5000, 5000), np.uint8))[1].tobytes()), 413, "pixels"),
        "a bomb": (_post(server, data=png_declaring(14000, 14000)), 413, "pixels"),
        "a raw body that is no image": (_post(server, data=b"name=value"), 415,
                                        "not an image file"),
        "a strip": (_post(server, data=cv2.imencode(
            ".png", np.zeros((40000, 2), np.uint8))[1].tobytes()), 400, "is no photo"),
    }
    for name, (response, status, message) in cases.items():
        assert response.status_code == status, name
        assert message in response.json()["error"], name
    again = _post(server, files={"photo": ("hopper.jpg", hopper_jpeg)})
    assert again.status_code == 200 and again.json()[0]["faces"] == 1


@pytest.mark.slow
def test_a_bad_file_gets_its_error_line_and_the_others_their_answers(server, hopper_jpeg):
    files = [("photo", ("bomb.png", png_declaring(14000, 14000))),
             ("photo", ("hopper.jpg", hopper_jpeg)), ("photo", ("empty.jpg", b"\xff"))]
    response = _post(server, files=files)
    assert response.status_code == 200
    bomb, face, empty = response.json()
    assert bomb["file"] == "bomb.png" and "more than 20,000,000 pixels" in bomb["error"]
    assert face["file"] == "hopper.jpg" and face["faces"] == 1
    assert empty["file"] == "empty.jpg" and "not an image file" in empty["error"]


@pytest.mark.slow
def test_concurrent_requests_all_succeed_with_the_same_answer(server, hopper_jpeg):
    def ask(_):
        response = _post(server, files={"photo": ("hopper.jpg", hopper_jpeg)})
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert [status for status, _ in answers] == [200] * 4
    assert all(body == answers[0][1] for _, body in answers)


def _chromium_or_skip():
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: CI must apt-get install chromium "
                    "chromium-driver")
    pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver)")


@pytest.fixture()
def browser(tmp_path):
    _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_page_shows_the_annotated_photos_in_upload_order_in_a_real_browser(
        server, browser, tmp_path):
    """The page names the model and what it was trained on (with the synthetic-data warning),
    shows two uploaded photos in upload order with one chart per face, and a failed upload
    clears them and says why."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos = [tmp_path / "zeta_hopper.jpg", tmp_path / "alpha_hopper.png"]
    cv2.imwrite(str(photos[0]), hopper())
    cv2.imwrite(str(photos[1]), hopper()[:, ::-1])
    browser.get(f"{server}/")
    WebDriverWait(browser, 20).until(
        lambda b: "Model" in b.find_element(By.ID, "model-info").text)
    assert "trained on fer2013_synthetic" in browser.find_element(By.ID, "model-info").text
    warning = browser.find_element(By.ID, "model-warning")
    assert warning.is_displayed() and "synthetic" in warning.text
    browser.find_element(By.ID, "photos").send_keys("\n".join(map(str, photos)))
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(
        "const imgs = [...document.querySelectorAll('img.annotated')];"
        "return imgs.length === 2 && imgs.every((img) => img.complete && img.naturalWidth);"))

    natural = browser.execute_script(
        "const img = document.querySelector('img.annotated');"
        "return [img.naturalWidth, img.naturalHeight];")
    assert natural == [hopper().shape[1], hopper().shape[0]]
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "figcaption")]
    assert captions == ["zeta_hopper.jpg: 1 face(s)", "alpha_hopper.png: 1 face(s)"]
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert [bar.get_attribute("data-class") for bar in bars] == CLASS_NAMES * 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.top")) == 2
    assert re.search(r"2 photo\(s\), 2 face\(s\)", browser.find_element(By.ID, "status").text)
    browser.save_screenshot(str(tmp_path / "webdemo.png"))
    assert (tmp_path / "webdemo.png").stat().st_size > 10_000

    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_text("not an image")
    browser.find_element(By.ID, "photos").send_keys(str(not_a_photo))
    WebDriverWait(browser, 30).until(
        lambda b: "Error" in b.find_element(By.ID, "status").text)
    assert "not an image file" in browser.find_element(By.ID, "status").text
    assert browser.find_elements(By.CSS_SELECTOR, ".result") == []


@pytest.mark.slow
def test_serve_command_starts_on_a_free_port_and_rejects_a_bad_model(export_dir, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "trainer.serve", "--model", tmp_path],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")

    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.serve", "--model", str(export_dir.saved_model),
         "--port", "0", "--host", "127.0.0.1"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = None, time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "the server exited"
            found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url is not None, "no 'Serving ... on http://...' line"
        assert requests.get(f"{url}api/info", timeout=30).json()["class_names"] == CLASS_NAMES
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_busy_port_is_a_user_error_naming_the_address(saved_model):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UnusableAddressError, match=f"cannot listen on 127.0.0.1:{port} "):
            create_server(create_app(saved_model, limits=LIMITS), "127.0.0.1", port, 1, LIMITS)


def test_info_names_the_model_what_it_was_trained_on_and_its_limits(saved_model):
    client = create_app(saved_model, limits=LIMITS).test_client()
    info = json.loads(client.get("/api/info").data)
    assert (info["model"], info["max_upload_bytes"]) == ("saved_model", 2 * 1024 * 1024)
    trained_on = info["provenance"]
    assert (trained_on["dataset"], trained_on["synthetic"], trained_on["weights"]) == (
        "fer2013_synthetic", True, "none")
    assert trained_on["recipe"] == {"trainable_from": "none", "dense_units": 16}
    assert info["trained_on"].startswith("trained on fer2013_synthetic (fer2013 labels")
    assert info["warning"].startswith("warning: this model was trained on synthetic")


def test_every_request_is_logged_in_one_line(saved_model, hopper_jpeg, caplog):
    client = create_app(saved_model, limits=LIMITS).test_client()
    with caplog.at_level(logging.INFO, logger="trainer.inference.webdemo"):
        client.post("/predict", data=hopper_jpeg, content_type="image/jpeg")
        client.post("/predict", data=b"not an image", content_type="image/jpeg")
        client.get("/api/info")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert re.fullmatch(r"POST /predict 200 1 photo\(s\) 1 face\(s\) \d+\.\d\d s", lines[0])
    assert re.fullmatch(r"POST /predict 415 1 photo\(s\) 0 face\(s\) \d+\.\d\d s", lines[1])
    assert re.fullmatch(r"GET /api/info 200 \d+\.\d\d s", lines[2])
