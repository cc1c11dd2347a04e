"""evalkit's metrics as `evaluate` modules, loadable with no network, equal to the independent references the suite
keeps: the official VQA script's golden numbers (test_vqav2_files.py), the official COCO caption evaluation
(pycocoevalcap's COCOEvalCap, tests/official_coco_eval.py) and LAVIS's recall loop restated in test_retrieval_recall.py."""

from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest

try:
    import evaluate
except ImportError:  # a test dependency, like Java and Chromium: without it these tests fail, never skip
    pytest.fail("the evaluate-module tests need `evaluate`: pip install -e '.[test]'", pytrace=False)

from conftest import FIXTURES, run_cli  # noqa: E402
from evalkit.metrics.evaluate_modules import MODULES, module_path  # noqa: E402
from evalkit.metrics.evaluate_modules.coco_caption import COCOCaption  # noqa: E402
from evalkit.metrics.evaluate_modules.retrieval_recall import RetrievalRecall  # noqa: E402
from evalkit.metrics.evaluate_modules.vqa_accuracy import VQAAccuracy  # noqa: E402
from evalkit.metrics.caption_metrics import OFFICIAL_KEYS  # noqa: E402
from evalkit.metrics.vqa_accuracy import VQA_METRIC_VARIANTS  # noqa: E402
from official_coco_eval import official_coco_eval  # noqa: E402
from test_retrieval_recall import lavis_report_metrics  # noqa: E402
from test_vqav2_files import GOLDEN as OFFICIAL_SCRIPT_53Q  # noqa: E402

VQA = FIXTURES / "vqav2_53q"
QUESTIONS = VQA / "v2_OpenEnded_mscoco_val2014_questions_53.json"
ANNOTATIONS = VQA / "v2_mscoco_val2014_annotations_53.json"
PREDICTION_FILES = sorted(VQA.glob("emma_vqa_val2014_53q_pred_*.json"))
KARPATHY = FIXTURES / "karpathy_refs"


@pytest.fixture(autouse=True)
def evaluate_cache_in_tmp(monkeypatch, tmp_path):
    """evaluate makes a folder per metric in its cache even when keeping the data in memory: not in $HOME."""
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", tmp_path / "hf_metrics")


@pytest.fixture
def no_network(monkeypatch, tmp_path_factory):
    """Every connection attempt fails, and evaluate's module cache is a fresh folder."""
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path_factory.getbasetemp() / "hf_modules")


