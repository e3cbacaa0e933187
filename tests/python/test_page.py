"""The page at `/` in a real browser (Debian `chromium` and `chromium-driver`, driven by Selenium):
a Fashion-MNIST test image uploaded through the file input is classified as the API classifies
it, the plots have one point per step, the layer heat map moves with the time slider, a new
presentation changes the probabilities, the API's errors are shown in its words, a server that
requires an API key makes the page ask for it and retry with it, feedback edges are drawn, and the
console stays clean. Screenshots go to
target/page-test/ (or $PAGE_TEST_OUT)."""

import gzip
import io
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
from PIL import Image

from conftest import FIXTURES, ROOT, Server

DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
OUT = pathlib.Path(os.environ.get("PAGE_TEST_OUT", ROOT / "target" / "page-test"))
# A test image that is not one of the page's built-in samples.
TEST_INDEX = 13

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and (DATA / "t10k-images-idx3-ubyte.gz").exists()),
    reason="needs Debian chromium, chromium-driver and dataset-fashion-mnist (scripts/setup.sh --test)",
)


def fmnist_png(index):
    images = gzip.open(DATA / "t10k-images-idx3-ubyte.gz").read()
    pixels = images[16 + index * 784:16 + (index + 1) * 784]
    buf = io.BytesIO()
    Image.frombytes("L", (28, 28), pixels).save(buf, "PNG")
    return buf.getvalue()


def post(base, path, png):
    boundary = "page-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + path, data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    # The trained default model (a real decision to watch) and the fixture (a second to choose).
    models = tmp_path_factory.mktemp("models")
    (models / "rgc_fmnist.onnx").symlink_to(ROOT / "models" / "rgc_fmnist.onnx")
    (models / "tiny_convrnn.onnx").symlink_to(FIXTURES / "tiny_convrnn.onnx")
    s = Server(model_dir=models)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="convrnn-page-test-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the element may not exist yet
            value = None
        if value:
            return value
        time.sleep(0.05)
    error = driver.find_element("id", "error").text
    pytest.fail(f"timed out waiting for {what}; the page's error box says: {error!r}")


def settle(driver):
    """Waits until the page has no run in flight and returns how many runs it has finished."""
    wait(driver, lambda: driver.execute_script("return document.body.dataset.busy") == "0", "the page to settle")
    return int(driver.execute_script("return document.body.dataset.runs"))


def settled_after(driver, before):
    wait(driver, lambda: driver.execute_script(
        "return document.body.dataset.busy === '0' && Number(document.body.dataset.runs) > arguments[0]",
        before), "a new answer")


def severe_logs(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver, name, width):
    OUT.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    resize(driver, width, height + 40)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(OUT / name))


# Read in one script: the page redraws its plots when the window is resized.
def top5(driver, run="a"):
    return driver.execute_script("""
        return [...document.querySelectorAll(`.run[data-run="${arguments[0]}"] .top5 li`)]
            .map((li) => [li.querySelector(".label").textContent, li.querySelector(".prob").textContent]);
    """, run)


def plot_points(driver, run="a"):
    return driver.execute_script("""
        return [...document.querySelectorAll(`.run[data-run="${arguments[0]}"] svg.prob-plot polyline.cls`)]
            .map((line) => line.getAttribute("points"));
    """, run)


def resize(driver, width, height):
    driver.set_window_size(width, height)
    time.sleep(0.5)  # the page redraws its plots 150 ms after the last resize


