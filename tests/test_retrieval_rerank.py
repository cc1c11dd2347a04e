"""ITC similarity and ITM re-ranking (LAVIS ``compute_sim_matrix`` rules)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from evalkit.core.errors import EvalkitError
from evalkit.metrics.retrieval_recall import per_query_ranks, retrieval_recall
from evalkit.inference.itm_rerank import LAVIS_FILL_VALUE, itc_similarity, rerank_with_itm

torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers
def normalised(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1).to(dtype)


class TableItm:
    """A stand-in ITM head: the positive logit of pair (i, j) is ``table[i, j]``.

    Records every pair it is asked about, so tests can count and inspect the calls.
    """

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.pairs: list[tuple[int, int]] = []
        self.batch_sizes: list[int] = []

    def __call__(self, img_idx: torch.Tensor, txt_idx: torch.Tensor) -> torch.Tensor:
        assert img_idx.dtype == torch.int64 and txt_idx.dtype == torch.int64
        assert img_idx.shape == txt_idx.shape and img_idx.dim() == 1
        self.batch_sizes.append(int(img_idx.numel()))
        self.pairs.extend(zip(img_idx.tolist(), txt_idx.tolist()))
        return self.table[img_idx, txt_idx]


def lavis_reference(sim: torch.Tensor, itm_table: torch.Tensor, k: int):
    """LAVIS's two loops, restated: per image / per text top-k, score = ITM + ITC, rest -100."""
    n_img, n_txt = sim.shape
    i2t = torch.full((n_img, n_txt), -100.0, dtype=sim.dtype)
    for i in range(n_img):
        top_sim, top_idx = sim[i].topk(k=k, dim=0)
        i2t[i, top_idx] = itm_table[i, top_idx] + top_sim
    t2i = torch.full((n_txt, n_img), -100.0, dtype=sim.dtype)
    sim_t = sim.t()
    for j in range(n_txt):
        top_sim, top_idx = sim_t[j].topk(k=k, dim=0)
        t2i[j, top_idx] = itm_table[top_idx, j] + top_sim
    return i2t, t2i


def random_problem(n_img, n_txt, seed, q=4, d=8):
    sim = itc_similarity(normalised(n_img, q, d, seed=seed), normalised(n_txt, d, seed=seed + 1))
    g = torch.Generator().manual_seed(seed + 2)
    itm_table = torch.randn(n_img, n_txt, generator=g) * 3
    return sim, itm_table


def annotations(n_img, n_txt):
    txt2img = np.arange(n_txt) % n_img
    img2txt = [np.flatnonzero(txt2img == i).tolist() for i in range(n_img)]
    return img2txt, txt2img


# --------------------------------------------------------------------------- itc_similarity
def test_itc_hand_worked():
    # image 0 has queries (1,0) and (0,1); image 1 has (-1,0) twice.
    img = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [-1.0, 0.0]]])
    txt = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.6, 0.8]])
    # image 0: text0 max(1, 0) = 1; text1 max(0, -1) = 0; text2 max(0.6, 0.8) = 0.8
    # image 1: text0 -1; text1 0 (= -0 both queries); text2 -0.6
    expected = torch.tensor([[1.0, 0.0, 0.8], [-1.0, 0.0, -0.6]])
    torch.testing.assert_close(itc_similarity(img, txt), expected)


@pytest.mark.parametrize("chunks", [(1, 1), (3, 7), (5, 1000), (1000, 2), (128, 8192)])
def test_itc_chunked_equals_unchunked_equals_einsum_exactly_on_integers(chunks):
    # Small integers: every product and sum is exact in fp32, so any evaluation order
    # (blocked GEMM, einsum) must give bit-identical results.
    g = torch.Generator().manual_seed(3)
    img = torch.randint(-4, 5, (11, 5, 6), generator=g).float()
    txt = torch.randint(-4, 5, (23, 6), generator=g).float()
    naive = torch.einsum("iqd,jd->iqj", img, txt).max(dim=1).values
    unchunked = itc_similarity(img, txt, chunk_size=10**6, text_chunk_size=10**6)
    chunked = itc_similarity(img, txt, chunk_size=chunks[0], text_chunk_size=chunks[1])
    assert torch.equal(unchunked, naive)
    assert torch.equal(chunked, naive)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_itc_chunked_matches_naive_on_normalised_features(dtype):
    img = normalised(9, 32, 16, seed=1, dtype=dtype)
    txt = normalised(37, 16, seed=2, dtype=dtype)
    naive = torch.einsum("iqd,jd->iqj", img, txt).amax(dim=1)
    out = itc_similarity(img, txt, chunk_size=4, text_chunk_size=10)
    assert out.dtype == dtype and out.shape == (9, 37)
    torch.testing.assert_close(out, naive)
    torch.testing.assert_close(out, itc_similarity(img, txt, chunk_size=100, text_chunk_size=100))


