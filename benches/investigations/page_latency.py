"""A classification from the page (headless Chromium, the page's own status line: fetch to
answer, and drawing) against the same request from curl, alternating, on a running server.

Run: .venv/bin/python benches/investigations/page_latency.py http://127.0.0.1:8080 [N]
(needs Debian chromium and chromium-driver, and selenium from requirements-test.txt; the
server must serve rgc_fmnist).
"""

import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

base = sys.argv[1].rstrip("/")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
image = pathlib.Path(__file__).resolve().parents[2] / "src/api/page/samples/shirt.png"
profile = tempfile.mkdtemp(prefix="page-latency-")
options = webdriver.ChromeOptions()
options.binary_location = shutil.which("chromium")
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", f"--user-data-dir={profile}"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
try:
    driver.get(base + "/")
    time.sleep(1)
    driver.find_element("id", "file").send_keys(str(image))
    page, drawn, curl = [], [], []
    for _ in range(n):
        runs = int(driver.execute_script("return document.body.dataset.runs"))
        driver.find_element("id", "run").click()
        while not driver.execute_script(
                "return document.body.dataset.busy === '0' && Number(document.body.dataset.runs) > arguments[0]", runs):
            time.sleep(0.02)
        status = driver.find_element("id", "status").text
        m = re.search(r"in ([\d.]+) ms round trip .* drawn in ([\d.]+) ms", status)
        page.append(float(m.group(1)))
        drawn.append(float(m.group(2)))
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-F", f"image=@{image}",
                              base + "/v1/models/rgc_fmnist/classify?per_timestep=true&top_k=5"],
                             capture_output=True, text=True, check=True)
        curl.append(float(out.stdout) * 1000)
finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
med = statistics.median
print(f"page: classify round trip median {med(page):.1f} ms (min {min(page):.1f}), drawing median "
      f"{med(drawn):.1f} ms; curl: median {med(curl):.1f} ms (min {min(curl):.1f}); n={n} each, alternating")
