"""evalkit's metrics as `evaluate` modules: equal to `evalkit score` on real data, loadable with no network."""

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
from evalkit.metrics.retrieval_recall import retrieval_recall  # noqa: E402
from evalkit.metrics.vqa_accuracy import VQA_METRIC_VARIANTS  # noqa: E402

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
def test_vqa_accuracy_equals_evalkit_score_on_53_real_questions(variant, no_network, capsys):
    annotations = json.loads(ANNOTATIONS.read_text())["annotations"]
    references = [{"answers": [a["answer"] for a in ann["answers"]], "question_type": ann["question_type"],
                   "answer_type": ann["answer_type"]} for ann in annotations]
    loaded = evaluate.load(module_path("vqa_accuracy"), variant, keep_in_memory=True)  # from the package's file
    for predictions_file in PREDICTION_FILES:
        expected = score_json(["vqav2", "--questions", str(QUESTIONS), "--annotations", str(ANNOTATIONS),
                               "--predictions", str(predictions_file), "--vqa-metric", variant], capsys)
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


@pytest.fixture
def caption_scorer_memo(monkeypatch):
    """The COCO scorer, run once per distinct input: a second call with the same captions in the same order
    (whatever the image ids) gets the first call's result. The scorer is a deterministic function of that
    input, and METEOR's JVM costs ~10 s a start on 2 cores. Yields the list of calls: (input, was it a repeat)."""
    from evalkit.data import coco_caption_files
    from evalkit.metrics import caption_metrics
    from evalkit.metrics.evaluate_modules import coco_caption

    calls: list[tuple[str, bool]] = []
    results: dict[str, object] = {}

    def score_once(references, predictions, **kwargs):
        key = json.dumps([[list(r) for r in references.values()], list(predictions.values()), kwargs],
                         sort_keys=True, default=str)
        calls.append((key, key in results))
        if key not in results:
            results[key] = caption_metrics.score_captions(references, predictions, **kwargs)
        return results[key]

    monkeypatch.setattr(coco_caption_files, "score_captions", score_once)
    monkeypatch.setattr(coco_caption, "score_captions", score_once)
    yield calls


@pytest.mark.usefixtures("java")
def test_coco_caption_equals_evalkit_score_on_karpathy_refs(tmp_path, no_network, capsys, caption_scorer_memo):
    """200 Karpathy test images, a published model's captions (MAGIC; ../shared/data), COCO-format files."""
    with gzip.open(KARPATHY / "annotations.json.gz", "rt", encoding="utf-8") as handle:
        annotations = json.load(handle)
    with gzip.open(KARPATHY / "predictions.json.gz", "rt", encoding="utf-8") as handle:
        captions = {p["image_id"]: p["caption"] for p in json.load(handle)}
    images = annotations["images"][::25][:200]
    ids = [image["id"] for image in images]
    wanted = set(ids)
    subset = {**annotations, "images": images,
              "annotations": [a for a in annotations["annotations"] if a["image_id"] in wanted]}
    (tmp_path / "refs.json").write_text(json.dumps(subset))
    (tmp_path / "preds.json").write_text(json.dumps([{"image_id": i, "caption": captions[i]} for i in ids]))
    expected = score_json(["coco-caption", "--annotations", str(tmp_path / "refs.json"), "--predictions",
                           str(tmp_path / "preds.json")], capsys)
    references = {i: [] for i in ids}
    for ann in subset["annotations"]:
        references[ann["image_id"]].append(ann["caption"])
    result = COCOCaption(keep_in_memory=True).compute(predictions=[captions[i] for i in ids],
                                                             references=[references[i] for i in ids])
    assert {k: result[k] for k in expected["metrics"]} == expected["metrics"]
    assert result["n_images"] == expected["n_images"] == 200
    assert set(result["skipped"]) == set(expected["skipped"])
    assert [repeat for _, repeat in caption_scorer_memo] == [False, True]  # the module gave the scorer the same input


def test_retrieval_recall_equals_the_function_with_ties_and_batches():
    rng = np.random.default_rng(0)
    n_img, per_image = 12, 3
    i2t = rng.integers(0, 4, size=(n_img, n_img * per_image)).astype(np.float64)  # many exact ties
    t2i = rng.normal(size=(n_img * per_image, n_img))
    img2txt = [list(range(i * per_image, (i + 1) * per_image)) for i in range(n_img)]
    txt2img = [i for i in range(n_img) for _ in range(per_image)]
    expected = retrieval_recall(i2t, t2i, img2txt, txt2img, ks=(1, 2, 5))
    metric = RetrievalRecall(keep_in_memory=True)
    for start in range(0, n_img, 5):
        metric.add_batch(predictions=i2t[start:start + 5].tolist(), references=img2txt[start:start + 5])
    assert metric.compute(t2i_scores=t2i, ks=[1, 2, 5]) == expected
    assert RetrievalRecall(keep_in_memory=True).compute(predictions=i2t, references=img2txt) == \
        retrieval_recall(i2t, i2t.T, img2txt, txt2img)


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
    result = RetrievalRecall(keep_in_memory=True).compute(predictions=i2t, references=img2txt, t2i_scores=t2i)
    assert result == {name: metric["value"] for name, metric in record["metrics"].items()}
