"""The bad-input corpus, continued: the cases of the third hostile-input probe (issue 19) that end in a one-line
error (exit 2) or in documented graceful handling, where the code at d2b1856 hung, printed a traceback or an
"internal error", or resumed stale answers.

Each test names its probe case ids. Runs use the bundled tiny model on a few shapes images; the web server is a
thread on 127.0.0.1 that stops by itself; a read-only folder is made read-only for root too
(tests/permission_bits.py); a full disk is an ENOSPC from fsync, which every durable write here calls.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from permission_bits import permission_bits_enforced
from evalkit.demo.bundled import SHAPES_DIR

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"
CAPTION = ["run", "shapes-caption", "-m", "blip2-tiny-opt", "-q", "--num-beams", "1"]


def assert_one_line_error(code: int, err: str, *named: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err and "MarkupError" not in err
    assert len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, f"{text!r} not named in: {err}"


def run_folder(results: Path) -> Path:
    (run_json,) = results.rglob("journal.json")
    return run_json.parent


@pytest.fixture
def no_model_load(monkeypatch):
    """The run's model load fails the test: what is checked must be checked before it."""
    import evalkit.engine.evaluate as evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(evaluate, "load_checkpoint", refuse)


# ---------------------------------------------------------------------------------------------- item 4: the printer

GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
        "[127.0.0.1]:29611")