def score_json(args: list[str], capsys) -> dict:
    code, out, err = run_cli(["score", *args, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("variant", VQA_METRIC_VARIANTS)
def test_vqa_accuracy_equals_the_official_script_on_53_real_questions(variant, no_network):
    """On these 53 real questions the official script (Python 2.7, unmodified), LAVIS and lmms-eval print the same
    numbers: test_vqav2_files.GOLDEN."""
    annotations = json.loads(ANNOTATIONS.read_text())["annotations"]
    references = [{"answers": [a["answer"] for a in ann["answers"]], "question_type": ann["question_type"],
                   "answer_type": ann["answer_type"]} for ann in annotations]
    loaded = evaluate.load(module_path("vqa_accuracy"), variant, keep_in_memory=True)  # from the package's file
    assert sorted(p.name for p in PREDICTION_FILES) == sorted(OFFICIAL_SCRIPT_53Q)
    for predictions_file in PREDICTION_FILES:
        expected = OFFICIAL_SCRIPT_53Q[predictions_file.name]
        answers = {p["question_id"]: p["answer"] for p in json.loads(predictions_file.read_text())}
        predictions = [answers[ann["question_id"]] for ann in annotations]
        result = loaded.compute(predictions=predictions, references=references)
        assert result["accuracy"] == expected["overall"]
        assert result["accuracy_per_answer_type"] == expected["perAnswerType"]
        assert result["accuracy_per_question_type"] == expected["perQuestionType"]
        plain = VQAAccuracy(config_name=variant, keep_in_memory=True)  # by import, answers only, in batches
        for start in range(0, len(predictions), 20):
            plain.add_batch(predictions=predictions[start:start + 20],
                            references=[r["answers"] for r in references[start:start + 20]])
        assert plain.compute()["accuracy"] == expected["overall"]


def test_every_module_loads_offline_from_its_file(no_network):
    for name in MODULES:
        module = evaluate.load(module_path(name), keep_in_memory=True)
        assert isinstance(module, evaluate.Metric) and module.name == name
    with pytest.raises(Exception, match="unknown VQA metric variant 'lavs'"):
        evaluate.load(module_path("vqa_accuracy"), "lavs")


@pytest.mark.usefixtures("java")
def test_coco_caption_equals_the_official_evaluation_on_karpathy_refs(no_network):
    """200 Karpathy test images, a published model's captions (MAGIC; ../shared/data), scored by pycocoevalcap's
    COCOEvalCap on the COCO-format annotations (SPICE stood in for: it cannot run offline)."""
    with gzip.open(KARPATHY / "annotations.json.gz", "rt", encoding="utf-8") as handle:
        annotations = json.load(handle)
    with gzip.open(KARPATHY / "predictions.json.gz", "rt", encoding="utf-8") as handle:
        captions = {p["image_id"]: p["caption"] for p in json.load(handle)}
    images = annotations["images"][::25][:200]
    ids = [image["id"] for image in images]
    wanted = set(ids)
    subset = {**annotations, "images": images,
              "annotations": [a for a in annotations["annotations"] if a["image_id"] in wanted]}
    official = official_coco_eval(subset, [{"image_id": i, "caption": captions[i]} for i in ids]).eval
    references = {i: [] for i in ids}
    for ann in subset["annotations"]:
        references[ann["image_id"]].append(ann["caption"])
    result = COCOCaption(keep_in_memory=True).compute(predictions=[captions[i] for i in ids],
                                                      references=[references[i] for i in ids], spice="off")
    names = [name for name in OFFICIAL_KEYS if name != "SPICE"]
    assert len(names) == 7 and result["n_images"] == 200 and "SPICE" in result["skipped"]
    for name in names:
        assert result[name] == pytest.approx(100 * official[OFFICIAL_KEYS[name]], rel=1e-12, abs=0), name
    assert len({round(result[name], 6) for name in names}) == 7  # seven different numbers: nothing copied


def test_retrieval_recall_equals_the_function_with_ties_and_batches():
    rng = np.random.default_rng(0)
    n_img, per_image = 12, 3
    i2t = rng.integers(0, 4, size=(n_img, n_img * per_image)).astype(np.float64)  # many exact ties
    t2i = rng.normal(size=(n_img * per_image, n_img))
    img2txt = [list(range(i * per_image, (i + 1) * per_image)) for i in range(n_img)]
    txt2img = [i for i in range(n_img) for _ in range(per_image)]
    expected, _, _ = lavis_report_metrics(i2t, t2i, txt2img, img2txt)  # LAVIS's loop: R@1, 5, 10
    metric = RetrievalRecall(keep_in_memory=True)
    for start in range(0, n_img, 5):
        metric.add_batch(predictions=i2t[start:start + 5].tolist(), references=img2txt[start:start + 5])
    assert metric.compute(t2i_scores=t2i) == expected
    assert len(set(expected.values())) > 3  # the ties and the scores give different recalls
    metric = RetrievalRecall(keep_in_memory=True)
    metric.add_batch(predictions=i2t.tolist(), references=img2txt)
    custom = metric.compute(t2i_scores=t2i, ks=[1, 2, 5])
    assert {k: custom[k] for k in ("txt_r1", "txt_r5", "img_r1", "img_r5")} == \
        {k: expected[k] for k in ("txt_r1", "txt_r5", "img_r1", "img_r5")}
    # without t2i_scores the image queries are the transposed matrix
    assert RetrievalRecall(keep_in_memory=True).compute(predictions=i2t, references=img2txt) == \
        lavis_report_metrics(i2t, i2t.T, txt2img, img2txt)[0]


def test_retrieval_recall_equals_a_shapes_retrieval_run(tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-retrieval", "--limit", "20", "--scores", "--results", str(tmp_path), "-q"],
                           capsys)
    assert code == 0, err
    (run_dir,) = [p.parent for p in tmp_path.glob("*/shapes-retrieval/*/run.json")]
    record = json.loads((run_dir / "run.json").read_text())
    i2t, t2i = np.load(run_dir / "scores_i2t.npy"), np.load(run_dir / "scores_t2i.npy")
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    captions = [len(json.loads(line)["references"]) for line in lines]
    starts = np.cumsum([0] + captions)
    img2txt = [list(range(starts[i], starts[i + 1])) for i in range(len(captions))]
    txt2img = [i for i, n in enumerate(captions) for _ in range(n)]
    expected, _, _ = lavis_report_metrics(i2t, t2i, txt2img, img2txt)  # LAVIS's loop on the run's score matrices
    result = RetrievalRecall(keep_in_memory=True).compute(predictions=i2t, references=img2txt, t2i_scores=t2i)
    assert result == expected
    assert {name: metric["value"] for name, metric in record["metrics"].items()} == expected
