"""METEOR's English paraphrase table cut down to the entries one evaluation can match.

METEOR 1.5 (``meteor-1.5.jar`` in pycocoevalcap) builds its whole paraphrase table, 5.27 million entries
of ``data/paraphrase-en.gz``, in memory before it scores a sentence: ~5 s and ~6 s of CPU in every
evaluation, about half of evalkit's scoring time for the 4,982 Karpathy test images. METEOR's paraphrase
stage only uses an entry (phrase R, paraphrase P) when R occurs as consecutive words in one of the two
sentences it aligns and P in the other (``ParaphraseMatcher.match``), the words being the ones METEOR
scores: each ``|||``-separated part of the ``SCORE`` line, trimmed, normalised by
``Normalizer.normalizeLine(part, en, keepPunctuation=true)`` and lower-cased (``MeteorScorer`` under
``-norm``). The trie it builds only ever yields entries whose phrase it walked, in the table's order.

So :func:`cut_paraphrase_table` writes the entries whose R and P both occur among an evaluation's sentences,
in the table's order, and METEOR reads that file through its own ``-a`` option: each match it finds is the
same, found in the same order, and the statistics are the same to the last digit (the tests compare every
segment's statistics with the whole table's). Entries with a non-ASCII or an empty phrase are always kept,
so that Java's lower-casing (locale-dependent) and Python's need not agree outside ASCII. The probability
line of an entry is written as ``0``: METEOR skips that line without reading it.

METEOR ships a tool for this (``FilterParaphrase``), not used here: it reads the whole table on each call
and normalises the references without their punctuation while scoring keeps it (``'s`` becomes ``' s``),
so it can drop entries that match.

The table is indexed once per machine into evalkit's cache folder (``meteor-paraphrase/``, named by the
table's SHA-256; about 10 s, 0.9 GB of memory while building, and 100 MB): each distinct phrase's words
and a 64-bit code (a polynomial over word numbers; phrases sharing a code only keep an extra entry), and
each entry's two phrase numbers. An
evaluation computes the codes of its sentences' n-grams up to the table's longest phrase and keeps the
entries whose two codes are among them. A sentence of lower-case ASCII letters and digits separated by
single spaces is its own normalisation (no rule of ``normalizeLine`` applies to it); the others go through
METEOR's own ``Normalizer`` in one JVM. When anything goes wrong (a table this index does not describe,
an index that is not cached and cannot be saved, a JVM that fails, a METEOR jar other than the one this rule was
checked against), the caller gets ``None`` and METEOR reads its
whole table, as the official code does.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import itertools
import operator
import os
import re
import subprocess
import threading
import zipfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pycocoevalcap.meteor.meteor as _meteor_module

from evalkit.core.cache_folder import evalkit_cache_folder

METEOR_DIR = Path(_meteor_module.__file__).resolve().parent
METEOR_JAR = METEOR_DIR / _meteor_module.METEOR_JAR
PARAPHRASE_TABLE = METEOR_DIR / "data" / "paraphrase-en.gz"

# The METEOR whose paraphrase matching the rule above was read from and checked against (pycocoevalcap 1.2's
# meteor-1.5.jar, SHA-256). Another jar reads its whole table: its matcher may use entries differently.
CHECKED_METEOR_JARS = {"1e57b4c72c0830ebe68558f1c799a624e96cbc1b6045c9f6330e26dcff6eafc2": "pycocoevalcap 1.2"}

INDEX_FORMAT = 1
_CODE_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so each word position gets a distinct multiplier
# Java's String.trim() drops every character <= U+0020 at both ends; StringTokenizer splits on these five.
_JAVA_TRIM = "".join(map(chr, range(33)))
_TOKEN_SEPARATORS = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\f": " "})
# Parts no rule of Normalizer.normalizeLine changes: lower-case ASCII letters and digits, single spaces.
_OWN_NORMAL_FORM = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?")
# Checks that the normaliser read and wrote UTF-8 (it uses the JVM's default charset).
_ENCODING_SENTINEL = "évalkit"


@dataclass(frozen=True)
class CutTable:
    """A paraphrase table written for one evaluation: its path and how many entries it kept of how many."""

    path: Path
    kept: int
    total: int


@dataclass(frozen=True)
class ParaphraseIndex:
    """The paraphrase table as arrays (see the module docstring)."""

    words: list[str]  # table vocabulary, by word number
    phrase_starts: np.ndarray  # n_phrases + 1: phrase i's word numbers are phrase_words[starts[i]:starts[i+1]]
    phrase_words: np.ndarray  # uint16 while the vocabulary fits, else int32
    sorted_codes: np.ndarray  # uint64, every phrase's code, ascending
    sorted_phrases: np.ndarray  # int32, the phrase of each sorted code
    entry_phrase: np.ndarray  # int32, n_entries x 2: (R, P) phrase numbers in table order
    always_kept: np.ndarray  # int32, entries kept whatever the sentences (a non-ASCII or empty phrase)
    longest_phrase: int

    @property
    def n_entries(self) -> int:
        return len(self.entry_phrase)

    @functools.cached_property
    def word_numbers(self) -> dict[str, int]:
        """word -> its number (built once per index, not per evaluation)."""
        return {w: i for i, w in enumerate(self.words)}

    def phrase_text(self, phrase: int) -> str:
        first, end = self.phrase_starts[phrase], self.phrase_starts[phrase + 1]
        return " ".join(self.words[w] for w in self.phrase_words[first:end])


class _Unindexable(Exception):
    """The table does not have the layout this index assumes."""


def meteor_score_line(hypothesis: str, references: Sequence[str]) -> str:
    """The ``SCORE`` line pycocoevalcap's ``Meteor._stat`` writes for one image (the tests check it against it)."""
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))


