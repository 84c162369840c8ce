"""End to end: the real app on a free port, driven through gradio_client and through headless Chromium."""

import os
import shutil

import numpy as np
import pytest
from conftest import launch_local
from PIL import Image

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app_url(tiny_configs):
    from studio import app

    demo = app.build_app(clip="tiny-test-vit", device="cpu")
    url = launch_local(demo)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def red_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    arr = np.full((64, 64, 3), 255, np.uint8)
    arr[16:48, 16:48] = (220, 20, 20)
    Image.fromarray(arr).save(path)
    return str(path)


def test_lens_through_gradio_client(app_url, red_png):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    top, table, notice = client.predict("tiny-test-vit", handle_file(red_png), "a red square, a blue circle, a cat",
                                        api_name="/lens_classify")
    labels = [row[0] for row in table["data"]]
    probs = [row[1] for row in table["data"]]
    assert sorted(labels) == ["a blue circle", "a cat", "a red square"]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    assert top["label"] == labels[0]
    # Bad input comes back as a readable error, and the server keeps answering.
    with pytest.raises(Exception, match="labels"):
        client.predict("tiny-test-vit", handle_file(red_png), " , ", api_name="/lens_classify")
    again = client.predict("tiny-test-vit", handle_file(red_png), "a, b", api_name="/lens_classify")
    assert len(again[1]["data"]) == 2


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (.ci/run installs it)")
def test_lens_in_a_real_browser(app_url, red_png, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url, wait_until="domcontentloaded", timeout=60_000)
        for tab in ("CLIP Lens", "Vector Sketch", "Text to Image", "Latent Editing"):
            expect(page.get_by_role("tab", name=tab, exact=True)).to_be_visible(timeout=60_000)
        # What the chosen CLIP will really run is on the page before the first click (issue 16).
        expect(page.get_by_text("tiny-test-vit: random weights").first).to_be_visible(timeout=30_000)
        # A non-image renamed .png reaches our reader and its message, not Gradio's preprocess error (issue 16).
        fake = tmp_path / "fake.png"
        fake.write_text("this is not an image")
        page.locator("input[type=file]").first.set_input_files(str(fake))
        expect(page.get_by_text("could not be read as an image").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Could not preprocess")).to_have_count(0)
        page.get_by_label("Clear").first.click()
        page.locator("input[type=file]").first.set_input_files(red_png)
        page.get_by_label("Candidate labels (comma or newline separated)").fill("a red square, a blue circle")
        page.get_by_role("button", name="Rank labels", exact=True).click()
        table = page.locator("#lens-table")
        expect(table).to_contain_text("a blue circle", timeout=60_000)
        expect(table).to_contain_text("a red square", timeout=60_000)
        # Bad input shows Gradio's error toast with our message instead of breaking the page.
        page.get_by_label("Candidate labels (comma or newline separated)").fill(" , ")
        page.get_by_role("button", name="Rank labels", exact=True).click()
        expect(page.get_by_text("must name at least one label")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "lens.png"), full_page=True)
        browser.close()
