"""`analyze report --html`: one self-contained page, tested in a real headless Chromium.

The results come from `analyze score --bootstrap` on a real cache (so Table 1 carries the
significance marks and the frame browser reads the cache); the page is loaded from its file
in Debian's `chromium` (driven by Playwright, `executable_path`: no browser is downloaded).
Checked: no console error, no request other than the file itself (and its data: URIs), the
tables' rows, sorting a column by clicking its header, the tooltip of a curve, and a
non-blank screenshot of every section.
"""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.factories import run_analyze, scored_signal_cache

SCORERS = ("msp", "maxlogit", "energy")


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    _, out = scored_signal_cache(tmp, 8, (24, 32), 4, SCORERS, "0.5,1,2", 100)
    run_analyze(["report", "--results", str(out), "--out", str(tmp / "report"), "--html", "--holm", "--bootstrap", "200",
          "--cache", str(tmp / "c.zarr")])
    return tmp / "report" / "index.html"


def test_page_is_one_self_contained_file(page_path):
    text = page_path.read_text()
    assert "paired frame bootstrap" in text and "Holm-corrected" in text  # the method, in Table 1's caption
    for needle in ("http://", "https://", "<link", 'src="/', "@import", "url("):
        assert needle not in text, needle
    assert text.count('<img src="data:image/png;base64,') >= 3 * 2  # temperature, bars, frames
    tex = (page_path.parent / "table1.tex").read_text()
    assert r"\textbf" in tex and "paired frame bootstrap" in tex


def _chromium():
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed here (apt-get install -y chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    return exe, sync_api


def _non_blank(png: bytes) -> None:
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int64)
    colours = np.unique(a.reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1]))
    assert a.std() > 5 and colours.size > 8


def _column(page, table, j):
    return page.eval_on_selector_all(f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{j}].dataset.v)")


def test_page_in_headless_chromium(page_path):
    exe, sync_api = _chromium()
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        assert page.locator("#table1 tbody tr").count() == len(SCORERS)
        assert page.locator("#table2 tbody tr").count() == 3  # T = 0.5, 1, 2
        heads = page.eval_on_selector_all("#table1 thead th", "hs => hs.map(h => h.textContent)")
        j = next(i for i, h in enumerate(heads) if "AuPRC" in h)
        before = _column(page, "table1", j)
        page.click(f"#table1 thead th:nth-child({j + 1})")
        up = _column(page, "table1", j)
        page.click(f"#table1 thead th:nth-child({j + 1})")
        down = _column(page, "table1", j)
        assert [float(v) for v in up] == sorted(float(v) for v in before)
        assert [float(v) for v in down] == sorted((float(v) for v in before), reverse=True)
        hit = page.locator("svg.curves").first.locator("polyline.hit").last  # drawn on top
        x, y = (float(v) for v in hit.get_attribute("points").split()[5].split(","))
        hit.scroll_into_view_if_needed()
        box = page.locator("svg.curves").first.bounding_box()
        page.mouse.move(box["x"] + x, box["y"] + y)
        assert page.locator("#tip").is_visible()
        assert page.locator("#tip").text_content() == hit.get_attribute("data-label")
        assert page.locator("svg.curves polyline.hot").count() == 1
        assert page.locator("#frame-group option").count() == len(SCORERS)
        assert page.locator(".browser .group.on .frame").count() == 8
        for section in ("table1", "table2", "curves", "temperature", "bars", "frames"):
            _non_blank(page.locator(f"section#{section}").screenshot())
        browser.close()
    assert not errors, errors
    assert [u for u in requests if not u.startswith("data:")] == [page_path.as_uri()]
