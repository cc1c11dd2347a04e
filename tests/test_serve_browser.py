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
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from evalkit.demo.bundled import SHAPES_DIR
from test_report_browser import CHROMEDRIVER, CHROMIUM, FLAGS, _missing

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"
OTHER_SHAPE = SHAPES_DIR / "images" / "shapes_test_000002.png"
QUESTIONS = ["how many shapes are there?", "what color is the square?"]
CHAT = ["what shapes are in the picture and what colors do they have?",
        "is there a blue square next to the red circle on the left?"]
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
    reason = _missing()
    assert reason is None, reason  # scripts/test.sh installs chromium, chromium-driver and selenium
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """What the CLI answers: `evalkit caption`, `evalkit ask` (two questions), `evalkit chat` (two turns)."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name, args in {"caption": ["caption", str(SHAPE)], "ask": ["ask", str(SHAPE), *QUESTIONS],
                       "beams": ["caption", str(SHAPE), "--num-beams", "2", "--max-new-tokens", "12"]}.items():
        _cli([*args, "-m", MODEL, "--device", "cpu", "--jsonl", str(root / f"{name}.jsonl")])
        out[name] = _jsonl(root / f"{name}.jsonl")
    script = root / "turns.txt"
    script.write_text("\n".join(CHAT) + "\n")
    printed = _cli(["chat", str(SHAPE), "--script", str(script), "-m", MODEL, "--device", "cpu", "--jsonl",
                    str(root / "chat.jsonl")])
    out["chat"] = _jsonl(root / "chat.jsonl")
    out["chat_notices"] = [line for line in printed.splitlines() if line.startswith("(the context is full")]
    assert out["chat_notices"], "the two chat turns must fill the tiny model's context (64 positions)"
    return out


def _cli(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- gradio_client ------------------------------------------------------------------------------


def _client_answer(client, image: Path, mode: str, text: str = "", beams=None, max_new=None):
    from gradio_client import handle_file

    # the controls as the page shows them for the model (the task protocol), unless given
    defaults = client.predict(MODEL, mode, api_name="/settings_for")
    controls = list(defaults[2:])
    if beams is not None:
        controls[1], controls[2] = beams, max_new
    result = client.predict(handle_file(str(image)), MODEL, mode, text, *controls, api_name="/answer")
    return result


def test_gradio_client_caption_and_ask(server, expected):
    from gradio_client import Client

    url, _, _ = server
    client = Client(url, verbose=False)
    answer, info, status = _client_answer(client, SHAPE, "caption")[:3]
    assert status == "" and answer == expected["caption"][0]["caption"]
    assert expected["caption"][0]["protocol_fingerprint"][:12] in info
    answer, info, _ = _client_answer(client, SHAPE, "caption", beams=2, max_new=12)[:3]
    assert answer == expected["beams"][0]["caption"]
    assert expected["beams"][0]["protocol_fingerprint"][:12] in info
    assert expected["beams"][0]["protocol_fingerprint"] != expected["caption"][0]["protocol_fingerprint"]
    answers = [_client_answer(client, SHAPE, "ask", q)[0] for q in QUESTIONS]
    assert answers == [a["answer"] for a in expected["ask"]]
    assert expected["ask"][0]["protocol_fingerprint"][:12] in _client_answer(client, SHAPE, "ask", QUESTIONS[0])[1]
