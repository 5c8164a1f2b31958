"""Files and search in the page (docs/protocol.md sections 20 and 21): an
upload by the file input, shown inline to another page; a text file's card
whose link downloads the same bytes; an upload over the limit said in words;
a refused token renewed once; a search whose hit opens the room at the
message. Real Chromium against a real server process."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import NETWORK_NOISE, Page

from chatproto import codec
from tests.browser.test_conversations import joined

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots" / "web"


def shot(page: Page, name: str) -> None:
    """A screenshot in build/screenshots/web/; with CHAT_UPDATE_SCREENSHOTS=1
    also docs/web-<name>.png (the pictures of docs/using.md's files and search)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.here().save_screenshot(str(path))
    if os.environ.get("CHAT_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / f"web-{name}.png")


def png(path, width: int, height: int) -> bytes:
    """A real PNG of that size at ``path`` (a chart of sorts); its bytes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (245, 247, 250))
    draw = ImageDraw.Draw(image)
    bars = 8
    for n in range(bars):
        left = width * (2 * n + 1) // (2 * bars + 1)
        top = height - height * (n % 5 + 2) // 8
        draw.rectangle([left, top, left + width // (2 * bars + 1), height - 1], fill=(47, 111, 222))
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


def attach(page: Page, path) -> None:
    """Choose ``path`` with the attach button's file input, as a person would."""
    page.find("#file-input").send_keys(str(path))


def upload_state(page: Page) -> list[str]:
    return page.js("return [...document.querySelectorAll('#attachments li')].map(li => li.dataset.state)")


def uploaded(page: Page) -> None:
    page.wait(lambda: upload_state(page) == ["done"], "the upload to finish")


def allow_refusal(pages, status: int) -> None:
    """The browser logs every refused request as an error: here one is the test's point."""
    pages.allowed = re.compile(
        rf"{NETWORK_NOISE.pattern}|/files\?room=general&name=\S+ - Failed to load resource: .* {status} "
    )


def loaded_images(page: Page, css: str) -> list[dict]:
    """Each image of ``css`` the browser has fully loaded, with its sizes."""
    script = """
        return [...document.querySelectorAll(arguments[0])]
            .filter(img => img.complete && img.naturalWidth > 0)
            .map(img => ({w: img.naturalWidth, h: img.naturalHeight, src: img.src}))"""
    return page.js(script, css)


def test_an_image_chosen_with_the_file_input_shows_inline_to_another_page(pages, peers, tmp_path):
    png(tmp_path / "chart.png", 640, 400)
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    desk = peers("desk")
    joined(desk, "general")
    attach(ann, tmp_path / "chart.png")
    uploaded(ann)
    assert ann.find("#attachments .file-name").text == "chart.png"
    ann.say("the new chart")
    sent = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert sent.text == "the new chart"
    assert [(f.name, f.type, f.width, f.height, f.thumb) for f in sent.files] == [
        ("chart.png", "image/png", 640, 400, True)
    ]
    assert ann.find("#attachments").get_attribute("hidden") is not None, "the list empties once sent"
    thumbs = "#transcript li[data-seq] button.file.image img"
    shown = bob.wait(lambda: loaded_images(bob, thumbs), "the thumbnail loaded on bob's page")
    assert shown[0]["w"] == 320 and shown[0]["h"] == 200, "the server's thumbnail, not the whole image"
    assert f"/files/{sent.files[0].id}/thumb" in shown[0]["src"]
    assert "token=" not in shown[0]["src"], "an open room's files need no token"
    bob.find(thumbs).click()
    bob.wait(lambda: bob.find("#image-overlay").is_displayed(), "the overlay")
    whole = bob.wait(lambda: loaded_images(bob, "#overlay-image"), "the whole image in the overlay")
    assert (whole[0]["w"], whole[0]["h"]) == (640, 400)
    assert bob.find("#overlay-name").text == "chart.png"
    bob.find("#overlay-close").click()
    bob.wait(lambda: not bob.find("#image-overlay").is_displayed(), "the overlay closed")
    bob.say("nice, thanks")
    shot(bob, "files")


def test_a_text_file_card_downloads_the_same_bytes(pages, peers, tmp_path, driver):
    data = "release notes\nline two: ünïcödé\n".encode()
    source = tmp_path / "notes.txt"
    source.write_bytes(data)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    attach(ann, source)
    uploaded(ann)
    ann.find("#composer button[type=submit]").click()  # a file alone: no text needed
    card = "#transcript li[data-seq] .file.card"
    bob.wait(lambda: bob.all(card), "the card on bob's page")
    assert bob.find(f"{card} .file-name").text == "notes.txt"
    assert bob.find(f"{card} .file-size").text == f"{len(data)} B"
    link = bob.find(f"{card} a.download")
    assert link.get_attribute("download") == "notes.txt"
    bob.here().execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    link.click()
    saved = downloads / "notes.txt"
    bob.wait(lambda: saved.exists() and saved.read_bytes() == data, "the download, byte for byte")
    assert os.listdir(downloads) == ["notes.txt"]


@pytest.mark.parametrize("server_args", [("--max-upload", "1000")])
def test_an_upload_over_the_limit_is_said_in_words_and_sends_nothing(pages, peers, tmp_path):
    allow_refusal(pages, 413)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5000))
    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    attach(ann, big)
    ann.wait(lambda: upload_state(ann) == ["failed"], "the upload refused")
    said = ann.find("#attachments .upload-state").text
    assert said == "big.bin is too large: files are at most 1000 B."
    # The server's own refusal, had the page not known the limit: the same words.
    ann.js("window.chatApp.session.limits.max_upload = 1e9")
    ann.find("#attachments .remove").click()
    attach(ann, big)
    ann.wait(lambda: upload_state(ann) == ["failed"], "the server's 413")
    assert ann.find("#attachments .upload-state").text == said
    ann.say("nothing attached")
    assert desk.expect(codec.MessagePacket, lambda m: m.sender == "ann").files is None


