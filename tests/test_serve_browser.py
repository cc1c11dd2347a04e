"""`evalkit serve` in a real browser (headless Chromium via Selenium) and through gradio_client.

One server per module, started as a user starts it (`evalkit serve` in a subprocess, 127.0.0.1, a free port),
stopped at the end; every wait is bounded. What the page answers is compared with what the CLI answers for
the same image and settings (`evalkit caption/ask/chat`, run in-process here). Chromium, chromedriver,
selenium and gradio are requirements of the suite (scripts/test.sh installs them): when one is missing these
tests fail, naming it; they never skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evalkit.demo.bundled import SHAPES_DIR
from headless_chromium import OFFLINE_FLAGS, chromium_driver

# the page is on 127.0.0.1: every other name stays unresolvable, so nothing outside this machine is reached
BROWSER_FLAGS = [f for f in OFFLINE_FLAGS if not f.startswith("--host-resolver-rules")] + [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--no-proxy-server"]

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"
OTHER_SHAPE = SHAPES_DIR / "images" / "shapes_test_000002.png"
QUESTIONS = ["how many shapes are there?", "what color is the square?"]
CHAT = ["what shapes are in the picture?",
        "is there a blue square, a red circle, a green triangle or a yellow square anywhere in this small picture?"]
MODEL = "blip2-tiny-opt"
START_TIMEOUT_S, ANSWER_TIMEOUT_S = 180, 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`evalkit serve` on 127.0.0.1 and a free port, over an empty results folder; its URL and results folder."""
    root = tmp_path_factory.mktemp("serve")
    results = root / "results"
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(root / "gradio")}
    log = open(root / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "evalkit", "serve", "--results", str(results), "--port",
                                str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"evalkit serve did not start:\n{(root / 'server.log').read_text()}")
        time.sleep(0.5)
    try:
        yield url, results, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium_driver(tmp_path_factory.mktemp("chromium-profile"), BROWSER_FLAGS) as driver:
        yield driver


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """What the CLI answers: `evalkit caption` (two images; and with other beam settings), `evalkit ask` (two
    questions), `evalkit chat` (two turns, the second one past the tiny model's 64 positions)."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name, args in {"caption": ["caption", str(SHAPE), str(OTHER_SHAPE)], "ask": ["ask", str(SHAPE), *QUESTIONS],
                       "beams": ["caption", str(SHAPE), "--num-beams", "2", "--max-new-tokens", "12"],
                       "sampled": ["caption", str(SHAPE), "--sample", "--temperature", "1.5", "--top-p", "0.9",
                                   "--seed", "3", "--num-beams", "1"]}.items():
        _cli([*args, "-m", MODEL, "--device", "cpu", "--jsonl", str(root / f"{name}.jsonl")])
        out[name] = _jsonl(root / f"{name}.jsonl")
    script = root / "turns.txt"
    script.write_text("\n".join(CHAT) + "\n")
    printed = _cli(["chat", str(SHAPE), "--script", str(script), "-m", MODEL, "--device", "cpu", "--jsonl",
                    str(root / "chat.jsonl")])
    out["chat"] = _jsonl(root / "chat.jsonl")
    out["chat_notices"] = [line for line in printed.splitlines() if line.startswith("(the context is full")]
    assert len(out["chat_notices"]) == 1, printed  # the second turn pushed the first out of the prompt
    return out


def _cli(args: list[str]) -> str:
    """`evalkit ARGS` in this process (one model load each, no interpreter start-up); its stdout."""
    import contextlib
    import io

    from evalkit.cli.main import main

    old, sys.argv = sys.argv, ["evalkit", *args]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            main()
    except SystemExit as exit_:
        assert not exit_.code, buffer.getvalue()
    finally:
        sys.argv = old
    return buffer.getvalue()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- gradio_client ------------------------------------------------------------------------------


CONTROLS = ["method", "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "repetition_penalty",
            "temperature", "top_p", "seed"]  # the page's decoding controls, in order


def _client_answer(client, image: Path, mode: str, text: str = "", **changed):
    """(answer, protocol line, error line, chat) from /answer, the controls as the page shows them for the model
    (its task protocol) except those ``changed``."""
    from gradio_client import handle_file

    defaults = client.predict(MODEL, mode, api_name="/settings_for")
    controls = dict(zip(CONTROLS, defaults[-9:]))  # (the text box, then the nine decoding controls)
    controls.update(changed)
    return client.predict(handle_file(str(image)), MODEL, mode, text, *controls.values(), api_name="/answer")


def test_gradio_client_caption_and_ask(server, expected):
    from gradio_client import Client

    url, _, _ = server
    client = Client(url, verbose=False)
    answer, info, status = _client_answer(client, SHAPE, "caption")[:3]
    assert status == "" and answer == expected["caption"][0]["caption"]
    assert expected["caption"][0]["protocol_fingerprint"][:12] in info
    answer, info, _ = _client_answer(client, SHAPE, "caption", num_beams=2, max_new_tokens=12)[:3]
    assert answer == expected["beams"][0]["caption"]
    assert expected["beams"][0]["protocol_fingerprint"][:12] in info
    assert expected["beams"][0]["protocol_fingerprint"] != expected["caption"][0]["protocol_fingerprint"]
    answer, info, _ = _client_answer(client, SHAPE, "caption", method="nucleus sampling", num_beams=1,
                                     temperature=1.5, top_p=0.9, seed=3)[:3]
    assert answer == expected["sampled"][0]["caption"]  # `evalkit caption --sample --temperature 1.5 ...`
    assert expected["sampled"][0]["protocol_fingerprint"][:12] in info
    answers = [_client_answer(client, SHAPE, "ask", q)[0] for q in QUESTIONS]
    assert answers == [a["answer"] for a in expected["ask"]]
    assert expected["ask"][0]["protocol_fingerprint"][:12] in _client_answer(client, SHAPE, "ask", QUESTIONS[0])[1]


# -- the page in Chromium -----------------------------------------------------------------------


def _open(browser, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#go"))


def _upload(browser, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(path))
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))


def _mode(browser, mode: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'#mode label[data-testid="{mode}-radio-label"]').click()


def _type(browser, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = WebDriverWait(browser, 30).until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#text textarea")
                                                      if e.is_displayed()])[0]
    box.clear()
    box.send_keys(text)


def _go(browser, done) -> None:
    """Click the button and wait (bounded) until ``done(browser)`` holds."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, "#go").click()
    WebDriverWait(browser, ANSWER_TIMEOUT_S).until(done)


