"""The web page in a real browser: headless Chromium opens /, submits a sentence (or a question and its
context), sees the result.

Needs Chromium and chromedriver on the PATH: `make test` installs Debian's `chromium` and
`chromium-driver` first where apt can (as root); elsewhere the test skips and says so. XLMR_SERVE_MODEL serves a real model instead of the tiny random one, and
XLMR_SCREENSHOT names where the screenshot goes (docs/serve_page.png was made that way).
"""

import os
import shutil
from pathlib import Path

import pytest

from serve_models import start_server, stop_server, tiny_finetuned

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,700"]


def find_browser() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def chromium():
    pytest.importorskip("selenium")
    browser, driver = find_browser()
    if not (browser and driver):
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
        pytest.skip(f"no browser: {missing} not on PATH (`make browser` installs Debian's chromium and "
                    f"chromium-driver where apt-get runs as root)")
    return browser, driver


@pytest.mark.slow
def test_page_shows_entities(chromium, tmp_path, minilm_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    model = os.environ.get("XLMR_SERVE_MODEL") or tiny_finetuned(tmp_path / "ner", "ner", minilm_dir, favour="B-PER")
    proc, url = start_server(model)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromium[1]), options=options)
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 30).until(lambda d: "ner model" in d.find_element(By.ID, "meta").text)
        sentence = "Angela Merkel met the Siemens board in Paris ."
        driver.find_element(By.ID, "text").send_keys(sentence)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, "mark.entity")))
        marks = driver.find_elements(By.CSS_SELECTOR, "mark.entity")
        assert any("Angela" in m.text for m in marks)
        assert driver.find_element(By.ID, "entities").text.replace("\n", " ").count("Paris") == 1
        assert driver.find_element(By.ID, "error").text == ""
        shot = Path(os.environ.get("XLMR_SCREENSHOT") or tmp_path / "serve_page.png")
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    finally:
        driver.quit()
        stop_server(proc)


@pytest.mark.slow
def test_page_shows_the_answer_in_its_context(chromium, tmp_path, minilm_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    model = tiny_finetuned(tmp_path / "qa", "qa", minilm_dir, favour="zebra")  # every answer is "zebra"
    proc, url = start_server(model)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromium[1]), options=options)
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 30).until(lambda d: "qa model" in d.find_element(By.ID, "meta").text)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "context").is_displayed())
        context = "The old mill stands by the river, and a zebra sleeps in the garden."
        driver.find_element(By.ID, "text").send_keys("Who sleeps in the garden?")
        driver.find_element(By.ID, "context").send_keys(context)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, "mark.answer")))
        assert driver.find_element(By.CSS_SELECTOR, "mark.answer").text == "zebra"
        assert driver.find_element(By.ID, "answer-context").text == context  # the whole context, answer marked
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()
        stop_server(proc)