def test_a_refused_token_is_renewed_once_and_the_upload_goes_on(pages, tmp_path):
    allow_refusal(pages, 401)
    png(tmp_path / "dot.png", 8, 8)
    ann = pages()
    ann.log_in("ann")
    ann.js("return window.chatApp.session.fileToken()")  # resolves: a token is held
    ann.js("window.chatApp.session.files.token = 'x'.repeat(43)")  # one the server never gave
    attach(ann, tmp_path / "dot.png")
    uploaded(ann)
    token = ann.js("return window.chatApp.session.files.token")
    assert token and token != "x" * 43


@pytest.mark.parametrize("server_args", [("--rate", "1000", "--burst", "1000")])
def test_a_search_hit_opens_its_room_at_the_message(pages, peers):
    desk = peers("desk")
    joined(desk, "general")
    for n in range(1, 301):
        text = "🚀 the deploy key rotates on fridays" if n == 3 else f"filler number {n}"
        desk.send(codec.Say(text, f"f{n}", "general"))
    seqs = {}
    for _ in range(300):
        m = desk.expect(codec.MessagePacket, lambda m: m.sender == "desk")
        seqs[m.ref] = m.seq
    ann = pages()
    ann.log_in("ann")
    hit = f'#transcript li[data-seq="{seqs["f3"]}"]'
    assert not ann.all(hit), "the hit is further back than the page holds"
    from selenium.webdriver.common.keys import Keys

    ann.find("#message-input").send_keys(Keys.CONTROL, "k")
    ann.wait(
        lambda: ann.js("return document.activeElement.id") == "search-input", "Ctrl+K focuses the search box"
    )
    ann.find("#search-input").send_keys("deploy", Keys.ENTER)
    hits = "#search-results li.hit"
    ann.wait(lambda: len(ann.all(hits)) == 1, "one hit")
    assert ann.find(f"{hits} .hit-room").text == "general"
    assert ann.find(f"{hits} .hit-from").text == "desk"
    assert ann.js(
        "return [...document.querySelectorAll('#search-results mark')].map(m => m.textContent)"
    ) == ["deploy"], "the mark counts code points: the emoji before it is one"
    ann.say("/join den")  # the hit's room is not the one shown
    ann.wait(lambda: ann.current_room() == "den", "den shown")
    ann.find(f"{hits} .hit-open").click()
    ann.wait(lambda: ann.current_room() == "general" and ann.all(f"{hit}.hit"), "general, at the hit")
    assert ann.find(f"{hit} .text").text == "🚀 the deploy key rotates on fridays"
    in_view = """
        const li = document.querySelector(arguments[0]).getBoundingClientRect();
        const box = document.getElementById('transcript').getBoundingClientRect();
        return li.top >= box.top && li.bottom <= box.bottom"""
    ann.wait(lambda: ann.js(in_view, hit), "the hit scrolled into view")
    shot(ann, "search")
    assert ann.find("#latest-button").is_displayed(), "newer messages are further on"
    last = "return Math.max(...[...document.querySelectorAll(arguments[0])].map(li => +li.dataset.seq))"
    before = ann.js(last, "#transcript li[data-seq]")
    ann.js("const t = document.getElementById('transcript'); t.scrollTop = t.scrollHeight")
    ann.wait(lambda: ann.js(last, "#transcript li[data-seq]") > before, "the next newer page, at the bottom")
    assert ann.all(hit), "the hit stays"
    desk.send(codec.Say("said while ann reads back", "late", "general"))
    desk.expect(codec.MessagePacket, lambda m: m.ref == "late")
    ann.find("#latest-button").click()
    ann.wait(lambda: "said while ann reads back" in ann.lines(), "back at the newest")
    assert not ann.find("#latest-button").is_displayed()
    ann.find(f"{hits} .hit-open").click()  # back to the hit, then say something: to the present
    ann.wait(lambda: ann.all(f"{hit}.hit") and ann.find("#latest-button").is_displayed(), "the hit again")
    ann.say("back to now")
    ann.wait(lambda: "back to now" in ann.lines("#transcript li[data-seq]"), "my message, in the present")
    assert not ann.find("#latest-button").is_displayed() and not ann.all(hit)
    # More pages, and the filters.
    ann.find("#search-input").clear()
    ann.find("#search-input").send_keys("filler", Keys.ENTER)
    ann.wait(
        lambda: len(ann.all(hits)) == 20 and ann.find("#search-more").is_displayed(), "a first page and More"
    )
    ann.find("#search-more").click()
    ann.wait(lambda: len(ann.all(hits)) == 40, "the next page")
    ann.find(f"{hits} .hit-open").click()  # the newest, loaded already: no HISTORY needed
    newest = f'#transcript li[data-seq="{seqs["f300"]}"]'
    ann.wait(lambda: ann.all(f"{newest}.hit"), "a loaded hit marked")
    ann.find("#search-from").send_keys("nobody", Keys.TAB)
    ann.wait(lambda: ann.find("#search-status").text == "Nothing found.", "nothing from nobody")