def test_itc_empty_and_validation():
    assert itc_similarity(torch.zeros(0, 4, 3), torch.zeros(5, 3)).shape == (0, 5)
    assert itc_similarity(torch.zeros(2, 4, 3), torch.zeros(0, 3)).shape == (2, 0)
    with pytest.raises(EvalkitError, match="feature sizes differ"):
        itc_similarity(torch.zeros(2, 4, 3), torch.zeros(5, 2))
    with pytest.raises(EvalkitError, match="n_query"):
        itc_similarity(torch.zeros(2, 3), torch.zeros(5, 3))
    with pytest.raises(EvalkitError, match="0 query"):
        itc_similarity(torch.zeros(2, 0, 3), torch.zeros(5, 3))
    with pytest.raises(EvalkitError, match="chunk_size"):
        itc_similarity(torch.zeros(2, 4, 3), torch.zeros(5, 3), chunk_size=0)
    with pytest.raises(EvalkitError, match="floating"):
        itc_similarity(torch.zeros(2, 4, 3, dtype=torch.long), torch.zeros(5, 3, dtype=torch.long))


# --------------------------------------------------------------------------- rerank: by hand
def test_rerank_hand_worked_k1():
    # 2 images x 3 texts.
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.7]])
    itm = torch.tensor([[-1.0, 4.0, 9.0], [2.0, 0.5, 3.0]])
    # k = 1.
    # i2t: image 0 shortlists text 0 (0.9): -1 + 0.9 = -0.1; image 1 shortlists text 1 (0.8):
    #      0.5 + 0.8 = 1.3. Everything else -100.
    # t2i: text 0's best image is 0 (0.9): -0.1; text 1's is image 1 (0.8): 1.3;
    #      text 2's is image 1 (0.7): 3 + 0.7 = 3.7.
    fn = TableItm(itm)
    i2t, t2i = rerank_with_itm(sim, fn, k=1)
    f = LAVIS_FILL_VALUE
    torch.testing.assert_close(i2t, torch.tensor([[-0.1, f, f], [f, 1.3, f]]))
    torch.testing.assert_close(t2i, torch.tensor([[-0.1, f], [f, 1.3], [f, 3.7]]))
    # Pairs needed: (0,0), (1,1) from images; (0,0), (1,1), (1,2) from texts -> 3 unique.
    assert sorted(fn.pairs) == [(0, 0), (1, 1), (1, 2)]
    # Without de-duplication LAVIS's 2 + 3 = 5 calls are made.
    fn2 = TableItm(itm)
    i2t2, t2i2 = rerank_with_itm(sim, fn2, k=1, dedupe=False)
    assert sorted(fn2.pairs) == [(0, 0), (0, 0), (1, 1), (1, 1), (1, 2)]
    assert torch.equal(i2t, i2t2) and torch.equal(t2i, t2i2)


def test_k_larger_than_candidate_count_is_clamped():
    # 3 images x 4 texts, k = 128: every image re-scores all 4 texts (k clamped to 4) and
    # every text all 3 images (k clamped to 3) -> both matrices are ITM + ITC everywhere,
    # with no -100 left, and 12 unique pairs are scored.
    sim, itm = random_problem(3, 4, seed=5)
    fn = TableItm(itm)
    i2t, t2i = rerank_with_itm(sim, fn, k=128)
    full = itm + sim
    assert torch.equal(i2t, full)
    assert torch.equal(t2i, full.t())
    assert len(fn.pairs) == 12 and len(set(fn.pairs)) == 12


# --------------------------------------------------------------------------- rerank: properties
@pytest.mark.parametrize("seed", range(3))
def test_full_rerank_equals_brute_force_itm_plus_itc(seed):
    n_img, n_txt = 7, 20
    sim, itm = random_problem(n_img, n_txt, seed=10 * seed)
    i2t, t2i = rerank_with_itm(sim, TableItm(itm), k=max(n_img, n_txt), batch_size=13)
    brute = itm + sim  # ITM + ITC for ALL pairs
    assert torch.equal(i2t, brute)
    assert torch.equal(t2i, brute.t())
    img2txt, txt2img = annotations(n_img, n_txt)
    got = per_query_ranks(i2t.numpy(), t2i.numpy(), img2txt, txt2img)
    want = per_query_ranks(brute.numpy(), brute.t().numpy(), img2txt, txt2img)
    np.testing.assert_array_equal(got.txt_ranks, want.txt_ranks)
    np.testing.assert_array_equal(got.img_ranks, want.img_ranks)
    assert retrieval_recall(i2t.numpy(), t2i.numpy(), img2txt, txt2img) == retrieval_recall(
        brute.numpy(), brute.t().numpy(), img2txt, txt2img
    )


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("itm_scale", [3.0, 1000.0])
def test_outside_top_k_never_outranks_reranked(k, itm_scale):
    n_img, n_txt = 9, 15
    sim, itm = random_problem(n_img, n_txt, seed=k)
    itm = itm * itm_scale  # at 1000 some logits are far below -100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        i2t, t2i = rerank_with_itm(sim, TableItm(itm), k=k)
    for scores, sims, kk in ((i2t, sim, min(k, n_txt)), (t2i, sim.t(), min(k, n_img))):
        for row, srow in zip(scores, sims):
            short = set(srow.topk(kk).indices.tolist())
            inside = torch.tensor(sorted(short))
            outside = torch.tensor(sorted(set(range(row.numel())) - short))
            # The re-ranked entries are ITM + ITC of exactly the ITC top-k ...
            assert len(short) == kk
            # ... and each of them beats each un-scored entry, ties included
            # (ties would let a larger-index un-scored entry through).
            if outside.numel():
                assert row[inside].min() > row[outside].max()
            # ... and they rank first under the recall tie rule, too.
            order = np.argsort(row.numpy(), kind="stable")[::-1]
            assert set(order[:kk].tolist()) == short


