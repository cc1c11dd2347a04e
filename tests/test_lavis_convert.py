"""`evalkit convert lavis` / `to-lavis`: LAVIS BLIP-2 state dicts <-> transformers folders.

The LAVIS key names checked here are LAVIS 1.0.2's (tests/test_lavis_reference.py loads the converted state
dicts into LAVIS's own classes with every key landing); the tensors are the bundled tiny models'.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli
from evalkit.demo.bundled import MODELS_DIR
from evalkit.models.lavis_convert import hf_folder_to_lavis, save_lavis_checkpoint

FAMILIES = {"opt": "blip2-tiny-opt", "t5": "blip2-tiny-t5", "itm": "blip2-tiny-itm"}


def _hf_state(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(MODELS_DIR / name / "model.safetensors"))


def _to_lavis(name: str, tmp_path: Path, capsys) -> Path:
    pth = tmp_path / f"{name}.pth"
    code, out, err = run_cli(["convert", "to-lavis", name, "--out", str(pth)], capsys)
    assert code == 0, err
    assert "vision key bias dropped: max |k_bias|" in out
    return pth


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_gives_byte_identical_tensors(family, tmp_path, capsys):
    name = FAMILIES[family]
    pth = _to_lavis(name, tmp_path, capsys)
    lavis = torch.load(pth, weights_only=True)["model"]
    assert any(k.endswith("attn.q_bias") for k in lavis) and not any(k.startswith("vision_model") for k in lavis)
    out = tmp_path / "back"
    code, stdout, err = run_cli(["convert", "lavis", str(pth), "--family", family, "--base", name, "--out", str(out)],
                                capsys)
    assert code == 0, err
    original, back = _hf_state(name), load_file(str(out / "model.safetensors"))
    assert sorted(back) == sorted(original)
    key_bias_seen = 0.0
    for key, tensor in original.items():
        if key.endswith("self_attn.qkv.bias"):
            q, k, v = tensor.chunk(3)
            q2, k2, v2 = back[key].chunk(3)
            assert q.numpy().tobytes() == q2.numpy().tobytes() and v.numpy().tobytes() == v2.numpy().tobytes()
            assert not k2.any()  # EVA has no key bias: the reverse conversion dropped it
            key_bias_seen = max(key_bias_seen, float(k.abs().max()))
            continue
        assert back[key].dtype == tensor.dtype and back[key].numpy().tobytes() == tensor.numpy().tobytes(), key
    assert key_bias_seen > 1e-4  # the tiny models' key bias is small, not zero: the check above can fail
    record = json.loads((out / "lavis_conversion.json").read_text())
    assert record["from_lavis"]["count"] == len(original) and record["from_base"]["count"] == 0


def test_round_trip_is_exact_once_the_key_bias_is_zero(tmp_path, capsys):
    """With the key bias zeroed first (which changes no output, see below), HF -> LAVIS -> HF is the identity."""
    model = tmp_path / "zeroed"
    model.mkdir()
    for file in (MODELS_DIR / "blip2-tiny-opt").iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    state = _hf_state("blip2-tiny-opt")
    for key in [k for k in state if k.endswith("qkv.bias")]:
        q, _, v = state[key].chunk(3)
        state[key] = torch.cat([q, torch.zeros_like(v), v])
    save_file(state, str(model / "model.safetensors"))
    pth = tmp_path / "zeroed.pth"
    assert run_cli(["convert", "to-lavis", str(model), "--out", str(pth)], capsys)[0] == 0
    out = tmp_path / "back"
    assert run_cli(["convert", "lavis", str(pth), "--family", "opt", "--base", str(model), "--out", str(out)],
                   capsys)[0] == 0
    back = load_file(str(out / "model.safetensors"))
    assert all(back[k].numpy().tobytes() == v.numpy().tobytes() for k, v in state.items())


def test_a_key_bias_does_not_change_the_vision_tower():
    """Softmax ignores a constant added to a row: zeroing the key bias moves the ViT output by rounding only,
    zeroing the query bias (a control) moves it by far more."""
    from transformers import Blip2VisionConfig, Blip2VisionModel

    config = json.loads((MODELS_DIR / "blip2-tiny-opt/config.json").read_text())["vision_config"]
    state = {k[len("vision_model."):]: v.float() for k, v in _hf_state("blip2-tiny-opt").items()
             if k.startswith("vision_model.")}
    model = Blip2VisionModel(Blip2VisionConfig(**config)).eval()
    model.load_state_dict(state)
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def output(third: int | None) -> torch.Tensor:
        changed = dict(state)
        for key in [k for k in state if k.endswith("qkv.bias")]:
            parts = list(state[key].chunk(3))
            if third is not None:
                parts[third] = torch.zeros_like(parts[third])
            changed[key] = torch.cat(parts)
        model.load_state_dict(changed)
        with torch.no_grad():
            return model(pixels).last_hidden_state

    reference = output(None)
    key_bias = max(float(state[k].chunk(3)[1].abs().max()) for k in state if k.endswith("qkv.bias"))
    no_key_bias = (output(1) - reference).abs().max().item()
    no_query_bias = (output(0) - reference).abs().max().item()
    print(f"max |k_bias| {key_bias:.6f}; ViT max |Δ| without key bias {no_key_bias:.3g}, "
          f"without query bias (control) {no_query_bias:.3g}")
    assert key_bias > 1e-4
    assert no_key_bias < 1e-5
    assert no_query_bias > 1e3 * max(no_key_bias, 1e-7)


def test_a_fine_tune_without_frozen_weights_is_completed_from_the_base(tmp_path, capsys):
    """LAVIS's runner saves only trained parameters: the Q-Former, query tokens and projection come from the
    .pth, the ViT and the LM from --base; the folder and run.json say which came from where."""
    state, _, _ = hf_folder_to_lavis(MODELS_DIR / "blip2-tiny-opt")
    trained = {k: v for k, v in state.items() if k.startswith(("Qformer.", "query_tokens", "opt_proj."))}
    trained["opt_proj.bias"] = trained["opt_proj.bias"] + 1.0  # "fine-tuned": differs from the base
    pth = tmp_path / "finetune.pth"
    save_lavis_checkpoint(trained, pth)
    out = tmp_path / "converted"
    code, stdout, err = run_cli(["convert", "lavis", str(pth), "--family", "opt", "--base", "blip2-tiny-opt",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    record = json.loads((out / "lavis_conversion.json").read_text())
    assert record["from_base"]["count"] > 0 and record["from_lavis"]["count"] > 0
    assert record["from_base"]["first"][0].startswith("language_model.")
    assert all(k.startswith(("qformer.", "query_tokens", "language_projection.")) for k in record["from_lavis"]["first"])
    converted = load_file(str(out / "model.safetensors"))
    assert torch.equal(converted["language_projection.bias"], trained["opt_proj.bias"])
    results = tmp_path / "results"
    code, _, err = run_cli(["run", "shapes-vqa", "--model", str(out), "--limit", "4", "--results", str(results),
                            "-q", "--device", "cpu"], capsys)
    assert code == 0, err
    run = json.loads(next(results.rglob("run.json")).read_text())
    conversion = run["model"]["lavis_conversion"]
    assert conversion["from_base"]["count"] == record["from_base"]["count"]
    assert conversion["not_expressible"][0]["what"] == "ln_vision eps"
    assert "lavis_differences" not in run["model"]  # its ln_vision eps is LAVIS's (set at load)


def test_the_converted_config_carries_lavis_constants(tmp_path, capsys):
    pth = _to_lavis("blip2-tiny-t5", tmp_path, capsys)
    out = tmp_path / "t5"
    assert run_cli(["convert", "lavis", str(pth), "--family", "t5", "--base", "blip2-tiny-t5", "--out", str(out)],
                   capsys)[0] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["layer_norm_eps"] == 1e-6
    assert config["text_config"]["dense_act_fn"] == "gelu"  # LAVIS's blip2_t5.py sets it; the tiny model has gelu_new
    changes = json.loads((out / "lavis_conversion.json").read_text())["config_changes"]
    assert [c["field"] for c in changes] == ["text_config.dense_act_fn"]
    from transformers import Blip2Config

    assert Blip2Config.from_pretrained(out).text_config.dense_act_fn == "gelu"  # transformers keeps the field


def _bad(tmp_path: Path, name: str, state) -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("case", ["text file", "truncated", "no model", "not blip2", "wrong family", "extra key",
                                  "missing weight", "half a bias pair", "wrong shape"])
def test_bad_checkpoints_are_one_line_errors_and_write_nothing(case, tmp_path, capsys):
    state, _, _ = hf_folder_to_lavis(MODELS_DIR / "blip2-tiny-opt")
    base = "blip2-tiny-opt"
    if case == "text file":
        pth = tmp_path / "notes.pth"
        pth.write_text("not a checkpoint")
        expect = "not a readable torch checkpoint"
    elif case == "truncated":
        whole = _bad(tmp_path, "whole.pth", {"model": state})
        pth = tmp_path / "cut.pth"
        pth.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        expect = "not a readable torch checkpoint"
    elif case == "no model":
        pth = _bad(tmp_path, "opt.pth", {"optimizer": {}, "epoch": 3})
        expect = "no state dict under \"model\""
    elif case == "not blip2":
        pth = _bad(tmp_path, "bert.pth", {"model": {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}})
        expect = "not a LAVIS BLIP-2 checkpoint (first keys: bert.embeddings"
    elif case == "wrong family":
        t5_state, _, _ = hf_folder_to_lavis(MODELS_DIR / "blip2-tiny-t5")
        pth = _bad(tmp_path, "t5.pth", {"model": t5_state})
        expect = "a LAVIS t5 checkpoint (key t5_"
    elif case == "extra key":
        pth = _bad(tmp_path, "extra.pth", {"model": {**state, "Qformer.bert.pooler.dense.weight": torch.zeros(2)}})
        expect = "map to no opt BLIP-2 weight: Qformer.bert.pooler.dense.weight"
    elif case == "missing weight":
        base_dir = tmp_path / "base"
        base_dir.mkdir()
        for file in (MODELS_DIR / base).iterdir():
            (base_dir / file.name).write_bytes(file.read_bytes())
        base_state = _hf_state(base)
        del base_state["language_model.model.decoder.final_layer_norm.weight"]
        save_file(base_state, str(base_dir / "model.safetensors"))
        del state["opt_model.model.decoder.final_layer_norm.weight"]
        pth = _bad(tmp_path, "missing.pth", {"model": state})
        base = str(base_dir)
        expect = "neither the .pth nor --base"
    elif case == "half a bias pair":
        del state["visual_encoder.blocks.1.attn.v_bias"]
        pth = _bad(tmp_path, "half.pth", {"model": state})
        expect = "visual_encoder.blocks.1.attn.v_bias is missing"
    else:
        state["opt_proj.weight"] = torch.zeros(3, 3)
        pth = _bad(tmp_path, "shape.pth", {"model": state})
        expect = "language_projection.weight has shape (3, 3)"
    out = tmp_path / "out"
    code, stdout, err = run_cli(["convert", "lavis", str(pth), "--family", "opt", "--base", base, "--out", str(out)],
                                capsys)
    assert code == 2, (stdout, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err
    assert str(pth.name) in lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_lavis_trained_hub_weights_are_flagged_with_the_ln_vision_eps_they_run_with(tmp_path, capsys):
    """A Salesforce/blip2-* checkpoint as the hub cache holds it: LAVIS trained those weights with ln_vision's eps
    1e-5 (lavis/models/blip2_models/blip2.py init_vision_encoder: LayerNorm(num_features), torch's default), the
    hub config gives transformers' vision layer_norm_eps, which post_layernorm uses; run.json says so. The bundled
    models (trained here by transformers) carry no such flag."""
    import shutil

    snapshot = tmp_path / "hub" / "models--Salesforce--blip2-opt-2.7b" / "snapshots" / ("5" * 40)
    shutil.copytree(MODELS_DIR / "blip2-tiny-opt", snapshot)
    config_eps = json.loads((snapshot / "config.json").read_text())["vision_config"].get("layer_norm_eps", 1e-6)
    results = tmp_path / "results"
    for model in (str(snapshot), "blip2-tiny-opt"):
        code, _, err = run_cli(["run", "shapes-vqa", "--model", model, "--limit", "4", "--results", str(results),
                                "-q", "--device", "cpu"], capsys)
        assert code == 0, err
    runs = {json.loads(path.read_text())["model"]["name"]: json.loads(path.read_text())["model"]
            for path in results.rglob("run.json")}
    assert len(runs) == 2
    flagged = next(model for name, model in runs.items() if name != "blip2-tiny-opt")
    (difference,) = flagged["lavis_differences"]
    assert difference["what"] == "ln_vision eps" and difference["lavis"] == 1e-5
    assert difference["this_run"] == config_eps != 1e-5
    assert "lavis_differences" not in runs["blip2-tiny-opt"]