def test_a_private_conversations_image_needs_the_token(pages, tmp_path):
    """Files of a room that is not open load with ?token= (20.4), refreshed as it changes."""
    png(tmp_path / "secret.png", 30, 20)
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    for page in (ann, bob):
        page.say("/join hideout")
        page.wait(lambda page=page: page.current_room() == "hideout", "hideout shown")
    ann.say("/mode +i")
    ann.wait(lambda: "i" in ann.find("#room-modes").text, "hideout invite-only")
    attach(ann, tmp_path / "secret.png")
    uploaded(ann)
    ann.say("private")
    thumbs = "#transcript li[data-seq] button.file.image img"
    shown = bob.wait(lambda: loaded_images(bob, thumbs), "the thumbnail loaded with a token")
    assert "token=" in shown[0]["src"]
    # A new token (as the page asks before one expires): the whole image's address takes it.
    fresh = bob.js("return window.chatApp.session.fileToken(true).then(f => f.token)")
    full = bob.find("#transcript button.file.image").get_attribute("data-full")
    assert f"token={fresh}" in full
    bob.find("#transcript button.file.image").click()
    bob.wait(lambda: loaded_images(bob, "#overlay-image"), "the whole image, with the new token")


DROP = """
    const [target, kind, name, type, text] = arguments;
    const data = new DataTransfer();
    data.items.add(new File([text], name, {type}));
    const event = kind === "paste"
        ? new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true})
        : new DragEvent(kind, {dataTransfer: data, bubbles: true, cancelable: true});
    document.querySelector(target).dispatchEvent(event);
"""


