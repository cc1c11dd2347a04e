"""Task and model registries: names, did-you-mean, plugins from --include-path."""

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.models.catalog import MODELS, resolve_model
from evalkit.core.registry import all_tasks, get_task


def test_every_hub_checkpoint_is_registered():
    hub = {"blip2-opt-2.7b", "blip2-opt-6.7b", "blip2-flan-t5-xl", "blip2-flan-t5-xxl", "blip2-opt-2.7b-coco",
           "blip2-opt-6.7b-coco", "blip2-flan-t5-xl-coco", "blip2-itm-vit-g", "blip2-itm-vit-g-coco"}
    assert hub <= set(MODELS)
    assert all(MODELS[name].source == f"Salesforce/{name}" for name in hub)
    assert MODELS["blip2-flan-t5-xl"].family == "t5" and MODELS["blip2-itm-vit-g"].family == "itm"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(EvalkitError, match="did you mean: coco-caption"):
        get_task("coco-captions")
    with pytest.raises(EvalkitError, match="did you mean: blip2-opt-2.7b"):
        resolve_model("blip2-opt-2.7")


def test_local_checkpoint_family_is_read_from_its_config(tiny_opt, tiny_t5):
    assert resolve_model(str(tiny_opt)).family == "opt"
    assert resolve_model(str(tiny_t5)).family == "t5"


def test_include_path_adds_a_task(tmp_path):
    (tmp_path / "my_task.py").write_text(
        "from evalkit.core.protocol import GenerationProtocol\n"
        "from evalkit.core.task_spec import TaskSpec\n"
        "from evalkit.data.caption_datasets import load_caption_set\n"
        "from evalkit.kinds.caption import CAPTION\n"
        "TASKS = [TaskSpec(name='my-caption', version='1', kind=CAPTION, description='mine',\n"
        "                  protocol=GenerationProtocol(prompt=''), load_data=load_caption_set,\n"
        "                  default_split='test', data_help='x')]\n")
    assert "my-caption" in all_tasks([str(tmp_path)])
    assert "my-caption" not in all_tasks()


def test_broken_task_file_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(EvalkitError, match="bad.py failed to load"):
        all_tasks([str(tmp_path)])


TASK_FILE = (
    "from evalkit.core.protocol import GenerationProtocol, RetrievalProtocol\n"
    "from evalkit.core.task_spec import TaskSpec\n"
    "from evalkit.data.caption_datasets import load_caption_set\n"
    "from evalkit.kinds.caption import CAPTION\n"
    "TASKS = [TaskSpec(name='my-caption', version='1', kind={kind}, description='mine',\n"
    "                  protocol={protocol}, family_overrides={overrides}, load_data=load_caption_set,\n"
    "                  default_split='test', data_help='x')]\n")


@pytest.mark.parametrize("kind, protocol, overrides, message", [
    ("'captoin'", "GenerationProtocol()", "{}", "kind must be a task kind from evalkit.kinds"),
    ("'caption'", "GenerationProtocol()", "{}", "kind must be a task kind"),
    ("CAPTION", "RetrievalProtocol()", "{}", "a caption task needs a GenerationProtocol, got RetrievalProtocol"),
    ("CAPTION", "GenerationProtocol()", "{'itm': {}}", "model family 'itm' is not one of caption's"),
    ("CAPTION", "GenerationProtocol()", "{'opt': {'beams': 3}}", "unknown generation protocol setting 'beams'"),
    ("CAPTION", "GenerationProtocol()", "{'t5': {'rerank_k': 3}}", "unknown generation protocol setting 'rerank_k'"),
])
def test_a_bad_task_spec_fails_when_its_file_loads(tmp_path, kind, protocol, overrides, message):
    """A mistyped kind or protocol field is refused when the task file loads, before any model or data."""
    (tmp_path / "my_task.py").write_text(TASK_FILE.format(kind=kind, protocol=protocol, overrides=overrides))
    with pytest.raises(EvalkitError, match=message):
        all_tasks([str(tmp_path)])


def test_every_builtin_task_names_a_known_kind_and_has_a_protocol_per_family():
    from evalkit.kinds import all_kinds

    kinds = all_kinds()
    assert {"caption", "retrieval", "vqa"} <= set(kinds)
    assert {task.kind.name for task in all_tasks().values()} <= set(kinds)
    for task in all_tasks().values():
        assert kinds[task.kind.name] is task.kind
        for family in task.kind.model_families:
            assert isinstance(task.protocol_for(family), task.kind.protocol_type)


def test_evalkit_tasks_imports_from_a_plain_checkout(tmp_path):
    """Without the install's package-dir mapping (python -S skips the editable .pth), tasks/ is evalkit.tasks."""
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import evalkit.tasks.vqav2 as v, evalkit;"
            "from evalkit.core.registry import all_tasks; print(v.__file__); print(sorted(all_tasks()))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(root), sysconfig.get_paths()["purelib"]],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert Path(lines[0]) == root / "tasks" / "vqav2.py"
    assert "vqav2" in lines[1] and "shapes-vqa" in lines[1]