def test_internal_error_text_is_printed_literally(tmp_path, capsys, monkeypatch):
    """D04, D06: an unexpected error whose text holds '[/...]' (every gloo error under torchrun) is printed as it
    is, not turned into a rich MarkupError traceback that hides it."""
    import evalkit.engine.evaluate as evaluate

    def gloo_fails(options):
        raise RuntimeError(GLOO)

    monkeypatch.setattr(evaluate, "run_task", gloo_fails)
    code, _, err = run_cli([*CAPTION, "--limit", "1", "--results", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, f"internal error: RuntimeError: {GLOO}", exit_code=1)


def test_read_only_results_named_with_markup_in_the_path(tmp_path, capsys, no_model_load):
    """N61: a results folder named 'ro[/x]' under a read-only folder: one line naming it, exit 2."""
    results = tmp_path / "ro[" / "x]"
    results.mkdir(parents=True)
    (results / "blip2-tiny-opt").mkdir()
    (results / "blip2-tiny-opt").chmod(0o555)
    with permission_bits_enforced():
        code, _, err = run_cli([*CAPTION, "--limit", "1", "--results", str(results)], capsys)
    assert_one_line_error(code, err, str(results / "blip2-tiny-opt"), "Permission denied")


# ---------------------------------------------------------------------------------------------- item 5: folders

def test_permission_bits_bind_in_these_tests(tmp_path):
    """The helper the read-only tests rely on: inside it, a mode-0555 folder refuses a write, root or not."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    with permission_bits_enforced(), pytest.raises(PermissionError):
        (folder / "probe").write_text("x")
    (folder / "probe").write_text("x")  # outside it, root writes again (the capability is back)
    assert (folder / "probe").exists() == (os.geteuid() == 0)


def test_read_only_folder_inside_results(tmp_path, capsys, no_model_load):
    """F01b: results writable, its MODEL/TASK folder read-only: one line naming that folder, exit 2, before the
    model loads (was: internal error PermissionError, exit 1)."""
    results = tmp_path / "r"
    blocked = results / "blip2-tiny-opt" / "shapes-caption"
    blocked.mkdir(parents=True)
    blocked.chmod(0o555)
    with permission_bits_enforced():
        code, _, err = run_cli([*CAPTION, "--limit", "1", "--results", str(results)], capsys)
    assert_one_line_error(code, err, f"cannot write in {blocked}", "Permission denied")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-sample shapes-caption run (results folder)."""
    from conftest import evalkit_cli

    results = tmp_path_factory.mktemp("finished") / "r"
    code, _, err = evalkit_cli([*CAPTION, "--limit", "2", "--results", str(results)])
    assert code == 0, err
    return results


def _copy(results: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "r"
    shutil.copytree(results, copy)
    return copy


def test_read_only_finished_run_folder(finished_run, tmp_path, capsys, no_model_load):
    """N65: the run folder itself read-only: one line naming it, exit 2, before loading (was: internal error
    PermissionError on .captions_results.json.tmp, exit 1)."""
    results = _copy(finished_run, tmp_path)
    folder = run_folder(results)
    folder.chmod(0o555)
    try:
        with permission_bits_enforced():
            code, _, err = run_cli([*CAPTION, "--limit", "2", "--results", str(results)], capsys)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, err, f"cannot write in {folder}", "Permission denied")


def test_read_only_ledger_of_a_partial_run(finished_run, tmp_path, capsys, no_model_load):
    """N66: a partial run whose images.jsonl is read-only: one line naming it, exit 2, before the model loads
    (was: the model loaded, then internal error PermissionError on images.jsonl)."""
    results = _copy(finished_run, tmp_path)
    folder = run_folder(results)
    (folder / "run.json").unlink()
    predictions = folder / "predictions.jsonl"
    predictions.write_text(predictions.read_text().splitlines(keepends=True)[0])
    (folder / "images.jsonl").chmod(0o444)
    with permission_bits_enforced():
        code, _, err = run_cli([*CAPTION, "--limit", "2", "--results", str(results)], capsys)
    assert_one_line_error(code, err, f"cannot write {folder / 'images.jsonl'}", "Permission denied")


def test_corrupt_journal_header(finished_run, tmp_path, capsys, no_model_load):
    """N98: journal.json that is not JSON: one line naming it, exit 2 (was: internal error JSONDecodeError)."""
    results = _copy(finished_run, tmp_path)
    header = run_folder(results) / "journal.json"
    header.write_text('{"task": "shapes-caption",\n')
    code, _, err = run_cli([*CAPTION, "--limit", "2", "--results", str(results)], capsys)
    assert_one_line_error(code, err, str(header), "corrupt", "--overwrite")


# ---------------------------------------------------------------------------------------------- item 5: full disk

def _fsync_fails(monkeypatch, after: int) -> None:
    """Every os.fsync after the first ``after`` raises ENOSPC, as a full disk does."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _leftover_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".merge"))]


def test_disk_full_while_journaling(tmp_path, capsys, monkeypatch):
    """N62: ENOSPC while the journal is written: one line naming the file and the cause, exit 2, no run.json, no
    temp file; once there is space the same command resumes what was journaled (N63)."""
    results = tmp_path / "r"
    args = [*CAPTION, "--limit", "6", "--batch-size", "1", "--results", str(results)]
    with monkeypatch.context() as patch:
        _fsync_fails(patch, after=4)  # journal.json, then a window's ledger and answers, then the next window's
        code, _, err = run_cli(args, capsys)
    folder = run_folder(results)
    assert_one_line_error(code, err, "No space left on device", f"cannot write {folder}")
    assert not (folder / "run.json").exists() and not _leftover_temp_files(results)
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    record = json.loads((folder / "run.json").read_text())
    assert record["counts"]["resumed_from_journal"] > 0 and record["counts"]["samples"] == 6


def test_disk_full_while_writing_results(finished_run, tmp_path, capsys, monkeypatch, no_model_load):
    """N64: ENOSPC while the official file, scores and run.json are written: one line naming the file, exit 2,
    and no .tmp left behind (was: internal error OSError naming no path, a partial .captions_results.json.tmp)."""
    results = _copy(finished_run, tmp_path)
    folder = run_folder(results)
    for name in ("run.json", "sample_scores.jsonl", "captions_results.json"):
        (folder / name).unlink()
    _fsync_fails(monkeypatch, after=0)
    code, _, err = run_cli([*CAPTION, "--limit", "2", "--results", str(results)], capsys)
    assert_one_line_error(code, err, f"cannot write {folder / 'captions_results.json'}", "No space left on device")
    assert not _leftover_temp_files(results) and not (folder / "run.json").exists()


# ---------------------------------------------------------------------------------------------- item 5: values

@pytest.mark.parametrize("args, named", [
    (["--max-new-tokens", "0"], ["--max-new-tokens", "0"]),      # N47 (was: silently the task's 10, exit 0)
    (["--max-new-tokens", "-5"], ["--max-new-tokens", "-5"]),    # N47b (was: internal error ValueError)
    (["--image-size", "7"], ["--image-size 7", "patch"]),         # N48 (was: internal error RuntimeError)
], ids=["N47", "N47b", "N48"])
def test_bench_bad_values(args, named, capsys):
    code, out, err = run_cli(["bench", "--tiny", "-n", "2", "--baseline-samples", "1", *args], capsys)
    assert_one_line_error(code, err, *named)
    assert out == ""


@pytest.fixture(scope="module")
def tiny_model():
    import evalkit

    return evalkit.load("blip2-tiny-opt", device="cpu")


@pytest.mark.parametrize("override, value", [("num_beams", -3), ("num_beams", 0), ("max_new_tokens", -1),
                                             ("min_new_tokens", -2), ("image_size", 0), ("num_beams", "3")])
def test_api_refuses_bad_protocol_values(tiny_model, override, value):
    """N39c: the Python API validates generation settings as the CLI does (was: a RuntimeError from inside
    transformers' beam search for num_beams=-3)."""
    from evalkit.core.errors import EvalkitError

    with pytest.raises(EvalkitError, match=f"{override} must be a whole number of at least") as info:
        tiny_model.caption(str(SHAPE), **{override: value})
    assert repr(value) in str(info.value)


# ---------------------------------------------------------------------------------------------- item 2: URLs

class _Drip(http.server.BaseHTTPRequestHandler):
    """/body: headers at once, then a 60-byte body one byte every 0.1 s; /headers: the status line and headers
    themselves a byte every 0.1 s; /stated-large: Content-Length 5000 over a slow body; /unstated-large: 5000
    bytes at once with no Content-Length. Each answer ends within 6 s by itself."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            if self.path == "/headers":
                self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\n0123456789")
                return
            if self.path == "/unstated-large":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"x" * 5000)
                return
            self.send_response(200)
            self.send_header("Content-Length", "5000" if self.path == "/stated-large" else "60")
            self.end_headers()
            self._drip(b"x" * 60)
        except OSError:  # the client hung up: what a deadline does
            pass

    def _drip(self, data: bytes) -> None:
        for n in range(len(data)):
            self.wfile.write(data[n:n + 1])
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def drip_server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/body", "/headers"], ids=["N18-body", "N18b-headers"])
def test_url_timeout_bounds_the_whole_fetch(drip_server, path, capsys):
    """N18, N18b: a server that drips a byte every 0.1 s is cut off at --url-timeout (was: held until it stopped,
    as urllib's timeout restarts with every byte)."""
    started = time.monotonic()
    code, _, err = run_cli(["caption", "-m", "blip2-tiny-opt", "-q", "--url-timeout", "1", f"{drip_server}{path}"],
                           capsys)
    elapsed = time.monotonic() - started
    assert_one_line_error(code, err, f"{drip_server}{path}", "no answer within 1 s")
    assert elapsed < 4, f"the 1 s deadline took {elapsed:.1f} s"


def test_stated_body_over_the_maximum_is_refused_before_reading_it(drip_server, monkeypatch):
    """A Content-Length over the maximum is refused at the headers, not after dripping the body."""
    import evalkit.api.image_inputs as image_inputs
    from evalkit.core.errors import EvalkitError

    monkeypatch.setattr(image_inputs, "MAX_DOWNLOAD_BYTES", 1000)
    started = time.monotonic()
    with pytest.raises(EvalkitError, match="larger than 1,000 bytes.*Content-Length 5,000"):
        image_inputs.fetch_image(f"{drip_server}/stated-large", timeout_s=30)
    assert time.monotonic() - started < 3


def test_unstated_body_over_the_maximum_is_refused(drip_server, monkeypatch):
    import evalkit.api.image_inputs as image_inputs
    from evalkit.core.errors import EvalkitError

    monkeypatch.setattr(image_inputs, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(EvalkitError, match=r"/unstated-large: larger than 1,000 bytes, the most evalkit downloads"):
        image_inputs.fetch_image(f"{drip_server}/unstated-large", timeout_s=30)


# ---------------------------------------------------------------------------------------------- item 8: bad images

def _good_and_bad(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    good = folder / "a_good.png"
    shutil.copy(SHAPE, good)
    bad = folder / "fake.png"
    bad.write_text("hello, I am not an image\n")
    return good, bad


@pytest.mark.parametrize("as_list", [False, True], ids=["N22-folder", "N22b-files"])
def test_caption_skip_bad_images_records_the_bad_one(tmp_path, capsys, as_list):
    """N22, N22b: `caption --skip-bad-images` over a folder or a file list with a non-image: the good image is
    captioned, the bad one recorded as failed, exit 0 (was: exit 2 at the first bad header)."""
    good, bad = _good_and_bad(tmp_path / "mixdir")
    text = tmp_path / "notimage.txt"
    text.write_text("plain text")
    images = [str(good), str(text), str(bad)] if as_list else [str(tmp_path / "mixdir")]
    out_file = tmp_path / "captions.jsonl"
    code, out, err = run_cli(["caption", "-m", "blip2-tiny-opt", "-q", "--skip-bad-images", "--jsonl",
                              str(out_file), *images], capsys)
    assert code == 0, err
    records = {Path(r["image"]).name: r for r in map(json.loads, out_file.read_text().splitlines())}
    expected_bad = {"notimage.txt", "fake.png"} if as_list else {"fake.png"}
    assert {name for name, r in records.items() if r["status"] == "failed"} == expected_bad
    assert records["a_good.png"]["status"] == "ok" and records["a_good.png"]["caption"].strip()
    assert all("cannot decode" in records[name]["error"] for name in expected_bad)
    code, _, err = run_cli(["caption", "-m", "blip2-tiny-opt", "-q", *images], capsys)  # without: refused
    assert_one_line_error(code, err, "cannot decode")


def test_ask_skip_bad_images_records_the_bad_one(tmp_path, capsys):
    """`ask --skip-bad-images`, the same path as caption's: the good image answered, the bad one recorded as failed
    with its reason, exit 0; without the flag, one line naming it, exit 2."""
    folder = tmp_path / "mixdir"
    _good_and_bad(folder)
    out_file = tmp_path / "answers.jsonl"
    code, out, err = run_cli(["ask", "-m", "blip2-tiny-opt", "-q", "--skip-bad-images", "--jsonl", str(out_file),
                              str(folder), "how many shapes are there?"], capsys)
    assert code == 0, err
    records = {Path(r["image"]).name: r for r in map(json.loads, out_file.read_text().splitlines())}
    assert set(records) == {"a_good.png", "fake.png"}
    assert records["fake.png"]["status"] == "failed" and "cannot decode" in records["fake.png"]["error"]
    assert records["a_good.png"]["status"] == "ok" and records["a_good.png"]["answer"].strip()
    code, _, err = run_cli(["ask", "-m", "blip2-tiny-opt", "-q", str(folder), "how many shapes are there?"], capsys)
    assert_one_line_error(code, err, "fake.png", "cannot decode")


def test_api_skip_bad_images_records_a_float_image(tiny_model):
    """N39b: a mode-F PIL image with skip_bad_images=True is recorded as failed, the others answered (was: the
    BadImageError stopped the call); without it, the call is refused naming the image."""
    from evalkit.core.errors import EvalkitError

    floats = Image.frombytes("F", (8, 8), np.random.default_rng(0).random((8, 8)).astype("<f4").tobytes())
    good = Image.open(SHAPE)
    records = tiny_model.caption([good, floats, str(SHAPE)], skip_bad_images=True, num_beams=1)
    assert [r.status for r in records] == ["ok", "failed", "ok"]
    assert "mode F" in records[1].error and records[0].caption == records[2].caption != ""
    with pytest.raises(EvalkitError, match="image <image 1>: mode F"):
        tiny_model.caption([good, floats], num_beams=1)


# ---------------------------------------------------------------------------------------------- item 8: records

def test_foreign_failed_journal_line_is_not_counted(finished_run, tmp_path, capsys, no_model_load):
    """J05: a journal line of a sample not in the run (id 9999, failed) is neither counted as failed nor a reason
    the run is not reportable: run.json's counts and reasons agree (was: failed 0 beside "1 failed samples")."""
    results = _copy(finished_run, tmp_path)
    folder = run_folder(results)
    (folder / "run.json").unlink()
    with open(folder / "predictions.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "9999", "prompt": "", "prediction": "", "references": [], "status": "failed",
                                 "error": "bad image: gone", "image": str(SHAPE)}) + "\n")
    code, _, err = run_cli([*CAPTION, "--limit", "2", "--results", str(results), "--json"], capsys)
    assert code == 0, err
    record = json.loads((folder / "run.json").read_text())
    assert record["counts"]["failed"] == 0
    assert not any("failed" in reason for reason in record["not_reportable_reasons"])
    assert any("--limit 2" in reason for reason in record["not_reportable_reasons"])


def test_limit_above_the_split_is_the_full_split(tmp_path, capsys):
    """N95: --limit larger than the split runs the whole split, which is what is recorded: the same run (folder)
    as without --limit, not marked a subset (was: 'not reportable: --limit 100000: a subset')."""
    data = tmp_path / "shapes"
    data.mkdir()
    entries = json.loads((SHAPES_DIR / "dataset_shapes.json").read_text())
    kept = [e for e in entries["images"] if e["split"] == "test"][:3]
    (data / "dataset_shapes.json").write_text(json.dumps({**entries, "images": kept}))
    (data / "images").mkdir()
    for entry in kept:
        shutil.copy(SHAPES_DIR / "images" / entry["filename"], data / "images" / entry["filename"])
    results = tmp_path / "r"
    code, _, err = run_cli([*CAPTION, "--data", str(data), "--limit", "100000", "--results", str(results)], capsys)
    assert code == 0, err
    folder = run_folder(results)
    record = json.loads((folder / "run.json").read_text())
    assert record["counts"]["samples"] == 3 and "limit" not in record["data"]
    assert not any("--limit" in reason for reason in record["not_reportable_reasons"]), record["not_reportable_reasons"]
    assert record["reportable"] is True  # shapes-caption states no full size: the folder's split is the split
    code, _, err = run_cli([*CAPTION, "--data", str(data), "--results", str(results)], capsys)  # the same run
    assert code == 0, err
    assert run_folder(results) == folder
    assert "already complete" in err  # the same run: its recorded result, nothing generated again


def test_one_process_resume_of_rank_journals_keeps_one_process_order(tmp_path, capsys):
    """D02: a killed 2-rank run (rank 0 journaled images 1, 3 and 5) resumed by one process writes
    predictions.jsonl byte for byte as a one-process run does (was: the folded rank lines first)."""
    from evalkit.data.images import image_record

    args = [*CAPTION, "--limit", "6"]
    code, _, err = run_cli([*args, "--results", str(tmp_path / "one")], capsys)
    assert code == 0, err
    one = run_folder(tmp_path / "one")
    lines = (one / "predictions.jsonl").read_text().splitlines(keepends=True)
    assert len({json.loads(line)["prediction"] for line in lines}) > 1  # the order is visible in the answers

    folder = tmp_path / "resumed" / one.relative_to(tmp_path / "one")
    folder.mkdir(parents=True)
    shutil.copy(one / "journal.json", folder / "journal.json")
    rank0 = [json.loads(line) for line in lines[0::2]]  # images 1, 3, 5 of 6: rank 0's shard of a 2-rank launch
    (folder / "predictions.rank0-of-2.jsonl").write_text("".join(lines[0::2]))
    (folder / "images.rank0-of-2.jsonl").write_text(
        "".join(json.dumps(image_record(p["image"])) + "\n" for p in rank0))
    code, _, err = run_cli([*args, "--results", str(tmp_path / "resumed")], capsys)
    assert code == 0, err
    assert json.loads((folder / "run.json").read_text())["counts"]["resumed_from_journal"] == 3
    assert (folder / "predictions.jsonl").read_text() == "".join(lines)
    assert not list(folder.glob("*.rank*"))


# ---------------------------------------------------------------------------------------------- item 3: the ledger

def _shapes_copy(folder: Path, n: int) -> Path:
    """The first ``n`` shapes test images with their annotations, in ``folder``."""
    folder.mkdir()
    entries = json.loads((SHAPES_DIR / "dataset_shapes.json").read_text())
    kept = [e for e in entries["images"] if e["split"] == "test"][:n]
    (folder / "dataset_shapes.json").write_text(json.dumps({**entries, "images": kept}))
    (folder / "images").mkdir()
    for entry in kept:
        shutil.copy(SHAPES_DIR / "images" / entry["filename"], folder / "images" / entry["filename"])
    return folder


def _captions(folder: Path) -> dict[str, str]:
    return {Path(p["image"]).name: p["prediction"]
            for p in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())}


REPLACEMENTS = {"shapes_test_000002.png": "shapes_test_000007.png", "shapes_test_000003.png": "shapes_test_000009.png"}


@pytest.fixture(scope="module")
def fresh_captions(tmp_path_factory) -> dict[str, str]:
    """The captions a fresh run gives for 4 shapes images, the 2nd and 3rd replaced by other shapes images."""
    from conftest import evalkit_cli

    data = _shapes_copy(tmp_path_factory.mktemp("fresh") / "d", 4)
    for name, other in REPLACEMENTS.items():
        shutil.copy(SHAPES_DIR / "images" / other, data / "images" / name)
    results = data.parent / "r"
    code, _, err = evalkit_cli([*CAPTION, "--data", str(data), "--results", str(results)])
    assert code == 0, err
    return _captions(run_folder(results))


@pytest.mark.parametrize("ledger, replaced, resumed", [
    ("deleted", [], 0),                                              # N99b
    ("deleted", ["shapes_test_000002.png"], 0),                      # N99c
    ("first line", list(REPLACEMENTS), 1),                           # N99d
], ids=["N99b", "N99c", "N99d"])
def test_answers_whose_image_the_ledger_lacks_are_answered_again(tmp_path, capsys, fresh_captions, ledger,
                                                                   replaced, resumed):
    """N99b-d: with images.jsonl deleted or cut short (and an image replaced), no journaled answer whose image the
    ledger lacks is resumed: it is answered again on the image as it is now, and the ledger is rebuilt (was:
    'resumed 4' with the replaced image's stale caption, exit 0)."""
    data = _shapes_copy(tmp_path / "d", 4)
    args = [*CAPTION, "--data", str(data), "--results", str(tmp_path / "r")]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    folder = run_folder(tmp_path / "r")
    before = _captions(folder)
    ledger_file = folder / "images.jsonl"
    if ledger == "deleted":
        ledger_file.unlink()
    else:
        ledger_file.write_text(ledger_file.read_text().splitlines(keepends=True)[0])
    for name in replaced:
        shutil.copy(SHAPES_DIR / "images" / REPLACEMENTS[name], data / "images" / name)
        assert fresh_captions[name] != before[name]  # a stale answer would show
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    record = json.loads((folder / "run.json").read_text())
    assert record["counts"]["resumed_from_journal"] == resumed
    after = _captions(folder)
    for name in before:
        assert after[name] == (fresh_captions[name] if name in replaced else before[name]), name
    rebuilt = [json.loads(line)["image"] for line in ledger_file.read_text().splitlines()]
    assert sorted(Path(key).name for key in rebuilt) == sorted(before)
    if not replaced:  # the rebuilt ledger resumes everything (one case: each run scores with METEOR's JVM)
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        assert "already complete" in err  # the rebuilt ledger matches run.json's images: nothing answered again


# ---------------------------------------------------------------------------------------------- item 8: METEOR

# What METEOR 1.5 (-Xmx2G) printed for the probe's 2.4 MB caption (480,000 words), reproduced here on 2 December
# 2026 with pycocoevalcap's jar; its stand-in below prints it for any line over 100,000 characters.
METEOR_OOM = """Exception in thread "main" java.lang.OutOfMemoryError: Java heap space
\tat java.base/java.util.Arrays.copyOf(Arrays.java:3705)
\tat edu.cmu.meteor.aligner.PartialAlignment.<init>(Unknown Source)
\tat edu.cmu.meteor.aligner.Aligner.align(Unknown Source)
\tat edu.cmu.meteor.scorer.MeteorScorer.getMeteorStats(Unknown Source)
\tat Meteor.scoreStdio(Unknown Source)
\tat Meteor.main(Unknown Source)
"""


def test_meteor_failure_names_the_entry_and_the_cause(tmp_path, monkeypatch, capsys, java):
    """N84: `score coco-caption` with one huge caption: METEOR's JVM runs out of heap on it; the error is one line
    naming the image and the Java exception (was: the last 3 stack frames, neither entry nor cause). The real
    tokenizer runs; METEOR is a stand-in that answers as METEOR does and dies on the huge line as METEOR did
    (a real out-of-memory takes minutes of CPU)."""
    from evalkit.metrics import caption_metrics

    trace = tmp_path / "trace.txt"
    trace.write_text(METEOR_OOM)
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
case "$*" in *meteor-1.5.jar*)
  while IFS= read -r line; do
    if [ ${{#line}} -gt 100000 ]; then cat "{trace}" >&2; exit 1; fi
    echo "4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 4.0 1.0"
  done; exit 0;;
esac
exec "{java}" "$@"
""")
    fake.chmod(0o755)
    monkeypatch.setattr(caption_metrics, "require_java", lambda: str(fake))
    annotations = json.loads((Path(__file__).parent / "fixtures" / "coco_val2017" /
                              "captions_val2017_sample8.json").read_text())
    ids = [image["id"] for image in annotations["images"]]
    predictions = [{"image_id": i, "caption": "a dog sitting on a table"} for i in ids]
    predictions[2]["caption"] = " ".join(["a dog on the table"] * 6000)  # 30,000 words, 107,999 characters
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    code, _, err = run_cli(["score", "coco-caption", "--annotations", str(tmp_path / "a.json"), "--predictions",
                            str(tmp_path / "p.json"), "--json"], capsys)
    assert_one_line_error(code, err, f"on image {ids[2]} (its tokenised prediction: 30,000 words)",
                          "java.lang.OutOfMemoryError: Java heap space")