def test_page_shows_the_decision_and_the_layers_unfold(page_server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    base = page_server.base
    driver = browser
    driver.get(base + "/")
    wait(driver, lambda: len(Select(driver.find_element("id", "model")).options) == 2, "the model list")
    Select(driver.find_element("id", "model")).select_by_value("rgc_fmnist")
    meta = page_server.get_json("/v1/models/rgc_fmnist")
    steps, labels = meta["time"]["steps"], meta["labels"]

    png = fmnist_png(TEST_INDEX)
    image = tmp_path / "fmnist-test.png"
    image.write_bytes(png)
    driver.find_element("id", "file").send_keys(str(image))
    settled_after(driver, 0)

    # The top-1 shown is the API's top-1 for the same image.
    status, answer = post(base, "/v1/models/rgc_fmnist/classify?top_k=5", png)
    assert status == 200, answer
    shown = top5(driver)
    assert len(shown) == 5
    assert shown[0][0] == answer["results"][0]["top_k"][0]["label"]
    assert [s[0] for s in shown] == [c["label"] for c in answer["results"][0]["top_k"]]
    assert shown[0][1] == f'{answer["results"][0]["top_k"][0]["probability"] * 100:.1f}%'

    # One curve per class with one point per step, and the readout step marked.
    svg = driver.find_element("css selector", '.run[data-run="a"] svg.prob-plot')
    assert svg.get_attribute("data-steps") == str(steps)
    points = plot_points(driver)
    assert len(points) == len(labels)
    assert all(len(p.split()) == steps for p in points)
    assert svg.find_elements("css selector", "line.readout")

    # The image as the model sees it: the preprocess endpoint's model-sized PNG.
    seen = driver.find_element("id", "seen")
    assert driver.execute_script("return arguments[0].naturalWidth", seen) == meta["input"]["width"]

    # Switch layer; at step 0 conv3 is not driven yet; the time slider (keyboard) moves the map.
    Select(driver.find_element("id", "layer")).select_by_value("conv3")
    wait(driver, lambda: driver.find_element("id", "heat-caption").text.startswith("Run A: conv3"), "conv3's heat map")
    settle(driver)
    heat = driver.find_element("id", "heat")
    assert (heat.get_attribute("width"), heat.get_attribute("height")) == ("4", "4")
    note = driver.find_element("id", "heat-note")
    assert note.is_displayed() and "Not yet driven" in note.text
    before = driver.execute_script("return arguments[0].toDataURL()", heat)
    slider = driver.find_element("id", "time")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert slider.get_attribute("value") == "3"
    assert driver.find_element("id", "time-out").text.startswith("step 3, 30")
    after = driver.execute_script("return arguments[0].toDataURL()", heat)
    assert after != before, "the heat map did not change with the time slider"
    assert not note.is_displayed()
    # One channel instead of the mean over channels.
    Select(driver.find_element("id", "channel")).select_by_value("5")
    assert "channel 5" in driver.find_element("id", "heat-caption").text
    assert driver.execute_script("return arguments[0].toDataURL()", heat) != after
    mean_points = driver.find_element("css selector", "#mean-plot polyline").get_attribute("points")
    assert len(mean_points.split()) == steps

    logs = severe_logs(driver)
    assert not logs, "console errors on the happy path:\n" + "\n".join(logs)
    screenshot(driver, "page-laptop.png", 1280)
    screenshot(driver, "page-phone.png", 390)
    resize(driver, 1280, 900)

    # A shorter presentation changes the probabilities; the page shows what the API answers.
    probabilities = plot_points(driver)
    runs = settle(driver)
    Select(driver.find_element("id", "kind-a")).select_by_value("flash")
    on = driver.find_element("id", "on-a")
    on.clear()
    on.send_keys("1", Keys.TAB)
    settled_after(driver, runs)
    wait(driver, lambda: plot_points(driver) != probabilities, "new probabilities")
    status, flash = post(base, "/v1/models/rgc_fmnist/classify?top_k=5&presentation=flash&on_steps=1", png)
    assert [s[0] for s in top5(driver)] == [c["label"] for c in flash["results"][0]["top_k"]]

    # The curl command shown reproduces run A's answer.
    curl = driver.find_element("id", "curl").text.splitlines()
    command = next(line for line in curl if line.startswith("curl") and "/classify?" in line)
    assert "on_steps=1" in command and base in command
    out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, check=True, timeout=60)
    by_curl = json.loads(out.stdout)["results"][0]
    assert [c["label"] for c in by_curl["top_k"]] == [s[0] for s in top5(driver)]
    assert len(by_curl["per_timestep"]) == steps

    # Compare: run B (image then a mask) side by side, with the mask as the model sees it.
    runs = settle(driver)
    driver.find_element("id", "compare").click()
    settled_after(driver, runs)
    runs = settle(driver)
    Select(driver.find_element("id", "kind-b")).select_by_value("mask")
    settled_after(driver, runs)
    assert len(driver.find_elements("css selector", ".run")) == 2
    assert driver.find_element("id", "mask-seen").is_displayed()
    assert len(driver.find_elements("css selector", "#mean-plot polyline")) == 2
    assert "mask=@" in driver.find_element("id", "curl").text
    logs = severe_logs(driver)
    assert not logs, "console errors:\n" + "\n".join(logs)
    screenshot(driver, "page-compare.png", 1280)
    resize(driver, 1280, 900)

    # Another model: the page re-runs the same presentations on it and lists its layers with regions.
    runs = settle(driver)
    Select(driver.find_element("id", "model")).select_by_value("tiny_convrnn")
    settled_after(driver, runs)
    tiny = page_server.get_json("/v1/models/tiny_convrnn")
    layer_options = [o.text for o in Select(driver.find_element("id", "layer")).options]
    assert len(layer_options) == len(tiny["layers"]) and "conv2 (V4)" in layer_options[1]
    status, answer = post(base, "/v1/models/tiny_convrnn/classify?top_k=5&presentation=flash&on_steps=1", png)
    assert [s[0] for s in top5(driver)] == [c["label"] for c in answer["results"][0]["top_k"]]
    assert all(len(p.split()) == tiny["time"]["steps"] for p in plot_points(driver))

    # The API's error, in its own words.
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a PNG")
    runs = settle(driver)
    driver.find_element("id", "file").send_keys(str(bad))
    wait(driver, lambda: driver.find_element("id", "error").is_displayed(), "the error box")
    status, error = post(base, "/v1/models/rgc_fmnist/classify?per_timestep=true&top_k=5", bad.read_bytes())
    assert status == 400
    assert error["error"] in driver.find_element("id", "error").text
    assert error["code"] in driver.find_element("id", "error").text
    # The browser reports the refused request itself; nothing else may be logged.
    logs = severe_logs(driver)
    assert all("status of 400" in e for e in logs), "\n".join(logs)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    # A server that requires an API key, serving the fixture with long-range feedback.
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text("s3cret\n")
    models = tmp_path_factory.mktemp("keyed-models")
    (models / "tiny_feedback.onnx").symlink_to(FIXTURES / "feedback" / "tiny_feedback.onnx")
    s = Server("--api-key-file", str(keys), model_dir=models)
    yield s
    s.stop()