def _answer(browser) -> str:
    return browser.execute_script("const e = document.querySelector('#answer textarea'); return e ? e.value : ''")


def _text(browser, element_id: str) -> str:
    """The element's text, read in the page (Gradio re-renders elements: no stale references)."""
    return browser.execute_script(f"const e = document.getElementById('{element_id}'); return e ? e.innerText : ''")


def _chat_messages(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#chat .message-content')).map(e => e.innerText.trim())"
        ".filter(t => t && t !== 'Loading content')")


def _shoot(browser, name: str) -> None:
    """Screenshots for the docs when EVALKIT_SERVE_SCREENSHOTS names a folder."""
    folder = os.environ.get("EVALKIT_SERVE_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / f"serve-{name}.png"))


def test_caption_in_the_browser_is_the_cli_caption(server, browser, expected):
    url, _, _ = server
    _open(browser, url)
    _upload(browser, SHAPE)
    _go(browser, lambda d: _answer(d))
    assert _answer(browser) == expected["caption"][0]["caption"]
    assert expected["caption"][0]["protocol_fingerprint"][:12] in _text(browser, "fingerprint")
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('http://127.0.0.1') && !n.startsWith('data:') && !n.startsWith('blob:'))")
    assert fetched == []  # the page loads nothing from outside this machine
    _shoot(browser, "try")


def test_two_questions_in_the_browser(server, browser, expected):
    url, _, _ = server
    _open(browser, url)
    _upload(browser, SHAPE)
    _mode(browser, "ask")
    answers = []
    for question in QUESTIONS:
        _type(browser, question)
        _go(browser, lambda d, q=question: q in _text(d, "fingerprint"))  # the footer names the prompt asked
        answers.append(_answer(browser))
    assert answers == [a["answer"] for a in expected["ask"]]
    assert expected["ask"][0]["protocol_fingerprint"][:12] in _text(browser, "fingerprint")