def meteor_sentences(score_lines: Sequence[str]) -> list[str]:
    """The sentences METEOR aligns for these ``SCORE`` lines, before its normalisation.

    Java's ``split("\\\\|\\\\|\\\\|")`` drops trailing empty parts and Python's ``split`` keeps them: a superset."""
    return [part.strip(_JAVA_TRIM) for line in score_lines for part in line.split("|||")[1:]]


# --------------------------------------------------------------------------------------------
# The index: built once per table, kept in evalkit's cache folder
# --------------------------------------------------------------------------------------------


def _polynomial_codes(word_numbers: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Code of each (non-empty) run ``word_numbers[start:start+length]``: sum of (word + 1) * BASE**position,
    modulo 2**64 (numpy's uint64 arithmetic wraps)."""
    position = np.arange(len(word_numbers), dtype=np.int64) - np.repeat(starts, lengths)
    powers = _power_table(int(lengths.max(initial=1)))
    with np.errstate(over="ignore"):
        terms = (word_numbers.astype(np.uint64) + np.uint64(1)) * powers[position]
        return np.add.reduceat(terms, starts) if len(starts) else np.zeros(0, np.uint64)


def _power_table(n: int) -> np.ndarray:
    powers = np.ones(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, n):
            powers[k] = powers[k - 1] * _CODE_BASE
    return powers


def build_index(table: Path) -> ParaphraseIndex:
    """Parse a METEOR paraphrase table (gzip; entries of three lines: probability, phrase, paraphrase)."""
    with gzip.open(table, "rb") as f:
        data = f.read()
    # Java's readLine also ends a line at "\r"; StringTokenizer does not split at "\v": refuse what differs.
    if any(ch in data for ch in (b"\r", b"\t", b"\x0b", b"\x0c")):
        raise _Unindexable("the table contains \\r, \\t, \\v or \\f")
    n_lines = data.count(b"\n")
    if not data.endswith(b"\n") or n_lines % 3:
        raise _Unindexable("the table is not made of three-line entries")
    n_entries = n_lines // 3
    # Phrase -> its number, in order of first appearance; every line keeps its "\n" (bytes.split ignores it).
    # C-level iteration over the lines (a Python loop over 5 million entries takes several times longer).
    numbering = defaultdict(itertools.count().__next__)
    lines = io.BytesIO(data)
    del data
    phrase_lines = itertools.chain.from_iterable(map(operator.itemgetter(1, 2), zip(lines, lines, lines)))
    entry_phrase = np.fromiter(map(numbering.__getitem__, phrase_lines), np.int32, 2 * n_entries).reshape(-1, 2)
    del lines
    phrases = list(numbering)
    del numbering
    lengths = np.fromiter(map(len, map(bytes.split, phrases)), np.int64, len(phrases))
    word_numbering = defaultdict(itertools.count().__next__)
    flat = itertools.chain.from_iterable(map(bytes.split, phrases))
    phrase_words = np.fromiter(map(word_numbering.__getitem__, flat), np.int32, int(lengths.sum()))
    words = [w.decode("utf-8", "replace") for w in word_numbering]
    if len(words) <= 1 << 16:
        phrase_words = phrase_words.astype(np.uint16)
    starts = np.zeros(len(phrases) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    unusual = ~np.fromiter(map(bytes.isascii, phrases), bool, len(phrases)) | (lengths == 0)
    codes = np.zeros(len(phrases), dtype=np.uint64)
    filled = lengths > 0
    codes[filled] = _polynomial_codes(phrase_words, starts[:-1][filled], lengths[filled])
    order = np.argsort(codes, kind="stable").astype(np.int32)
    always_kept = np.flatnonzero(unusual[entry_phrase[:, 0]] | unusual[entry_phrase[:, 1]]).astype(np.int32)
    if starts[-1] < 1 << 31:
        starts = starts.astype(np.int32)
    return ParaphraseIndex(words=words, phrase_starts=starts, phrase_words=phrase_words, sorted_codes=codes[order],
                           sorted_phrases=order, entry_phrase=entry_phrase, always_kept=always_kept,
                           longest_phrase=int(lengths.max(initial=0)))


def _file_digest(path: Path) -> str | None:
    """SHA-256 of a file (0.01 s for METEOR's jar, 0.1 s for its table), or None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _index_file(table_digest: str) -> Path:
    return evalkit_cache_folder() / "meteor-paraphrase" / f"v{INDEX_FORMAT}-{table_digest[:32]}.npz"


def _save(index: ParaphraseIndex, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # the umask's permissions
    try:
        with open(tmp, "wb") as f:
            np.savez(f, words=np.array("\n".join(index.words)), phrase_starts=index.phrase_starts,
                     phrase_words=index.phrase_words, sorted_codes=index.sorted_codes,
                     sorted_phrases=index.sorted_phrases, entry_phrase=index.entry_phrase,
                     always_kept=index.always_kept, longest_phrase=np.int64(index.longest_phrase))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> ParaphraseIndex:
    with np.load(path, allow_pickle=False) as z:
        index = ParaphraseIndex(
            words=str(z["words"]).split("\n"), phrase_starts=z["phrase_starts"], phrase_words=z["phrase_words"],
            sorted_codes=z["sorted_codes"], sorted_phrases=z["sorted_phrases"], entry_phrase=z["entry_phrase"],
            always_kept=z["always_kept"], longest_phrase=int(z["longest_phrase"]))
    n_phrases = len(index.phrase_starts) - 1
    consistent = (index.phrase_starts[-1] == len(index.phrase_words) and len(index.sorted_codes) == n_phrases
                  and len(index.sorted_phrases) == n_phrases and index.entry_phrase.ndim == 2
                  and (len(index.phrase_words) == 0 or int(index.phrase_words.max()) < len(index.words)))
    if not consistent:
        raise ValueError(f"{path}: inconsistent arrays")
    return index


def index_state(table: Path = PARAPHRASE_TABLE) -> str:
    """One line for ``evalkit doctor``: where the index of ``table`` is, or that the first scoring builds it."""
    digest = _file_digest(table)
    if digest is None:
        return f"{table} cannot be read; METEOR will read its table whole"
    path = _index_file(digest)
    if path.is_file():
        return f"built: {path} ({path.stat().st_size / 1e6:.0f} MB)"
    if not _writable_folder(path.parent):
        return f"not built, and {path.parent} cannot be written: METEOR reads its whole table (~5 s per scoring)"
    return f"not built yet: the first caption scoring builds it (about 10 s) into {path.parent}"


_loaded: dict[str, ParaphraseIndex] = {}
_lock = threading.Lock()


def paraphrase_index(table: Path = PARAPHRASE_TABLE) -> ParaphraseIndex | None:
    """The index of ``table``: from memory, else from evalkit's cache folder, else built now (about 10 s) and
    saved there. ``None`` (METEOR then reads its whole table, ~5 s) when the table cannot be indexed, or when the
    index is neither in the cache folder nor can be saved there: building it in every process would cost more
    than it saves."""
    digest = _file_digest(table)
    if digest is None:
        return None
    with _lock:
        if digest in _loaded:
            return _loaded[digest]
        path = _index_file(digest)
        with _building(path):  # another process building the same index: wait for it and read its file
            index = None
            if path.is_file():
                try:
                    index = _load(path)
                except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
                    index = None  # a damaged index is built again
            if index is None:
                if not _writable_folder(path.parent):
                    return None
                try:
                    index = build_index(table)
                    _save(index, path)
                except (OSError, EOFError, gzip.BadGzipFile, _Unindexable):
                    return None
        _loaded[digest] = index
        return index


def _writable_folder(folder: Path) -> bool:
    """Whether ``folder`` could be written, created if need be (nothing is created here)."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


@contextmanager
def _building(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s lock file (best effort: none where it cannot be made)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+b")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


# --------------------------------------------------------------------------------------------
# One evaluation's table
# --------------------------------------------------------------------------------------------


def _normalised(java: str, sentences: list[str], timeout: float) -> list[str] | None:
    """METEOR's own ``Normalizer.normalizeLine(s, en, true)`` of each sentence (one JVM for all), or None."""
    done: dict[str, str] = {}
    pending: set[str] = set()
    for s in sentences:
        if _OWN_NORMAL_FORM.fullmatch(s):
            done[s] = s
        else:
            pending.add(s)
    todo = sorted(pending)
    if todo:
        if any("\n" in s or "\r" in s for s in todo):
            return None
        cmd = [java, "-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8", "-Dstdout.encoding=UTF-8",
               "-cp", str(METEOR_JAR), "edu.cmu.meteor.util.Normalizer", "en", "true"]
        payload = "".join(s + "\n" for s in [*todo, _ENCODING_SENTINEL]).encode("utf-8")
        try:
            proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout, cwd=METEOR_DIR)
            out = proc.stdout.decode("utf-8").split("\n")
        except subprocess.TimeoutExpired:
            raise  # a hung JVM is METEOR's timeout, not a reason to read the whole table
        except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
            return None
        if proc.returncode != 0 or out[-1] != "" or len(out) != len(todo) + 2 or out[-2] != _ENCODING_SENTINEL:
            return None
        done.update(zip(todo, out))
    return [done[s] for s in sentences]


def _token_variants(normalised: str) -> set[str]:
    """The sentence as METEOR may lower-case it: Java's ``toLowerCase`` follows the JVM's locale, which
    differs from Python's ``lower`` outside ASCII (a Turkish locale maps "İ" to "i", Python to "i̇")."""
    lowered = normalised.lower()
    return {normalised, lowered, lowered.replace("i\u0307", "i")}


def _sentence_codes(index: ParaphraseIndex, normalised: list[str]) -> np.ndarray:
    """Codes of every run of 1..longest_phrase consecutive words of the sentences, words the table knows."""
    number = index.word_numbers
    stream: list[int] = []
    for sentence in normalised:
        for variant in _token_variants(sentence):
            stream.extend(number.get(w, -1) for w in variant.translate(_TOKEN_SEPARATORS).split(" ") if w)
            stream.append(-1)  # no run crosses a sentence
    words = np.asarray(stream, dtype=np.int64)
    known = words >= 0
    powers = _power_table(max(index.longest_phrase, 1))
    found = []
    with np.errstate(over="ignore"):
        terms = (words.astype(np.uint64) + np.uint64(1))
        codes = np.zeros(len(words), dtype=np.uint64)
        valid = np.ones(len(words), dtype=bool)
        for n in range(1, index.longest_phrase + 1):
            last = len(words) - n + 1  # runs starting at 0..last-1
            if last <= 0:
                break
            codes = codes[:last] + terms[n - 1:n - 1 + last] * powers[n - 1]
            valid = valid[:last] & known[n - 1:n - 1 + last]
            found.append(codes[valid])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)


def kept_entries(index: ParaphraseIndex, normalised: list[str]) -> np.ndarray:
    """Boolean mask over the table's entries: R and P both among the sentences' word runs, or always kept."""
    sentence_codes = _sentence_codes(index, normalised)
    left = np.searchsorted(index.sorted_codes, sentence_codes, "left")
    right = np.searchsorted(index.sorted_codes, sentence_codes, "right")
    present = np.zeros(len(index.sorted_codes), dtype=bool)
    hit = right > left
    present[left[hit]] = True
    for lo, hi in zip(left[right - left > 1], right[right - left > 1]):  # phrases sharing a code
        present[lo:hi] = True
    phrase_present = np.zeros(len(present), dtype=bool)
    phrase_present[index.sorted_phrases] = present
    keep = phrase_present[index.entry_phrase[:, 0]] & phrase_present[index.entry_phrase[:, 1]]
    keep[index.always_kept] = True
    return keep


def write_table(index: ParaphraseIndex, keep: np.ndarray, path: Path) -> int:
    """Write the kept entries, in table order, as a METEOR paraphrase file; returns how many."""
    rows = np.flatnonzero(keep)
    text: dict[int, str] = {}
    out = []
    for r, p in index.entry_phrase[rows].tolist():
        if r not in text:
            text[r] = index.phrase_text(r)
        if p not in text:
            text[p] = index.phrase_text(p)
        out.append(f"0\n{text[r]}\n{text[p]}\n")
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write("".join(out).encode("utf-8"))
    return len(rows)


def cut_paraphrase_table(java: str, score_lines: Sequence[str], folder: Path, timeout: float,
                         index: ParaphraseIndex | None) -> CutTable | None:
    """Write into ``folder`` the paraphrase table METEOR needs for these ``SCORE`` lines; None: use the whole table."""
    if index is None or _file_digest(METEOR_JAR) not in CHECKED_METEOR_JARS:
        return None
    normalised = _normalised(java, meteor_sentences(score_lines), timeout)
    if normalised is None:
        return None
    path = Path(folder) / "paraphrase-cut.gz"
    try:
        kept = write_table(index, kept_entries(index, normalised), path)
    except OSError:
        return None
    return CutTable(path=path, kept=kept, total=index.n_entries)
