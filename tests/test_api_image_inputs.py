"""The images and question files a user names: folders, globs, URLs (a local HTTP server), bad input."""

from __future__ import annotations

import http.server
import shutil
import threading
import time

import pytest
from PIL import Image

from evalkit.api.image_inputs import fetch_image, resolve_images
from evalkit.api.questions_file import read_questions_file
from evalkit.core.errors import EvalkitError
from evalkit.demo.bundled import SHAPES_DIR

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/slow.png":
            time.sleep(3)
        status, kind, body = self.routes.get(self.path, (404, "text/plain", b"not here"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_images(monkeypatch):
    """A web server on 127.0.0.1 in a thread: /shape.png, /notes.txt, /slow.png, anything else 404."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    _Handler.routes = {"/shape.png": (200, "image/png", SHAPE.read_bytes()),
                       "/notes.txt": (200, "text/plain", b"hello"),
                       "/slow.png": (200, "image/png", SHAPE.read_bytes())}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_fetched_and_decoded(http_images):
    image = fetch_image(f"{http_images}/shape.png", timeout_s=10)
    with Image.open(SHAPE) as expected:
        assert image.tobytes() == expected.convert("RGB").tobytes()
    inputs = resolve_images([f"{http_images}/shape.png", str(SHAPE)])
    assert inputs.keys == [f"{http_images}/shape.png", str(SHAPE)]
    assert inputs.source.open(inputs.keys[0]).tobytes() == inputs.source.open(inputs.keys[1]).tobytes()


@pytest.mark.parametrize("path, message", [("/missing.png", "HTTP 404"), ("/notes.txt", "cannot decode"),
                                           ("/slow.png", "no answer within 0.5 s")])
def test_bad_urls_are_one_line_errors(http_images, path, message):
    with pytest.raises(EvalkitError, match=message) as info:
        resolve_images(f"{http_images}{path}", url_timeout_s=0.5)
    assert "\n" not in str(info.value) and path in str(info.value)


def test_unreachable_url(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with pytest.raises(EvalkitError, match="cannot fetch http://127.0.0.1:9/x.png"):
        fetch_image("http://127.0.0.1:9/x.png", timeout_s=2)


def test_folder_skips_non_images_with_a_notice(tmp_path):
    for name in ("b.png", "a.png"):
        shutil.copy(SHAPE, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "sub").mkdir()
    notices = []
    inputs = resolve_images(tmp_path, notices.append)
    assert inputs.keys == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert notices == [f"skipped {tmp_path / 'notes.txt'}: not an image file"]


def test_glob_pattern(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        shutil.copy(SHAPE, tmp_path / name)
    assert resolve_images(str(tmp_path / "x*.png")).keys == [str(tmp_path / "x1.png"), str(tmp_path / "x2.png")]
    with pytest.raises(EvalkitError, match="no file matches"):
        resolve_images(str(tmp_path / "z*.png"))


def test_pil_images_are_held_in_memory():
    with Image.open(SHAPE) as image:
        inputs = resolve_images([image, image.convert("L")])
    assert inputs.keys == ["<image 0>", "<image 1>"]
    assert inputs.source.open("<image 1>").mode == "RGB"


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "file not found"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
    (lambda d: (d / "bad.jpg").write_text("not a jpeg") and d / "bad.jpg", r"cannot decode \(UnidentifiedImageError\)"),
    (lambda d: (d / "only").mkdir() or (d / "only" / "a.txt").write_text("x") and d / "only", "holds no image files"),
])
def test_bad_paths_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(EvalkitError, match=message) as info:
        resolve_images(str(make(tmp_path)))
    assert "\n" not in str(info.value)


def test_questions_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"image": "a.png", "question": "what is it?"}\n\n'
                    '{"image": "/abs/b.png", "questions": ["one?", "two?"]}\n'
                    '{"image": "https://example.org/c.png", "question": " three? "}\n')
    assert read_questions_file(path) == [(str(tmp_path / "a.png"), "what is it?"), ("/abs/b.png", "one?"),
                                         ("/abs/b.png", "two?"), ("https://example.org/c.png", "three?")]


@pytest.mark.parametrize("second_line, message", [
    ('{"image": "a.png", "question": "x?"', r"line 2: not valid JSON"),
    ('["a.png", "x?"]', r"line 2: expected a JSON object"),
    ('{"question": "x?"}', r"line 2: \"image\" must be a non-empty string"),
    ('{"image": "a.png"}', r"line 2: needs \"question\""),
    ('{"image": "a.png", "question": ""}', r"line 2: every question must be a non-empty string"),
    ('{"image": "a.png", "questions": ["x?", 3]}', r"line 2: every question must be a non-empty string"),
])
def test_questions_file_bad_lines_are_named(tmp_path, second_line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"image": "a.png", "question": "fine?"}\n' + second_line + "\n")
    with pytest.raises(EvalkitError, match=message) as info:
        read_questions_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_empty_or_missing_questions_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalkitError, match="holds no questions"):
        read_questions_file(tmp_path / "empty.jsonl")
    with pytest.raises(EvalkitError, match="not found"):
        read_questions_file(tmp_path / "nope.jsonl")
