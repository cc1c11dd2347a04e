"""`evalkit serve` without a browser: refusals, the missing extra, uploads, paths from the browser, decoding settings.

The browser and gradio_client tests are in tests/test_serve_browser.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import FIXTURES, run_cli
from evalkit.core.errors import EvalkitError
from evalkit.demo.bundled import SHAPES_DIR

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"


# -- safe by default ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_other_hosts_need_a_password(host, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # were the host let through, no server would start
    code, out, err = run_cli(["serve", "--host", host], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--auth" in lines[0] and host in lines[0], err


def test_auth_from_the_command_line_or_a_file(tmp_path):
    from evalkit.serve.access import check_host, parse_auth

    assert parse_auth("ana:s3cret:x") == ("ana", "s3cret:x")
    secret = tmp_path / "auth.txt"
    secret.write_text("bo:pw\n")
    assert parse_auth(str(secret)) == ("bo", "pw")
    check_host("0.0.0.0", ("bo", "pw"))  # allowed with a password
    check_host("127.0.0.1", None)
    for bad in ("nocolon", ":pw", "user:", str(tmp_path / "missing.txt")):
        with pytest.raises(EvalkitError):
            parse_auth(bad)
    secret.write_text("no colon here\n")
    with pytest.raises(EvalkitError, match="auth file"):
        parse_auth(str(secret))


def test_without_the_serve_extra_one_line_naming_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    code, out, err = run_cli(["serve"], capsys)
    assert code == 2
    assert err.strip().splitlines() == ["error: evalkit serve needs the serve extra: pip install 'evalkit[serve]'"]


def test_the_command_module_imports_no_heavy_library():
    code = ("import sys, evalkit.cli.serve_command, evalkit.cli.main; "
            "print(sorted(m for m in ('gradio', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    # evalkit.cli.main may import torch through other commands (another change makes it lighter); gradio never
    assert "gradio" not in out.stdout, out.stdout


# -- uploads ------------------------------------------------------------------------------------


def test_uploads_that_are_not_images_too_large_or_bombs_are_refused(tmp_path):
    from evalkit.serve.uploads import check_image

    assert check_image(str(SHAPE)) == str(SHAPE)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(EvalkitError, match="notes.png: cannot decode"):
        check_image(str(text))
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 600)).save(big)
    with pytest.raises(EvalkitError, match="images up to 0.001 MiB"):
        check_image(str(big), max_mb=0.001)
    bomb = tmp_path / "bomb.png"  # 20000 x 20000 = 400 MP, over PIL's 2 x 89 MP limit, a few KiB on disk
    Image.new("1", (20000, 20000)).save(bomb)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(EvalkitError, match="decompression bomb"):
        check_image(str(bomb))
    with pytest.raises(EvalkitError, match="give an image first"):
        check_image(None)


# -- the results folder -------------------------------------------------------------------------


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"task": {"name": "t"}, "model": {"name": "m"}}))
    return folder


def test_paths_from_the_browser_stay_inside_the_results_folder(tmp_path):
    from evalkit.serve.runs_folder import RunsFolder

    results = tmp_path / "results"
    _fake_run(results / "m" / "t" / "run1")
    outside = _fake_run(tmp_path / "elsewhere" / "run2")
    (results / "m" / "t" / "link").symlink_to(outside)
    runs = RunsFolder(results)
    assert runs.run("m/t/run1").path.name == "run1"
    for name in ("../elsewhere/run2", str(outside), "m/t/link", "m/t/../../../elsewhere/run2"):
        with pytest.raises(EvalkitError, match="outside the results folder"):
            runs.run(name)
    with pytest.raises(EvalkitError, match="no finished run"):
        runs.run("m/t")


# -- decoding settings --------------------------------------------------------------------------


def test_beam_search_fingerprints_are_those_recorded_before_sampling_existed():
    """Fingerprints of every task's default protocol, recorded with main at d2b1856 (before the sampling fields)."""
    from evalkit.core.registry import get_task

    recorded = json.loads((FIXTURES / "generation_fingerprints_before_sampling.json").read_text())
    assert len(recorded) >= 10
    for key, fingerprint in recorded.items():
        task, family = key.split("/")
        assert get_task(task).protocol_for(family, None).fingerprint() == fingerprint, key


def test_controls_give_the_protocol_of_the_same_flags():
    from evalkit.serve.decoding import BEAM, SAMPLING, Controls
    from evalkit.serve.model_pool import ModelPool

    pool = ModelPool()
    default = pool.default_protocol("blip2-tiny-opt", "caption")
    shown = Controls.of(default)
    assert shown.method == BEAM and shown.num_beams == default.num_beams
    # values come back from the browser as floats: the protocol (and fingerprint) is the default one
    as_floats = Controls(BEAM, *(float(v) for v in shown.values()[1:]))
    api = pool.default_protocol("blip2-tiny-opt", "caption")
    assert api.with_overrides(as_floats.overrides()).fingerprint() == default.fingerprint()
    sampled = Controls(SAMPLING, 1, 20, 0, 1.0, 1.0, 0.7, 0.9, 3).overrides()
    assert sampled["do_sample"] is True and sampled["seed"] == 3
    assert api.with_overrides(sampled).fingerprint() != default.fingerprint()
    with pytest.raises(EvalkitError, match="sampling only"):
        api.with_overrides({"temperature": 0.5})


def test_nucleus_sampling_repeats_with_its_seed():
    import evalkit

    model = evalkit.load("blip2-tiny-opt", device="cpu")
    settings = dict(do_sample=True, temperature=1.5, top_p=1.0, num_beams=1)
    runs = {seed: [model.caption(str(SHAPE), seed=seed, **settings)[0].caption for _ in range(2)] for seed in range(4)}
    assert all(a == b for a, b in runs.values())  # the same seed draws the same caption
    assert len({a for a, _ in runs.values()}) > 1  # other seeds draw others
    beam = model.caption(str(SHAPE))[0]
    assert beam.protocol_fingerprint != model.caption(str(SHAPE), seed=0, **settings)[0].protocol_fingerprint


def test_sampling_flags_need_sample(capsys):
    code, _, err = run_cli(["caption", str(SHAPE), "--temperature", "0.7"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: --temperature applies to sampling only: add --sample"]


def test_a_model_loads_on_first_use_and_stays_loaded():
    from evalkit.serve.model_pool import ModelPool

    pool = ModelPool(["blip2-tiny-t5"], device="cpu")
    assert pool.names == ["blip2-tiny-opt", "blip2-tiny-t5"]  # listed once
    heard: list[str] = []
    assert not pool.is_loaded("blip2-tiny-t5")
    first = pool.get("blip2-tiny-t5", heard.append)
    assert pool.get("blip2-tiny-t5", heard.append) is first
    assert heard == ["loading blip2-tiny-t5 (first use; it stays loaded)"]
    with pytest.raises(EvalkitError, match="not offered here"):
        pool.get("blip2-opt-2.7b")
