"""`glyph-train serve` end to end: every route through Flask's test client, then the real command as a
subprocess on 127.0.0.1 driven by a real headless Chromium (Debian's chromium + chromium-driver through
Selenium; nothing is downloaded). Model, index and fonts are test_inference's fixtures: a tiny model trained
on real outlines, an index of two subset fontpkg fonts, and an Amiri subset stripped of cmap and GSUB."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from test_inference import REPO, env  # the work/index fixtures live in conftest.py

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = os.environ.get("GLYPH_TRAIN_SCREENSHOTS")  # a folder: the browser tests save the README's pictures there


@pytest.fixture(scope="module")
def app(work, index, tmp_path_factory):
    from glyph_train.inference.label_font import DEFAULT_MIN_CONFIDENCE
    from glyph_train.serve.app import ServeOptions, create_app

    uploads = tmp_path_factory.mktemp("uploads")
    return create_app(ServeOptions(index, work["export"], uploads, DEFAULT_MIN_CONFIDENCE, max_upload_mb=2,
                                   timeout=300))


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def wait_ready(client, upload_id: str, timeout: float = 400) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get(f"/api/review/{upload_id}").get_json()
        if status["status"] in ("ready", "failed"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"upload {upload_id} not labelled in {timeout} s")


def upload(client, data: bytes, name: str):
    return client.post("/review", data={"font": (io.BytesIO(data), name)}, content_type="multipart/form-data")


@pytest.fixture(scope="module")
def reviewed(client, work) -> str:
    """The stripped Amiri subset, uploaded and labelled."""
    res = upload(client, work["stripped"].read_bytes(), "Amiri-stripped.ttf")
    assert res.status_code == 302
    upload_id = res.headers["Location"].rsplit("/", 1)[1]
    status = wait_ready(client, upload_id)
    assert status["status"] == "ready", status
    return upload_id


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text


# ---------------------------------------------------------------------------------------------- search


def test_search_page_grid_and_results(client):
    assert client.get("/").headers["Location"].endswith("/search")
    page = client.get("/search").get_data(as_text=True)
    assert 'class="char"' in page and ">A</a>" in page and ">ب</a>" in page  # the grid offers the indexed characters
    page = client.get("/search?char=A&k=5").get_data(as_text=True)
    assert page.count('class="card result"') == 5
    assert "LATIN CAPITAL LETTER A" in page and "/img/index/" in page
    for asset in ("style.css", "search.js", "review.js"):  # package data: installed with the package
        assert client.get(f"/static/{asset}").status_code == 200


def test_search_api_by_char_family_and_row(client):
    res = client.get("/api/search?char=ب&form=init&family=Amiri&k=4").get_json()
    assert res["query"]["label"] == "1576_init" and res["query"]["family"] == "Amiri"
    results = res["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4] and res["query"]["row"] not in [r["row"] for r in results]
    assert {"score", "family", "style", "label", "glyph"} <= set(results[0])
    # clicking a result searches from it: that glyph is the query and is left out of its own results
    row = results[0]["row"]
    again = client.get(f"/api/search?row={row}&k=3").get_json()
    assert again["query"]["row"] == row and len(again["results"]) == 3 and row not in [r["row"] for r in again["results"]]
    page = client.get(f"/search?row={row}").get_data(as_text=True)
    assert f'/img/index/{row}.png' in page and 'id="query"' in page
    assert client.get("/api/search?char=A&k=100000").get_json()["results"]  # k is capped, not an error


@pytest.mark.parametrize("query, words", [("char=zz", "one character"), ("char=ж", "no glyph labelled"),
                                          ("char=A&form=sideways", "form"), ("row=999999", "no glyph 999999"),
                                          ("row=abc", "whole number"), ("char=A&family=Nope", "Nope"), ("", "give")])
def test_search_errors_are_one_line_messages(client, query, words):
    res = client.get(f"/api/search?{query}")
    assert res.status_code == 400 and words in res.get_json()["error"]
    no_traceback(res.get_data(as_text=True))
    if query:
        page = client.get(f"/search?{query}").get_data(as_text=True)
        assert 'id="error"' in page and words in page
        no_traceback(page)


def test_families_api_and_status(client):
    assert client.get("/api/families?q=ami").get_json() == ["Amiri"]
    assert client.get("/api/families?q=").get_json() == ["Abril Fatface", "Amiri"]
    status = client.get("/api/status").get_json()
    assert status["glyphs"] > status["vectors"] > 0 and status["families"] == 2


def test_index_images_are_rendered_pngs_and_cached(client, app):
    images = app.extensions["glyph_train"]["images"]
    res = client.get("/img/index/0.png")
    assert res.status_code == 200 and res.mimetype == "image/png"
    img = np.asarray(Image.open(io.BytesIO(res.data)))
    assert img.shape == (96, 96) and img.min() < 128 and img.max() == 255  # dark ink on white
    hits = images.hits
    assert client.get("/img/index/0.png").data == res.data and images.hits == hits + 1
    assert client.get("/img/index/99999999.png").status_code == 400


def test_unexpected_error_is_a_message_and_the_server_goes_on(client, app, monkeypatch):
    catalog = app.extensions["glyph_train"]["catalog"]
    monkeypatch.setattr(catalog, "search_row", lambda *a: 1 / 0)
    res = client.get("/api/search?row=1")
    assert res.status_code == 500 and "ZeroDivisionError" in res.get_json()["error"]
    no_traceback(res.get_data(as_text=True))
    monkeypatch.undo()
    assert client.get("/api/search?row=1").status_code == 200


# ---------------------------------------------------------------------------------------------- review


def test_review_lists_every_glyph_least_confident_first_with_paging(client, reviewed, work):
    names = TTFont(work["stripped"]).getGlyphOrder()
    listing = client.get(f"/api/review/{reviewed}/glyphs?per_page=1000").get_json()
    glyphs = listing["glyphs"]
    assert listing["total"] == len(glyphs) == len(names) - 1  # every glyph but .notdef
    drawn = [g for g in glyphs if g["argmax"]]
    assert [g["confidence"] for g in drawn] == sorted(g["confidence"] for g in drawn)
    assert all(len(g["top5"]) == 5 for g in drawn)
    first = client.get(f"/api/review/{reviewed}/glyphs?per_page=10&page=1").get_json()["glyphs"]
    second = client.get(f"/api/review/{reviewed}/glyphs?per_page=10&page=2").get_json()["glyphs"]
    assert [g["glyph_id"] for g in first + second] == [g["glyph_id"] for g in glyphs[:20]]
    page = client.get(f"/review/{reviewed}?per_page=50").get_data(as_text=True)
    assert page.count('class="glyph ') == 50 and 'id="next-page"' in page and "Download labels CSV" in page
    img = client.get(f"/img/review/{reviewed}/{drawn[0]['glyph_id']}.png")
    assert img.mimetype == "image/png" and np.asarray(Image.open(io.BytesIO(img.data))).min() < 128
    assert "Amiri-stripped.ttf" in client.get("/review").get_data(as_text=True)


def test_review_decisions_csv_and_repaired_font(client, reviewed, work):
    glyphs = client.get(f"/api/review/{reviewed}/glyphs?per_page=1000").get_json()["glyphs"]
    a, b, c = [g for g in glyphs if g["argmax"]][:3]
    post = lambda g, body: client.post(f"/api/review/{reviewed}/glyphs/{g['glyph_id']}", json=body)
    res = post(a, {"action": "change", "label": "66_isol"}).get_json()
    assert res["decision"] == "change" and res["final"] == "66_isol" and res["decided"] == 1
    assert post(b, {"action": "change", "label": "66_isol"}).get_json()["conflicts"] == [a["glyph"]]
    assert post(b, {"action": "reset"}).get_json()["decision"] == ""
    assert post(b, {"action": "accept"}).get_json()["final"] == b["suggested"]
    assert post(c, {"action": "unknown"}).get_json()["final"] == "unknown"
    assert post(c, {"action": "change", "label": "1078_isol"}).get_json()["final"] == "1078_isol"  # not a model label
    for body, words in (({"action": "change", "label": "beh"}, "not a label"), ({"action": "fly"}, "choose one"),
                        ("not json", "send JSON")):
        bad = client.post(f"/api/review/{reviewed}/glyphs/{a['glyph_id']}", json=body) if isinstance(body, dict) else \
            client.post(f"/api/review/{reviewed}/glyphs/{a['glyph_id']}", data=body)
        assert bad.status_code == 400 and words in bad.get_json()["error"]
    assert client.post(f"/api/review/{reviewed}/glyphs/99999", json={"action": "accept"}).status_code == 400
    filtered = client.get(f"/api/review/{reviewed}/glyphs?show=decided").get_json()
    assert {g["glyph_id"] for g in filtered["glyphs"]} == {a["glyph_id"], b["glyph_id"], c["glyph_id"]}

    res = client.get(f"/review/{reviewed}/labels.csv")
    assert res.status_code == 200 and "Amiri-stripped-labels.csv" in res.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(res.get_data(as_text=True))))
    assert rows[0] == ["glyph", "label", "confidence", "top5"]
    by_glyph = {r[0]: r for r in rows[1:]}
    assert by_glyph[a["glyph"]][1] == "66_isol" and by_glyph[c["glyph"]][1] == "1078_isol"
    assert by_glyph[b["glyph"]][1] == b["suggested"]
    assert len(rows) - 1 == len(glyphs)

    before = work["stripped"].read_bytes()
    res = client.get(f"/review/{reviewed}/repaired")
    assert res.status_code == 200 and "cmap of" in res.headers["X-Repair-Summary"]
    repaired = TTFont(io.BytesIO(res.data))  # post format 3: fontTools names glyphs from the new cmap, so compare ids
    cmap = repaired.getBestCmap()
    assert repaired.getGlyphID(cmap[66]) == a["glyph_id"] and repaired.getGlyphID(cmap[1078]) == c["glyph_id"]
    assert work["stripped"].read_bytes() == before


def test_label_picker_finds_labels_by_char_code_point_and_name(client):
    for q in ("ب", "U+0628", "beh", "1576"):
        found = [x["label"] for x in client.get("/api/labels", query_string={"q": q}).get_json()]
        assert "1576_init" in found, q
    assert client.get("/api/labels?q=unk").get_json()[0]["label"] == "unknown"


def test_bad_uploads_get_clear_messages_and_the_server_goes_on(client, app, work):
    res = upload(client, b"hello, not a font", "notes.ttf")
    assert res.status_code == 400 and "notes.ttf: not a font file" in res.get_data(as_text=True)
    assert client.post("/review", data={}, content_type="multipart/form-data").status_code == 400
    res = upload(client, b"x" * (3 * 1024 * 1024), "huge.ttf")
    assert res.status_code == 413 and "2 MB upload limit" in res.get_data(as_text=True)
    # a truncated font passes the quick check and fails in the isolated reader
    res = upload(client, work["stripped"].read_bytes()[:3000], "../../broken.ttf")
    upload_id = res.headers["Location"].rsplit("/", 1)[1]
    status = wait_ready(client, upload_id)
    assert status["status"] == "failed" and status["name"] == "broken.ttf"
    assert "broken.ttf" in status["message"] and "not a readable font" in status["message"]
    assert str(app.extensions["glyph_train"]["reviews"].root) not in status["message"]
    page = client.get(f"/review/{upload_id}").get_data(as_text=True)
    assert "not a readable font" in page
    no_traceback(page)
    for path in (f"/review/{upload_id}/labels.csv", "/review/0123456789abcdef", "/review/..%2F..%2Fetc",
                 "/api/review/../../etc/passwd/glyphs", "/img/review/0123456789abcdef/1.png"):
        assert client.get(path).status_code in (400, 404), path
    assert client.get("/api/search?char=A").status_code == 200
    assert client.post(f"/review/{upload_id}/delete").status_code == 302
    assert client.get(f"/api/review/{upload_id}").status_code == 404


def test_isolated_worker_survives_crash_and_timeout():
    from glyph_train.errors import GlyphTrainError
    from glyph_train.serve.isolated import run_isolated

    with pytest.raises(GlyphTrainError, match="stopped .exit code 3"):
        run_isolated(os._exit, (3,), 60, "crash.ttf")
    start = time.time()
    with pytest.raises(GlyphTrainError, match="gave up after 1 s"):
        run_isolated(time.sleep, (60,), 1, "slow.ttf")
    assert time.time() - start < 30
    assert run_isolated(divmod, (7, 2), 60, "x") == (3, 1)


def test_export_file_names_match_the_export_module():
    from glyph_train.model import export
    from glyph_train.serve import app

    assert (app.LABELS, app.CONFIG) == (export.LABELS, export.CONFIG)


# ---------------------------------------------------------------------------------------------- the real server


class Server:
    def __init__(self, work, index, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "glyph_train.cli", "serve", "--index", str(index), "--checkpoint",
               str(work["export"]), "--port", "0"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**env(), "TMPDIR": str(tmp)}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + self.proc.stderr.read()[-3000:]
        self.url = m.group(0).rstrip("/")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as res:
            return res.read()

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server(work, index, tmp_path_factory):
    srv = Server(work, index, tmp_path_factory.mktemp("server-tmp"))
    yield srv
    srv.stop()


def browser_available() -> bool:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return True
    if os.environ.get("CI"):
        pytest.fail("CI must run the browser tests: tests/setup_browser.sh installs chromium and chromium-driver")
    return False


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not browser_available():
        pytest.skip("no /usr/bin/chromium + chromedriver (bash tests/setup_browser.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 120, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, name: str, tmp: Path) -> None:
    path = Path(SCREENSHOTS or tmp) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    assert Image.open(path).size[0] > 0


def test_browser_search_shows_k_result_images_and_searches_from_a_result(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server.url + "/search")
    browser.find_element(By.ID, "char").send_keys("A")
    Select(browser.find_element(By.ID, "k")).select_by_visible_text("12")
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    images = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .result img"), what="results")
    assert len(images) == 12
    wait_for(lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) == 96
                         for i in images), what="result images to load")
    screenshot(browser, "serve_search.png", tmp_path)
    first = browser.find_element(By.CSS_SELECTOR, "#results .result")
    first_family = first.find_element(By.CSS_SELECTOR, ".family").text
    first.click()
    wait_for(lambda: "row=" in browser.current_url, what="search from a result")
    assert first_family in browser.find_element(By.ID, "query").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .result img")) == 12


def test_browser_review_change_a_label_and_download_the_csv(server, browser, work, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/review")
    browser.find_element(By.ID, "font-file").send_keys(str(work["stripped"]))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait_for(lambda: browser.find_elements(By.ID, "glyphs"), timeout=400, what="the labelled font")
    row = browser.find_elements(By.CSS_SELECTOR, "tr.glyph")[1]
    glyph = row.get_attribute("data-glyph")
    row.find_element(By.CSS_SELECTOR, ".label-input").send_keys("66_isol")
    row.find_element(By.CSS_SELECTOR, "button.change").click()
    wait_for(lambda: "change" in row.find_element(By.CSS_SELECTOR, ".final").text, what="the decision")
    assert "LATIN CAPITAL LETTER B" in row.find_element(By.CSS_SELECTOR, ".final").text
    assert browser.find_element(By.ID, "decided").text == "1"
    screenshot(browser, "serve_review.png", tmp_path)
    browser.find_element(By.ID, "download-csv").click()
    done = wait_for(lambda: [p for p in browser.downloads.glob("*.csv")], what="the CSV download")
    rows = {r[0]: r for r in csv.reader(done[0].open(encoding="utf-8"))}
    assert rows["glyph"] == ["glyph", "label", "confidence", "top5"]
    assert rows[glyph][1] == "66_isol"


def test_stopping_the_server_removes_its_uploads(server, work):
    assert server.url.startswith("http://127.0.0.1:")  # localhost by default
    res = urllib.request.urlopen(urllib.request.Request(
        server.url + "/review", method="POST", data=b"--x\r\nContent-Disposition: form-data; name=\"font\"; "
        b"filename=\"f.ttf\"\r\n\r\n" + work["stripped"].read_bytes() + b"\r\n--x--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x"}), timeout=60)
    assert res.status == 200  # redirected to the (waiting or finished) review page
    assert any(server.tmp.glob("glyph-train-serve-*/*/font.ttf"))
    rc, err = server.stop()
    assert rc == 0, err[-2000:]
    assert not list(server.tmp.glob("glyph-train-serve-*"))
    no_traceback(err)


def test_serve_command_refuses_bad_index_export_and_busy_port(work, index, tmp_path, monkeypatch, capsys):
    import socket
    import tempfile

    from glyph_train.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["serve", "--index", str(tmp_path / "nope"), "--checkpoint", str(work["export"])]) == 2
    assert main(["serve", "--index", str(index), "--checkpoint", str(tmp_path)]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--index", str(index), "--checkpoint", str(work["export"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "not a glyph-train index" in err and "not a glyph-train export" in err and "choose another --port" in err
    no_traceback(err)
    assert not list(tmp_path.glob("glyph-train-serve-*"))  # the upload folder goes even when start-up fails
