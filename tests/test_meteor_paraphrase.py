"""METEOR reading a paraphrase table cut to the evaluation (evalkit.metrics.meteor_paraphrase) gives every
segment the statistics it gets from its whole table.

The oracle is METEOR itself: the same ``SCORE`` lines go to ``meteor-1.5.jar`` once with its own table and once
with the cut one, and every statistics line and every score it prints must be the same. The captions are chosen
so that paraphrases matter (an empty table changes the statistics) and so that a cut made without METEOR's
normalisation ("cell-phone" is scored as "cell phone") changes them too: the check can fail.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from evalkit.core.errors import EvalkitError
from evalkit.metrics import caption_metrics as cm
from evalkit.metrics import meteor_paraphrase as mp

needs_java = pytest.mark.usefixtures("java")  # conftest: a missing Java fails these tests

# (hypothesis, references): raw captions, PTB-tokenised by evalkit like any evaluation's
HOSTILE = [
    ("a man talking on a mobile", ["A man talking on a cell-phone.", "A person on the phone"]),
    ("the news is current", ["The news is up-to-date!", "recent news"]),
    ("a famous man's hat", ["A well-known man's hat", "his hat"]),
    ("a caf\u00e9 in \u0130stanbul", ["A cafe in Istanbul", "a coffee shop in turkey"]),
    ("it\u2019s a dog\u2019s toy \u2014 300 \u212a", ["It's a dog's \u201ctoy\u201d", "300 k toy"]),
    ("the U.S. flag over 1,000 dogs...", ["a us flag", "one thousand dogs ... and a flag"]),
    ("a man ||| riding  a bike", ["a man riding a bike ||| fast", "A MAN ON A BIKE"]),
    ("", ["an empty prediction"]),
    ("a cellphone", ["a cell phone", "a mobile phone"]),
]


def meteor_output(java: str, lines: list[str], table: Path | None) -> list[str]:
    """What one meteor-1.5.jar (pycocoevalcap's command line; ``-a table`` when given) prints for the SCORE
    lines and then the EVAL line of their statistics: every statistics line and every score."""
    cmd = [java, *cm._GuardedMeteor.ARGS, *(["-a", str(table)] if table else [])]
    proc = subprocess.Popen(cmd, cwd=mp.METEOR_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        proc.stdin.flush()
        stats = [proc.stdout.readline().decode().strip() for _ in lines]
        out, _ = proc.communicate(("EVAL ||| " + " ||| ".join(stats) + "\n").encode(), timeout=300)
    finally:
        proc.kill()
    return stats + out.decode().splitlines()


@pytest.fixture(scope="module")
def hostile_lines(java) -> list[str]:
    refs = {k: r for k, (_, r) in enumerate(HOSTILE)}
    preds = {k: h for k, (h, _) in enumerate(HOSTILE)}
    tok_refs, tok_preds = cm.tokenize_captions(refs, preds)
    return [mp.meteor_score_line(tok_preds[k], tok_refs[k]) for k in refs]


@needs_java
def test_cut_table_gives_every_segment_the_whole_tables_statistics(java, hostile_lines, tmp_path):
    index = mp.paraphrase_index()
    assert index is not None
    cut = mp.cut_paraphrase_table(java, hostile_lines, tmp_path, 300, index)
    assert cut is not None and cut.total == 5_274_084
    assert 0 < cut.kept < cut.total / 100  # it ran, and cut

    whole = meteor_output(java, hostile_lines, None)
    assert meteor_output(java, hostile_lines, cut.path) == whole  # every statistic and score, to the last digit
    assert len(set(whole[:len(HOSTILE)])) == len(HOSTILE)  # the segments differ from each other

    # Paraphrases matter here: without any, the statistics change ...
    empty = tmp_path / "empty.gz"
    mp.write_table(index, np.zeros(index.n_entries, dtype=bool), empty)
    assert meteor_output(java, hostile_lines, empty) != whole
    # ... and a cut that skips METEOR's normalisation ("cell-phone" -> "cell phone") drops entries it matches.
    unnormalised = tmp_path / "unnormalised.gz"
    mp.write_table(index, mp.kept_entries(index, mp.meteor_sentences(hostile_lines)), unnormalised)
    assert meteor_output(java, hostile_lines, unnormalised) != whole


def test_score_line_is_the_one_pycocoevalcap_writes():
    """meteor_score_line equals what the library's Meteor._stat writes to METEOR's stdin."""
    import pycocoevalcap.meteor.meteor as library

    written = []

    class Pipe:
        def write(self, data):
            written.append(data)

        def flush(self):
            pass

        def readline(self):
            return b"stats\n"

        def close(self):
            pass

    meteor = library.Meteor.__new__(library.Meteor)  # no JVM
    meteor.meteor_p = type("P", (), {"stdin": Pipe(), "stdout": Pipe(), "kill": lambda self: None,
                                     "wait": lambda self: 0})()
    meteor.lock = threading.Lock()  # for the library's __del__
    cases = [("a man  riding ||| a bike", ["a ||| b", "two  spaces"]), ("", ["x"]), ("caf\u00e9", ["a", "b", "c"])]
    for hypothesis, references in cases:
        written.clear()
        meteor._stat(hypothesis, references)
        assert written == [f"{mp.meteor_score_line(hypothesis, references)}\n".encode()]
    assert mp.meteor_score_line("a  b", ["c"]) != mp.meteor_score_line("a b", ["c ||| d"])


@needs_java
def test_sentences_of_lowercase_words_and_digits_are_their_own_normalisation(java):
    """What evalkit does not send to METEOR's Normalizer, the Normalizer leaves unchanged (checked on the
    Karpathy test captions); a sentence with an apostrophe or a hyphen, it changes."""
    import gzip as gz
    import json

    with gz.open(Path(__file__).parent / "fixtures" / "karpathy_refs" / "annotations.json.gz", "rt") as f:
        captions = [a["caption"] for a in json.load(f)["annotations"][:3000]]
    simple = sorted({s for s in (" ".join(re.findall(r"[a-z0-9]+", c.lower())) for c in captions)
                     if mp._OWN_NORMAL_FORM.fullmatch(s)})
    changed = ["someone 's hand", "a cell-phone", "the u.s. flag", "a dog.", "two  spaces"]
    assert not any(mp._OWN_NORMAL_FORM.fullmatch(s) for s in changed)
    cmd = [java, "-cp", str(mp.METEOR_JAR), "edu.cmu.meteor.util.Normalizer", "en", "true"]
    out = subprocess.run(cmd, input="".join(f"{s}\n" for s in simple + changed).encode(), capture_output=True,
                         check=True, timeout=120).stdout.decode().split("\n")
    assert len(simple) > 2500
    assert out[:len(simple)] == simple
    assert all(after != before for before, after in zip(changed, out[len(simple):]))
    assert mp._normalised(java, changed + simple[:3], 120) == out[len(simple):-1] + simple[:3]


def write_table(path: Path, entries: list[tuple[str, str]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for k, (r, p) in enumerate(entries):
            f.write(f"0.{k}\n{r}\n{p}\n")
    return path


SMALL_TABLE = [
    ("cell phone", "mobile"), ("mobile", "cell phone"), ("red car", "auto"), ("dog", "hound"), ("cell phone", "x y"),
    ("a b c d", "e"), ("man", "caf\u00e9"), ("b", "c"), ("dog", "hound"), ("phone", "telephone"), ("c a", "b"),
    ("dog runs", "hound runs"), ("runs fast", "dog"),
]
SENTENCES = ["a man on a cell phone", "a mobile", "a dog runs", "fast hound", "a b c", "telephone"]


def brute_force_kept(entries: list[tuple[str, str]], sentences: list[str]) -> list[bool]:
    """The rule written plainly: both phrases occur as consecutive words of some sentence, or one is not ASCII."""
    def occurs(phrase: str) -> bool:
        words = phrase.split()
        return any(s.split()[k:k + len(words)] == words for s in sentences for k in range(len(s.split())))

    return [not (r + p).isascii() or (occurs(r) and occurs(p)) for r, p in entries]


def test_kept_entries_follow_the_rule_and_keep_the_tables_order(tmp_path):
    table = write_table(tmp_path / "small.gz", SMALL_TABLE)
    index = mp.build_index(table)
    keep = mp.kept_entries(index, SENTENCES)
    expected = brute_force_kept(SMALL_TABLE, SENTENCES)
    assert keep.tolist() == expected
    assert 0 < sum(expected) < len(expected)
    out = tmp_path / "cut.gz"
    assert mp.write_table(index, keep, out) == sum(expected)
    lines = gzip.open(out, "rt", encoding="utf-8").read().split("\n")
    assert list(zip(lines[1::3], lines[2::3])) == [e for e, k in zip(SMALL_TABLE, expected) if k]  # table order


def test_index_is_cached_by_table_content_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mp, "_loaded", {})
    builds = []
    real_build = mp.build_index
    monkeypatch.setattr(mp, "build_index", lambda table: builds.append(table) or real_build(table))
    table = write_table(tmp_path / "small.gz", SMALL_TABLE)
    umask = os.umask(0o022)
    os.umask(umask)

    first = mp.paraphrase_index(table)
    mp._loaded.clear()  # a new process
    second = mp.paraphrase_index(table)
    assert len(builds) == 1  # read from the cache folder, not built again
    assert mp.kept_entries(second, SENTENCES).tolist() == mp.kept_entries(first, SENTENCES).tolist()
    [saved] = (tmp_path / "cache" / "meteor-paraphrase").glob("*.npz")
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by whoever may share the cache folder

    saved.write_bytes(saved.read_bytes()[:1000])  # damaged
    mp._loaded.clear()
    third = mp.paraphrase_index(table)
    assert len(builds) == 2
    assert mp.kept_entries(third, SENTENCES).tolist() == brute_force_kept(SMALL_TABLE, SENTENCES)

    write_table(table, SMALL_TABLE[:-1] + [("fast", "dog runs")])  # another table at the same path
    fourth = mp.paraphrase_index(table)
    assert len(builds) == 3 and fourth.n_entries == len(SMALL_TABLE)
    assert len(list((tmp_path / "cache" / "meteor-paraphrase").glob("*.npz"))) == 2


def test_a_process_waits_for_another_building_the_same_index_and_reads_its_file(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mp, "_loaded", {})
    table = write_table(tmp_path / "small.gz", SMALL_TABLE)
    path = mp._index_file(mp.hashlib.sha256(table.read_bytes()).hexdigest())
    path.parent.mkdir(parents=True)
    builds = []
    real_build = mp.build_index
    monkeypatch.setattr(mp, "build_index", lambda t: builds.append(t) or real_build(t))
    found = []
    with open(path.with_name(path.name + ".lock"), "a+b") as other:  # another process, building
        fcntl.flock(other, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: found.append(mp.paraphrase_index(table)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # it waits ...
        mp._save(real_build(table), path)
        fcntl.flock(other, fcntl.LOCK_UN)
    waiting.join(30)
    assert builds == []  # ... and reads the other's file instead of building its own
    assert mp.kept_entries(found[0], SENTENCES).tolist() == brute_force_kept(SMALL_TABLE, SENTENCES)


def test_an_index_that_cannot_be_saved_is_not_built_but_a_saved_one_is_read(tmp_path, monkeypatch):
    """Without a cache folder to keep it in, each process would build the index (~10 s) to save METEOR ~5 s:
    METEOR reads its whole table instead. An index already saved there is still read."""
    monkeypatch.setattr(mp, "_loaded", {})
    builds = []
    real_build = mp.build_index
    monkeypatch.setattr(mp, "build_index", lambda t: builds.append(t) or real_build(t))
    table = write_table(tmp_path / "small.gz", SMALL_TABLE)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("EVALKIT_CACHE", str(blocker))
    assert mp.paraphrase_index(table) is None and builds == []

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    assert mp.paraphrase_index(table) is not None and len(builds) == 1  # saved here
    mp._loaded.clear()
    saved = tmp_path / "cache" / "meteor-paraphrase"
    monkeypatch.setattr(mp.os, "access", lambda path, mode: Path(path) != saved)  # now read-only
    index = mp.paraphrase_index(table)
    assert index is not None and len(builds) == 1
    assert mp.kept_entries(index, SENTENCES).tolist() == brute_force_kept(SMALL_TABLE, SENTENCES)


@pytest.mark.parametrize("content", [b"0.1\ncell phone\nmobile\r\n", b"0.1\ncell phone\n", b"not gzip"])
def test_a_table_this_index_does_not_describe_is_read_whole(tmp_path, monkeypatch, content):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mp, "_loaded", {})
    table = tmp_path / "odd.gz"
    table.write_bytes(gzip.compress(content) if content != b"not gzip" else content)
    assert mp.paraphrase_index(table) is None
    assert mp.cut_paraphrase_table("java", ["SCORE ||| a ||| a"], tmp_path, 10, None) is None


def fake_java(tmp_path: Path, java: str, case: str) -> str:
    folder = tmp_path / "fakebin"
    folder.mkdir()
    script = folder / "java"
    script.write_text(f'#!/bin/sh\nREAL="{java}"\ncase "$*" in {case};; esac\nexec "$REAL" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(folder)


def official_meteor(refs: dict, preds: dict) -> float:
    from official_coco_eval import official_coco_eval

    annotations = {"images": [{"id": i} for i in refs], "annotations": [
        {"image_id": i, "caption": c, "id": n} for n, (i, c) in enumerate((i, c) for i in refs for c in refs[i])]}
    return official_coco_eval(annotations, [{"image_id": i, "caption": p} for i, p in preds.items()]).eval["METEOR"]


@needs_java
def test_a_normaliser_that_fails_or_garbles_leaves_meteor_its_whole_table(java, tmp_path, monkeypatch):
    refs = {k: r for k, (_, r) in enumerate(HOSTILE)}
    preds = {k: h for k, (h, _) in enumerate(HOSTILE)}
    garbling = fake_java(tmp_path, java, '*Normalizer*) "$REAL" "$@" | sed "s/\u00e9/e/g"; exit 0')
    monkeypatch.setenv("PATH", garbling + os.pathsep + os.environ["PATH"])
    scores = cm.score_captions(refs, preds, spice="off")
    assert scores.meteor_paraphrase_entries is None  # the whole table, not a cut made from garbled sentences
    assert scores.corpus["METEOR"] == 100 * official_meteor(refs, preds)

    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    assert cm.score_captions(refs, preds, spice="off").meteor_paraphrase_entries is not None  # control


@needs_java
def test_another_meteor_jar_reads_its_whole_table(java, tmp_path, monkeypatch, hostile_lines):
    """The cut is made only for the METEOR jar whose matcher it was checked against (pycocoevalcap 1.2's)."""
    index = mp.paraphrase_index()
    assert mp.cut_paraphrase_table(java, hostile_lines, tmp_path, 120, index) is not None  # control
    other = tmp_path / "meteor-1.5.jar"
    other.write_bytes(mp.METEOR_JAR.read_bytes() + b"\0")  # another build of the jar
    monkeypatch.setattr(mp, "METEOR_JAR", other)
    assert mp.cut_paraphrase_table(java, hostile_lines, tmp_path, 120, index) is None


@needs_java
def test_a_hung_normaliser_is_meteors_timeout(java, tmp_path, monkeypatch):
    hanging = fake_java(tmp_path, java, "*Normalizer*) exec sleep 60")
    monkeypatch.setenv("PATH", hanging + os.pathsep + os.environ["PATH"])
    with pytest.raises(EvalkitError, match=r"^METEOR \(Java\) did not finish within 3 s and was killed"):
        cm.score_captions({1: ["a cell-phone"]}, {1: "a mobile"}, spice="off", timeout_s={"METEOR": 3})