def test_a_pasted_image_and_a_dropped_file_are_uploaded_and_one_removed(pages, peers):
    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    ann.js(DROP, "#message-input", "paste", "image.png", "image/png", "not really a png")
    ann.js(DROP, "#transcript", "dragover", "log.txt", "text/plain", "")
    assert "dropping" in ann.find("#transcript-pane").get_attribute("class"), "the drop target shows"
    ann.js(DROP, "#transcript", "drop", "build.log", "text/plain", "step 1 ok\n")
    ann.wait(lambda: upload_state(ann) == ["done", "done"], "both uploads")
    assert "dropping" not in ann.find("#transcript-pane").get_attribute("class")
    names = ann.js("return [...document.querySelectorAll('#attachments .file-name')].map(n => n.textContent)")
    assert re.fullmatch(r"screenshot-\d{8}-\d{6}\.png", names[0]), f"a pasted image gets a name: {names[0]}"
    assert names[1] == "build.log"
    ann.find("#attachments .remove").click()  # the pasted one: not sent after all
    ann.wait(lambda: upload_state(ann) == ["done"], "one left")
    ann.say("the log")
    sent = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert [(f.name, f.type, f.size) for f in sent.files] == [("build.log", "text/plain", 10)]


@pytest.mark.parametrize("server_args", [("--files", "off")])
def test_a_server_without_files_says_so_and_the_upload_may_be_retried(pages, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    ann = pages()
    ann.log_in("ann")
    attach(ann, tmp_path / "a.txt")
    ann.wait(lambda: upload_state(ann) == ["failed"], "the upload refused")
    assert ann.find("#attachments .upload-state").text == "a.txt: this server keeps no files"
    ann.find("#attachments .retry").click()
    ann.wait(
        lambda: upload_state(ann) == ["failed"] and ann.find("#attachments .retry").is_displayed(),
        "refused again",
    )
    ann.say("text alone still goes")
    ann.wait(lambda: "text alone still goes" in ann.lines("#transcript li[data-seq]"), "the message")


def test_an_upload_shows_its_progress_and_a_cancel_sends_nothing(pages, peers, tmp_path):
    (tmp_path / "dump.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 256 * 1024}
    ann.here().execute_cdp_cmd("Network.enable", {})
    ann.here().execute_cdp_cmd("Network.emulateNetworkConditions", slow)
    attach(ann, tmp_path / "dump.bin")
    progress = "return document.querySelector('#attachments progress')?.value ?? 0"
    ann.wait(lambda: 0 < ann.js(progress) < 1, "the upload part way")
    assert ann.find("#attachments progress").is_displayed()
    assert ann.find("#attachments .upload-state").text.endswith(" %")
    ann.find("#attachments .remove").click()
    ann.wait(lambda: upload_state(ann) == [], "the upload cancelled and gone")
    assert ann.js("return window.chatApp.attachments.of(window.chatApp.current).length") == 0
    ann.here().execute_cdp_cmd("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1})
    ann.say("nothing went")
    assert desk.expect(codec.MessagePacket, lambda m: m.sender == "ann").files is None