def test_low_itm_lowers_the_fill_with_a_warning():
    sim = torch.tensor([[0.5, 0.4], [0.3, 0.2]])
    itm = torch.tensor([[-500.0, 1.0], [1.0, 1.0]])
    with pytest.warns(RuntimeWarning, match="fill"):
        i2t, t2i = rerank_with_itm(sim, TableItm(itm), k=1)
    # Image 0's only shortlisted text scores -499.5; LAVIS's -100 would put text 1 above it.
    assert i2t[0, 0] == pytest.approx(-499.5)
    assert i2t[0, 1] == -math.inf and t2i[1, 1] == -math.inf


@pytest.mark.parametrize("k", [1, 4, 10])
def test_matches_lavis_two_loop_reference(k):
    sim, itm = random_problem(12, 30, seed=100 + k)
    want_i2t, want_t2i = lavis_reference(sim, itm, k)
    for dedupe in (True, False):
        i2t, t2i = rerank_with_itm(sim, TableItm(itm), k=k, batch_size=7, dedupe=dedupe)
        assert torch.equal(i2t, want_i2t)
        assert torch.equal(t2i, want_t2i)


@pytest.mark.parametrize("k", [2, 5, 40])
def test_dedupe_is_identical_and_never_scores_a_pair_twice(k):
    sim, itm = random_problem(10, 25, seed=k)
    plain = TableItm(itm)
    dedup = TableItm(itm)
    a = rerank_with_itm(sim, plain, k=k, batch_size=16, dedupe=False)
    b = rerank_with_itm(sim, dedup, k=k, batch_size=16, dedupe=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(dedup.pairs) == len(set(dedup.pairs))
    assert set(dedup.pairs) == set(plain.pairs)
    k_i, k_t = min(k, 25), min(k, 10)
    assert len(plain.pairs) == 10 * k_i + 25 * k_t  # LAVIS's call count
    assert len(dedup.pairs) <= len(plain.pairs)


def test_batching_and_progress():
    sim, itm = random_problem(6, 11, seed=4)
    ref = rerank_with_itm(sim, TableItm(itm), k=4, batch_size=10**6)
    seen = []
    fn = TableItm(itm)
    out = rerank_with_itm(sim, fn, k=4, batch_size=5, progress=lambda d, t: seen.append((d, t)))
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert max(fn.batch_sizes) <= 5
    total = len(fn.pairs)
    assert [t for _, t in seen] == [total] * len(seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total and len(seen) == len(fn.batch_sizes)


def test_itm_returning_column_vector_is_accepted():
    sim, itm = random_problem(4, 6, seed=8)
    ref = rerank_with_itm(sim, TableItm(itm), k=2)
    col = rerank_with_itm(sim, lambda i, j: itm[i, j][:, None], k=2)
    assert torch.equal(ref[0], col[0]) and torch.equal(ref[1], col[1])


@pytest.mark.parametrize("rerank, k", [(False, 128), (True, 0)])
def test_itc_only_path(rerank, k):
    sim, _ = random_problem(4, 6, seed=9)

    def never(i, j):
        raise AssertionError("ITM must not be called")

    i2t, t2i = rerank_with_itm(sim, never, k=k, rerank=rerank)
    assert torch.equal(i2t, sim) and torch.equal(t2i, sim.t())
    assert i2t.data_ptr() != sim.data_ptr()  # a copy, not the caller's tensor


def test_rerank_validation():
    sim, itm = random_problem(3, 4, seed=2)
    fn = TableItm(itm)
    with pytest.raises(EvalkitError, match="k must be"):
        rerank_with_itm(sim, fn, k=-1)
    with pytest.raises(EvalkitError, match="batch_size"):
        rerank_with_itm(sim, fn, k=2, batch_size=0)
    with pytest.raises(EvalkitError, match="n_img, n_txt"):
        rerank_with_itm(sim[0], fn, k=2)
    bad = sim.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(EvalkitError, match="NaN"):
        rerank_with_itm(bad, fn, k=2)
    with pytest.raises(EvalkitError, match="expected one ITM positive logit per pair"):
        rerank_with_itm(sim, lambda i, j: torch.zeros(i.numel(), 2), k=2)
    with pytest.raises(EvalkitError, match="non-finite logit"):
        rerank_with_itm(sim, lambda i, j: torch.full((i.numel(),), float("nan")), k=2)
