"""The SVGs in a real browser: headless Chromium (Debian's) driven by selenium.

The flame graph zooms, resets, searches and shows tooltips, and still draws
with JavaScript off; the call tree and the diff draw and show their tooltips.
Run by ``make test`` (SKBPATH_REQUIRE_LAB=1 there: a missing browser fails).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from skbpath.render.changes import Side
from skbpath.render.diff import PALETTE_NAME, diff_svg
from skbpath.render.dot import calltree_dot, dot_to_svg
from skbpath.render.flamegraph import PAD, WIDTH, calltree_flamegraph
from skbpath.tracer.kernel.atlas import atlas_details
from skbpath.tracer.model.replay import replay

from tests.browser.chromium import chromium, file_url, missing, png_colours
from tests.conftest import browser_unavailable

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_traces" / "tcp_rr.skbtrace"
INNER = WIDTH - 2 * PAD
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def svgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flamegraph.svg, calltree.svg and diff.svg of a sample, as render and diff write them."""
    out = tmp_path_factory.mktemp("svgs")
    rep = replay(str(SAMPLE), keep_journeys=False)
    tree = rep.model.calltree
    details = atlas_details(tree.funcs)
    before = replay(str(ROOT / "sample_traces" / "fentry_rr.skbtrace"), keep_journeys=False)
    files = {
        "flamegraph": calltree_flamegraph(tree, title="tcp_rr", details=details),
        "calltree": dot_to_svg(calltree_dot(tree, title="tcp_rr", details=details)),
        "diff": diff_svg(Side(before.model.calltree, 1), Side(tree, 1), metric="per-call",
                         normalize=False, title="fentry_rr → tcp_rr", details=details),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = out / f"{name}.svg"
        paths[name].write_text(text, encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (starting one costs seconds of a shared CPU)."""
    why = missing()
    if why:
        browser_unavailable(why)
    with chromium() as driver:
        yield driver


def _open(driver: Any, path: Path) -> None:
    driver.get(file_url(str(path)))
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg"))


def _rect(driver: Any, g: Any) -> tuple[float, float]:
    r = g.find_element(By.CSS_SELECTOR, "rect")
    return float(r.get_attribute("x")), float(r.get_attribute("width"))


def _frame(driver: Any, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'g.f[data-n="{name}"]')


def _visible(g: Any) -> bool:
    return "hide" not in (g.get_attribute("class") or "").split()


_STATE = """return Array.prototype.map.call(document.querySelectorAll("g.f"), function (g) {
  var r = g.querySelector("rect");
  return [+g.getAttribute("data-x"), +g.getAttribute("data-w"), +g.getAttribute("data-d"),
          g.getAttribute("class"), +r.getAttribute("x"), +r.getAttribute("width")];
});"""


def test_flamegraph_click_zooms_and_reset_restores(browser: Any, svgs: dict[str, Path]) -> None:
    _open(browser, svgs["flamegraph"])
    # One script call reads every frame (a WebDriver call per attribute is slow).
    before = browser.execute_script(_STATE)
    target = _frame(browser, "tcp_sendmsg")
    tx, tw = int(target.get_attribute("data-x")), int(target.get_attribute("data-w"))
    td = int(target.get_attribute("data-d"))
    ActionChains(browser).move_to_element(target.find_element(By.CSS_SELECTOR, "rect")) \
        .click().perform()
    x, w = _rect(browser, target)
    assert x == pytest.approx(PAD, abs=0.01) and w == pytest.approx(INNER, abs=0.01)
    assert _visible(browser.find_element(By.ID, "unzoom"))
    ancestors = descendants = hidden = 0
    for gx, gw, gd, cls, _rx, rw in browser.execute_script(_STATE):
        classes = cls.split()
        if (gx, gw, gd) == (tx, tw, td):
            continue
        if gd < td and gx <= tx and gx + gw >= tx + tw:
            ancestors += 1  # they stay, full width, faded
            assert "hide" not in classes and "parent" in classes
            assert rw == pytest.approx(INNER, abs=0.01)
        elif gd > td and gx >= tx and gx + gw <= tx + tw:
            descendants += 1
            assert "hide" not in classes
        else:
            hidden += 1
            assert "hide" in classes
    assert ancestors == td and descendants > 0 and hidden > 0
    browser.find_element(By.ID, "unzoom").click()
    assert browser.execute_script(_STATE) == before
    assert not any("hide" in f[3].split() for f in before)
    assert not _visible(browser.find_element(By.ID, "unzoom"))


def test_flamegraph_search_highlights_and_shows_the_percentage(
    browser: Any, svgs: dict[str, Path]
) -> None:
    _open(browser, svgs["flamegraph"])
    browser.find_element(By.ID, "search").click()
    alert = WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert)
    alert.send_keys("^ip_")
    alert.accept()
    matched = browser.find_elements(By.CSS_SELECTOR, "g.f.match")
    names = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('g.f'), function (g) {"
        " return [g.getAttribute('data-n'), g.classList.contains('match')]; });")
    assert matched and all(hit == n.startswith("ip_") for n, hit in names)
    # Highlighted in the page: the match colour is what is drawn.
    fill = matched[0].find_element(By.CSS_SELECTOR, "rect").value_of_css_property("fill")
    assert fill == "rgb(230, 0, 230)"
    # The percentage is the union of the matched spans over the total.
    spans = sorted((int(g.get_attribute("data-x")), int(g.get_attribute("data-x")) +
                    int(g.get_attribute("data-w"))) for g in matched)
    covered, end = 0, -1
    for a, b in spans:
        if b > end:
            covered += b - max(a, end)
            end = b
    total = int(browser.find_element(By.CSS_SELECTOR, 'g.f[data-d="0"]').get_attribute("data-w"))
    text = browser.find_element(By.ID, "matched").text
    assert text == f"Matched: {100 * covered / total:.1f}%"
    assert browser.find_element(By.ID, "search").text == "Clear search"
    browser.find_element(By.ID, "search").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "g.f.match")


def test_flamegraph_hover_shows_the_tooltip_with_the_atlas_summary(
    browser: Any, svgs: dict[str, Path]
) -> None:
    _open(browser, svgs["flamegraph"])
    g = _frame(browser, "tcp_sendmsg")
    ActionChains(browser).move_to_element(g.find_element(By.CSS_SELECTOR, "rect")).perform()
    status = browser.find_element(By.ID, "details").text
    assert status.startswith("tcp_sendmsg") and "layer: transport" in status
    # The tooltip is the element under the pointer's <title>: it has the atlas summary.
    under = browser.execute_script(
        "var r = arguments[0].getBoundingClientRect();"
        "var e = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        "var g = e && e.closest('g.f'); return g ? g.querySelector('title').textContent : null;",
        g.find_element(By.CSS_SELECTOR, "rect"))
    summary = atlas_details(replay(str(SAMPLE), keep_journeys=False).funcs)["tcp_sendmsg"]
    assert under is not None and under.startswith("tcp_sendmsg") and summary in under


def test_flamegraph_renders_without_javascript(svgs: dict[str, Path]) -> None:
    why = missing()
    if why:
        browser_unavailable(why)
    with chromium(javascript=False) as driver:
        _open(driver, svgs["flamegraph"])
        frames = driver.find_elements(By.CSS_SELECTOR, "g.f")
        assert len(frames) > 20
        target = _frame(driver, "tcp_sendmsg")
        ActionChains(driver).move_to_element(target.find_element(By.CSS_SELECTOR, "rect")) \
            .click().perform()
        # No script: a click does not zoom, and the hover status stays empty.
        assert _rect(driver, target)[1] < INNER - 1
        assert driver.find_element(By.ID, "details").text == ""
        labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "g.f text") if t.text]
        assert "tcp_sendmsg" in labels
        colours = png_colours(driver.find_element(By.CSS_SELECTOR, "svg").screenshot_as_png)
        # The layer colours are drawn: socket blue and transport green among them.
        assert (0x4E, 0x79, 0xA7) in colours and (0x59, 0xA1, 0x4F) in colours


def test_calltree_renders_and_shows_tooltips(browser: Any, svgs: dict[str, Path]) -> None:
    _open(browser, svgs["calltree"])
    nodes = browser.find_elements(By.CSS_SELECTOR, "g.node")
    assert len(nodes) > 10
    sizes = [n.size for n in nodes]
    assert all(s["width"] > 5 and s["height"] > 5 for s in sizes)
    node = next(n for n in nodes if "tcp_sendmsg" in n.text)
    ActionChains(browser).move_to_element(node).perform()
    tip = browser.execute_script(
        "var r = arguments[0].getBoundingClientRect();"
        "var e = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        "var a = e && e.closest('a');"
        "return a ? a.getAttributeNS('http://www.w3.org/1999/xlink', 'title') : null;", node)
    assert tip is not None and tip.startswith("tcp_sendmsg")
    assert re.search(r"calls: [\d,]+", tip) and "p99" in tip


def test_diff_renders_and_shows_tooltips(browser: Any, svgs: dict[str, Path]) -> None:
    _open(browser, svgs["diff"])
    frames = browser.find_elements(By.CSS_SELECTOR, "g.f")
    assert len(frames) > 20
    assert PALETTE_NAME in browser.find_element(By.ID, "legend").text
    tip = browser.find_element(By.ID, "tip")
    assert not tip.is_displayed()
    g = _frame(browser, "tcp_sendmsg")
    ActionChains(browser).move_to_element(g.find_element(By.CSS_SELECTOR, "rect")).perform()
    assert tip.is_displayed()
    text = tip.text
    assert text.startswith("tcp_sendmsg") and "per call:" in text and "p99" in text
    box = tip.find_element(By.CSS_SELECTOR, "rect").rect
    page = browser.find_element(By.CSS_SELECTOR, "svg").rect
    assert box["width"] > 100 and box["x"] >= page["x"] - 1
    assert box["x"] + box["width"] <= page["x"] + page["width"] + 1
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "title")).perform()
    assert not tip.is_displayed()
    colours = png_colours(browser.find_element(By.CSS_SELECTOR, "svg").screenshot_as_png)
    assert len(colours) > 20
    # The flame graph's zoom works on the diff too: the clicked frame fills the width.
    ActionChains(browser).move_to_element(g.find_element(By.CSS_SELECTOR, "rect")).click() \
        .perform()
    x, w = _rect(browser, g)
    assert x == pytest.approx(PAD, abs=0.01) and w == pytest.approx(INNER, abs=0.01)
    browser.find_element(By.ID, "unzoom").click()
    assert _rect(browser, g)[1] < INNER - 1


SAMPLES = sorted(p.stem for p in (ROOT / "sample_traces").glob("*.skbtrace"))
_replays: dict[str, Any] = {}


def _replay(name: str) -> Any:
    """Each sample replayed once for the module (each is used twice, as AFTER and BEFORE)."""
    if name not in _replays:
        _replays[name] = replay(str(ROOT / "sample_traces" / f"{name}.skbtrace"),
                                keep_journeys=False)
    return _replays[name]


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_every_sample_draws_in_the_browser(browser: Any, tmp_path: Path, i: int) -> None:
    """Each sample's flame graph, call tree and diff (against the next sample) draw, and hover."""
    from skbpath.tracer.model.replay import POINT_MODES, default_weight

    name, other = SAMPLES[i], SAMPLES[(i + 1) % len(SAMPLES)]
    reps = [_replay(n) for n in (other, name)]
    sides = [Side(r.model.calltree, 1, points=r.contents.header.get("attach") in POINT_MODES)
             for r in reps]
    tree = reps[1].model.calltree
    metric = "calls" if sides[0].points or sides[1].points else "per-call"
    files = {
        "flamegraph": calltree_flamegraph(tree, weight=default_weight(reps[1].contents.header),
                                          title=name),
        "calltree": dot_to_svg(calltree_dot(tree, title=name)),
        "diff": diff_svg(sides[0], sides[1], metric=metric, normalize=False, title=name),
    }
    for kind, text in files.items():
        path = tmp_path / f"{kind}.svg"
        path.write_text(text, encoding="utf-8")
        _open(browser, path)
        selector = "g.node" if kind == "calltree" else 'g.f:not([data-d="0"])'
        shapes = browser.find_elements(By.CSS_SELECTOR, selector)
        assert shapes, f"{name}: {kind} draws nothing"
        big = max(shapes, key=lambda s: s.size["width"])
        assert big.size["width"] > 20 and big.size["height"] > 5
        ActionChains(browser).move_to_element(big).perform()
        if kind == "diff":
            assert browser.find_element(By.ID, "tip").is_displayed()
        elif kind == "flamegraph":
            assert browser.find_element(By.ID, "details").text.strip()