def test_page_asks_for_a_key_on_401_and_retries_with_it(keyed_server, browser, tmp_path):
    # The server's own 401s: the page asks for the key, keeps asking while it is wrong, then
    # sends it with every request.
    base = keyed_server.base
    driver = browser
    driver.get(base + "/")
    form = driver.find_element("id", "keyform")
    wait(driver, form.is_displayed, "the key form")
    key = driver.find_element("id", "apikey")
    assert driver.switch_to.active_element == key
    key.send_keys("wrong\n")
    # The wrong key is refused by the server and the form comes back.
    wait(driver, lambda: form.is_displayed() and driver.execute_script(
        "return sessionStorage.getItem('convrnn-api-key')") == "wrong", "the key form again")
    key.clear()
    key.send_keys("s3cret\n")
    wait(driver, lambda: driver.execute_script("return document.getElementById('model').options.length") == 1,
         "the model list after the key")
    assert not form.is_displayed()
    image = tmp_path / "fmnist-test.png"
    image.write_bytes(fmnist_png(TEST_INDEX))
    driver.find_element("id", "file").send_keys(str(image))
    settle(driver)
    assert len(top5(driver)) == 5
    assert not driver.find_element("id", "error").is_displayed()
    # Only the first request and the wrong key were refused.
    logs = severe_logs(driver)
    assert all("status of 401" in e for e in logs) and len(logs) <= 2, "\n".join(logs)


def test_page_draws_feedback_edges(keyed_server, page_server, browser):
    from selenium.webdriver.support.ui import Select

    def edges():
        return driver.execute_script("""
            return [...document.querySelectorAll("#arch g.feedback")]
                .map((g) => [g.dataset.from, g.dataset.to, g.querySelector("title").textContent]);
        """)

    # The keyed server's model feeds conv3 back into conv2; the key goes into the session the page
    # reads, so this test does not depend on the 401 test having run before it.
    driver = browser
    driver.get(keyed_server.base + "/")
    driver.execute_script("sessionStorage.setItem('convrnn-api-key', 's3cret')")
    driver.get(keyed_server.base + "/")
    wait(driver, lambda: driver.execute_script("return document.getElementById('model').options.length") == 1,
         "the model list")
    meta = keyed_server.get_json("/v1/models/tiny_feedback", api_key="s3cret")
    layers = {l["name"]: l for l in meta["layers"]}
    want = [[src, name] for name, l in layers.items() for src in l.get("feedback_from", [])]
    assert want == [["conv3", "conv2"]]
    wait(driver, lambda: [e[:2] for e in edges()] == want, "the feedback arc")
    assert "feedback from conv3 to conv2" in edges()[0][2]
    # A model without feedback draws none.
    driver.get(page_server.base + "/")
    wait(driver, lambda: len(Select(driver.find_element("id", "model")).options) == 2, "the model list")
    Select(driver.find_element("id", "model")).select_by_value("rgc_fmnist")
    wait(driver, lambda: driver.execute_script(
        "return document.querySelectorAll('#arch g.node.layer').length") == 4, "rgc_fmnist's graph")
    assert edges() == []