def test_two_turn_chat_with_the_context_notice(server, browser, expected):
    url, _, _ = server
    _open(browser, url)
    _upload(browser, SHAPE)
    _mode(browser, "chat")
    for turn, question in enumerate(CHAT, start=1):
        _type(browser, question)
        _go(browser, lambda d, q=question: q[:30] in _text(d, "fingerprint"))  # the footer names the prompt
    messages = _chat_messages(browser)
    answers = [turn["answer"] for turn in expected["chat"]]
    assert [m for m in messages if m in answers] == answers, messages
    assert expected["chat_notices"][0] in messages and expected["chat_notices"][0] in _text(browser, "status")
    _shoot(browser, "chat")
    # changing the image clears the conversation
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, "#image button[aria-label='Remove Image']").click()
    _upload(browser, OTHER_SHAPE)
    WebDriverWait(browser, 30).until(lambda d: not _chat_messages(d))


def test_a_bad_upload_is_a_line_on_the_page_and_the_next_request_works(server, browser, expected, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, _ = server
    _open(browser, url)
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture")
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(fake))
    _go(browser, lambda d: "error" in _text(d, "status"))
    assert "holiday.png: cannot decode" in _text(browser, "status")
    browser.find_element(By.CSS_SELECTOR, "#image button[aria-label='Remove Image']").click()
    _upload(browser, OTHER_SHAPE)
    _go(browser, lambda d: _answer(d))
    assert _answer(browser) == expected["caption"][1]["caption"]
    assert _text(browser, "status") == ""


def test_runs_tab_shows_a_demo_run_made_while_serving(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, results, _ = server
    _open(browser, url)  # the page was opened before the runs existed
    _cli(["demo", "--results", str(results), "-q", "--device", "cpu"])
    runs = sorted(p.parent for p in results.glob("*/*/*/run.json"))
    assert len(runs) >= 5
    [tab] = [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Runs"]
    tab.click()
    WebDriverWait(browser, 60).until(lambda d: "blip2-tiny-opt" in _text(d, "leaderboard"))
    board = _text(browser, "leaderboard")
    assert "blip2-tiny-t5" in board and "shapes-caption" in board and "shapes-vqa" in board
    # the newest run is chosen; its worst sample is shown with its image
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sample-view img"))
    assert browser.execute_script("return document.querySelector('#sample-view img').naturalWidth") > 0
    rows = browser.execute_script("return document.querySelectorAll('#samples [role=row]').length")
    assert rows >= 5  # the header and the first rows (the table renders what is in view)
    # the filter keeps the rows that mention every word
    box = browser.find_element(By.CSS_SELECTOR, "#filter textarea")
    box.send_keys("tiny-t5\n")
    WebDriverWait(browser, 30).until(lambda d: "blip2-tiny-opt" not in _text(d, "leaderboard"))
    assert "blip2-tiny-t5" in _text(browser, "leaderboard")
    _shoot(browser, "runs")
    # "ask the model about this image" opens the sample's image in the first tab
    browser.find_element(By.ID, "ask-about").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "go").is_displayed())
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))


def test_compare_two_demo_runs_through_gradio_client(server):
    """compare's own result, rendered: the paired interval and verdict, and the samples that changed most."""
    from gradio_client import Client

    from evalkit.analysis.compare import compare_runs, render_comparison
    from evalkit.analysis.results_index import load_run

    url, results, _ = server
    base, cand = (next(results.glob(f"{model}/shapes-caption/*/run.json")).parent
                  for model in ("blip2-tiny-opt", "blip2-tiny-t5"))  # made by the runs-tab test's `evalkit demo`
    names = [p.relative_to(results).as_posix() for p in (base, cand)]
    client = Client(url, verbose=False)
    refused, _ = client.predict(*names, False, api_name="/compare")
    assert "not comparable" in refused  # their protocols differ (one per family)
    shown, changed = client.predict(*names, True, api_name="/compare")
    result = compare_runs(load_run(base), load_run(cand), allow_protocol_change=True)
    assert shown.strip() == render_comparison(result).strip()
    assert "CI" in shown and any(row["verdict"] in shown for row in result["metrics"])
    assert changed.count("<tr><td>") == min(8, result["changed_samples"]["count"]) > 0
    escaped = client.predict("../" + names[0], api_name="/samples")
    assert "outside the results folder" in escaped[-1]
