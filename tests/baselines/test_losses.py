"""Unit tests for baselines.losses: hand-computed values, naive reference loops, gradients,
fp32 under autocast, and a real 2-process gloo run against the single-process loss."""

from __future__ import annotations

import math
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F

from baselines.losses import (
    LOSS_VARIANTS,
    CoarseEmotionLoss,
    HGCLIMLoss,
    InterIntraLoss,
    InterModalLoss,
    IntraModalLoss,
    LearnableTemperature,
    SupConLoss,
    VMNetLoss,
)


def _unit(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- temperature
def test_learnable_temperature_init_and_in_place_clamp():
    temp = LearnableTemperature(init=0.07, max_inverse=100.0)
    assert temp().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert temp.tau == pytest.approx(0.07, rel=1e-6)
    with torch.no_grad():
        temp.log_inverse_tau.fill_(math.log(1000.0))
    assert temp.clamp_().log_inverse_tau.item() == pytest.approx(math.log(100.0))
    scale = temp()
    assert scale.item() == pytest.approx(100.0, rel=1e-6)
    scale.backward()
    assert temp.log_inverse_tau.grad.item() == pytest.approx(100.0, rel=1e-6)  # still trainable at the cap
    with torch.no_grad():
        temp.log_inverse_tau.fill_(-1.0)
    assert temp.clamp_().log_inverse_tau.item() == 0.0  # and never below 1/tau = 1


def test_a_scale_driven_past_the_cap_comes_back_down_when_the_loss_asks():
    """open_clip's rule: clamp the parameter after each step. Aligned pairs push 1/tau up past 100
    (clamped back to 100); wrong pairs then pull it down again, which an output clamp (zero gradient
    past the cap) could never do."""
    temp = LearnableTemperature(0.07)
    opt = torch.optim.Adam(temp.parameters(), lr=0.5)
    loss_fn, v = InterModalLoss(), torch.eye(8)
    pushed_past = False
    for _ in range(30):  # aligned: the loss always asks for a larger scale
        opt.zero_grad()
        loss_fn(v, v, temp()).backward()
        opt.step()
        pushed_past |= temp.log_inverse_tau.item() > math.log(100.0)
        temp.clamp_()
    assert pushed_past and temp().item() == pytest.approx(100.0, rel=1e-6)
    wrong = v[torch.roll(torch.arange(8), 1)]
    scales = []
    for _ in range(5):  # wrong pairs: the loss asks for a smaller scale
        opt.zero_grad()
        loss_fn(v, wrong, temp()).backward()
        opt.step()
        temp.clamp_()
        scales.append(temp().item())
    assert scales[-1] < 50.0 and scales == sorted(scales, reverse=True)


# ---------------------------------------------------------------- inter-modal
def test_inter_aligned_embeddings_give_near_zero_loss():
    v = torch.eye(4)
    assert InterModalLoss()(v, v.clone(), 100.0).item() < 1e-6
    # a shuffled pairing is heavily penalised
    assert InterModalLoss()(v, v[[1, 0, 3, 2]], 100.0).item() > 50.0


def test_inter_two_by_two_by_hand():
    s, alpha, beta = 2.0, 0.3, 0.7
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised inside to (1, 1)/sqrt(2)
    c = 1 / math.sqrt(2)
    # S = s * [[1, c], [0, c]]
    rows = [
        -math.log(math.exp(s) / (math.exp(s) + math.exp(s * c))),
        -math.log(math.exp(s * c) / (1 + math.exp(s * c))),
    ]
    cols = [-math.log(math.exp(s) / (math.exp(s) + 1)), math.log(2.0)]
    expected = alpha * sum(rows) / 2 + beta * sum(cols) / 2
    got = InterModalLoss(alpha=alpha, beta=beta)(v, m, torch.tensor(s))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_inter_gradcheck_float64():
    v = _unit(5, 3, seed=1, dtype=torch.float64).requires_grad_()
    m = _unit(5, 3, seed=2, dtype=torch.float64).requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(InterModalLoss(alpha=0.4, beta=0.6), (v, m, scale))


# ---------------------------------------------------------------- intra-modal
@pytest.mark.parametrize("distance", ["cosine", "kl"])
def test_intra_zero_when_geometry_preserved_positive_otherwise(distance):
    raw = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(4)))
    loss = IntraModalLoss(distance)
    assert loss(raw, 2.5 * raw @ rotation).item() < 1e-6  # rotation + scale keep every cosine
    assert loss(raw, torch.randn(6, 4, generator=torch.Generator().manual_seed(5))).item() > 1e-2


def test_intra_cosine_matches_formula_and_weights():
    raw, emb = _unit(5, 7, seed=6), _unit(5, 3, seed=7)
    a, b = raw @ raw.T, emb @ emb.T
    r = torch.stack([F.cosine_similarity(a[i], b[i], dim=0) for i in range(5)])
    got = IntraModalLoss("cosine", w_r=0.2, w_c=1.0)(raw, emb)
    assert got.item() == pytest.approx(1.2 * (1 - r).mean().item(), rel=1e-5)


def test_intra_kl_matches_formula():
    raw, emb, t = _unit(5, 7, seed=8), _unit(5, 3, seed=9), 0.1
    p, q = torch.softmax(raw @ raw.T / t, 1), torch.softmax(emb @ emb.T / t, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean()
    assert IntraModalLoss("kl", kl_temperature=t)(raw, emb).item() == pytest.approx(expected.item(), rel=1e-5)


def test_intra_sequence_raw_is_temporally_averaged():
    seq = torch.randn(6, 4, 7, generator=torch.Generator().manual_seed(10))
    emb = _unit(6, 3, seed=11)
    loss = IntraModalLoss()
    assert torch.allclose(loss(seq, emb), loss(seq.mean(1), emb))


def test_intra_raw_is_constant_only_emb_gets_gradient():
    raw = torch.randn(6, 8, requires_grad=True)
    emb = torch.randn(6, 4, requires_grad=True)
    IntraModalLoss()(raw, emb).backward()
    assert raw.grad is None
    assert emb.grad is not None and emb.grad.abs().sum() > 0


@pytest.mark.parametrize("distance", ["cosine", "kl"])
def test_intra_gradcheck_float64(distance):
    raw = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    emb = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13)).requires_grad_()
    assert torch.autograd.gradcheck(lambda e: IntraModalLoss(distance)(raw, e), (emb,))


# ---------------------------------------------------------------- II loss
def _ii_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(6, 4, generator=g),
        torch.randn(6, 4, generator=g),
        torch.randn(6, 3, 9, generator=g),
        torch.randn(6, 5, generator=g),
    )


def test_ii_with_zero_intra_weight_is_exactly_clvm():
    v, m, raw_v, raw_m = _ii_batch()
    out = InterIntraLoss(w_intra=0.0)(v, m, raw_v, raw_m, 14.0)
    assert torch.equal(out["loss"], InterModalLoss()(v, m, 14.0))
    assert set(out) == {"loss", "inter", "intra_v", "intra_m"}
    assert out["intra_v"].item() > 0  # still reported for logging


def test_ii_total_is_weighted_sum():
    v, m, raw_v, raw_m = _ii_batch(1)
    out = InterIntraLoss(w_inter=0.5, w_intra=6.0, gamma_v=2.0, gamma_m=0.5)(v, m, raw_v, raw_m, 10.0)
    expected = 0.5 * out["inter"] + 6.0 * (2.0 * out["intra_v"] + 0.5 * out["intra_m"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["intra_m"].item() == pytest.approx(IntraModalLoss()(raw_m, m).item(), rel=1e-6)


# ---------------------------------------------------------------- SupCon / coarse
def _naive_supcon(q, qlab, k, klab, t, same_set):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    losses = []
    for i in range(len(q)):
        if qlab[i] < 0:
            continue
        cands = [j for j in range(len(k)) if not (same_set and j == i)]
        positives = [j for j in cands if klab[j] == qlab[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(q[i] @ k[a]) / t) for a in cands)
        losses.append(-sum(float(q[i] @ k[p]) / t - math.log(denom) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_matches_naive_loop_same_and_cross_set():
    g = torch.Generator().manual_seed(20)
    q, k = torch.randn(12, 5, generator=g), torch.randn(9, 5, generator=g)
    qlab = torch.tensor([0, 1, 2, 0, 1, -1, 2, 0, 3, 1, -1, 4])  # 3 and 4: no same-set positive
    klab = torch.tensor([0, 0, 1, 2, -1, 1, 2, 3, -1])
    loss = SupConLoss(temperature=0.1)
    assert loss(q, qlab).item() == pytest.approx(_naive_supcon(q, qlab, q, qlab, 0.1, True), rel=1e-5)
    assert loss(q, qlab, k, klab).item() == pytest.approx(_naive_supcon(q, qlab, k, klab, 0.1, False), rel=1e-5)


def test_supcon_without_any_positive_is_zero_not_nan():
    x = torch.randn(4, 3, requires_grad=True)
    out = SupConLoss()(x, torch.tensor([0, 1, 2, -1]))
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(x.grad).all()


def test_coarse_emotion_loss_is_weighted_sum_of_four_supcon_terms():
    g = torch.Generator().manual_seed(21)
    v, m = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 2, -1, 0])
    sup = SupConLoss(0.07)
    terms = [sup(v, labels), sup(m, labels), sup(v, labels, m, labels), sup(m, labels, v, labels)]
    weights = (0.1, 0.2, 0.3, 0.4)
    got = CoarseEmotionLoss(0.07, weights)(v, m, labels)
    assert got.item() == pytest.approx(sum(w * t.item() for w, t in zip(weights, terms)), rel=1e-6)


# ---------------------------------------------------------------- VM-NET
def _naive_ranking(v, m, margin, top_k):
    v, m = F.normalize(v, dim=1), F.normalize(m, dim=1)
    total = 0.0
    for i in range(len(v)):
        distances = [1 - float(v[i] @ m[j]) for j in range(len(m)) if j != i]
        hardest = sorted(distances)[:top_k]
        d_pos = 1 - float(v[i] @ m[i])
        total += sum(max(0.0, margin + d_pos - d) for d in hardest) / len(hardest)
    return total / len(v)


def test_vmnet_matches_naive_loop():
    g = torch.Generator().manual_seed(22)
    v, m = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    raw_v, raw_m = torch.randn(7, 6, generator=g), torch.randn(7, 5, generator=g)
    out = VMNetLoss(margin=0.3, top_k=3)(v, m, raw_v, raw_m)
    xy, yx = _naive_ranking(v, m, 0.3, 3), _naive_ranking(m, v, 0.3, 3)
    assert out["xy"].item() == pytest.approx(xy, rel=1e-5)
    assert out["yx"].item() == pytest.approx(yx, rel=1e-5)
    struct_v, struct_m = IntraModalLoss()(raw_v, v).item(), IntraModalLoss()(raw_m, m).item()
    assert out["loss"].item() == pytest.approx(3 * xy + yx + 0.2 * (struct_v + struct_m), rel=1e-5)
    # top_k larger than the batch uses every negative
    big = VMNetLoss(margin=0.3, top_k=100)(v, m, raw_v, raw_m)["xy"].item()
    assert big == pytest.approx(_naive_ranking(v, m, 0.3, 6), rel=1e-5)


# ---------------------------------------------------------------- HG-CLIM variants
EXPECTED_TERMS = {
    "coarse": {"loss", "coarse"},
    "emoclim": {"loss", "coarse"},
    "coarse+intra": {"loss", "coarse", "intra_v", "intra_m"},
    "coarse+inter": {"loss", "coarse", "inter"},
    "hgclim": {"loss", "coarse", "inter", "intra_v", "intra_m"},
    "vmnet": {"loss", "xy", "yx", "struct_v", "struct_m"},
}


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_hgclim_variants_return_exactly_their_terms(variant):
    assert set(LOSS_VARIANTS) == set(EXPECTED_TERMS)
    v, m, raw_v, raw_m = _ii_batch(2)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    out = HGCLIMLoss(variant, lambda_inter=0.5, lambda_intra=2.0)(v, m, raw_v, raw_m, labels, 10.0)
    assert set(out) == EXPECTED_TERMS[variant]
    if variant != "vmnet":
        expected = (
            out["coarse"] + 0.5 * out.get("inter", 0.0) + 2.0 * (out.get("intra_v", 0.0) + out.get("intra_m", 0.0))
        )
        assert out["loss"].item() == pytest.approx(float(expected), rel=1e-6)


def test_hgclim_rejects_unknown_variant():
    with pytest.raises(ValueError):
        HGCLIMLoss("clip")


# ---------------------------------------------------------------- precision
def test_losses_run_in_fp32_under_bf16_autocast():
    v, m, raw_v, raw_m = _ii_batch(3)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    reference = HGCLIMLoss("hgclim")(v, m, raw_v, raw_m, labels, 100.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = HGCLIMLoss("hgclim")(v, m, raw_v, raw_m, labels, 100.0)
        from_bf16 = InterModalLoss()(v.bfloat16(), m.bfloat16(), 100.0)
    for name, value in mixed.items():
        assert value.dtype == torch.float32, name
        assert value.item() == pytest.approx(reference[name].item(), rel=1e-6, abs=1e-7), name
    assert from_bf16.dtype == torch.float32


# ---------------------------------------------------------------- 2-process gloo
# Rank r holds rows [r*n, (r+1)*n) of a global batch of N = 2n. The all_gather backward sums
# the gradients of all ranks' losses, so rank r's embedding gradient is d(sum_r' L_r')/dx_r:
#   * global mode (default): every L_r' equals the global loss L  -> grad = world_size * dL/dx_r
#   * local_loss=True: mean_r' L_r' = L                             -> grad = world_size * dL/dx_r
# DDP divides parameter gradients by world_size, which restores dL/dtheta. The shared `scale`
# is not gathered, so its per-rank gradients average (as DDP does) to dL/dscale.
WORLD_SIZE, HALF = 2, 4


def _ddp_batch():
    g = torch.Generator().manual_seed(123)
    n = WORLD_SIZE * HALF
    return {
        "v": torch.randn(n, 5, generator=g, dtype=torch.float64),
        "m": torch.randn(n, 5, generator=g, dtype=torch.float64),
        "raw_v": torch.randn(n, 3, 7, generator=g, dtype=torch.float64),
        "raw_m": torch.randn(n, 6, generator=g, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 0, 2, 1, 2, -1, 0]),
    }


def _ddp_cases():
    return {
        "inter": lambda b, s: InterModalLoss(0.3, 0.7)(b["v"], b["m"], s),
        "inter_local": lambda b, s: InterModalLoss(0.3, 0.7, local_loss=True)(b["v"], b["m"], s),
        "intra": lambda b, s: IntraModalLoss("cosine")(b["raw_v"], b["v"]),
        "intra_local": lambda b, s: IntraModalLoss("cosine", local_loss=True)(b["raw_v"], b["v"]),
        "intra_kl": lambda b, s: IntraModalLoss("kl")(b["raw_m"], b["m"]),
        "inter_intra": lambda b, s: InterIntraLoss(w_intra=3.0)(b["v"], b["m"], b["raw_v"], b["raw_m"], s)["loss"],
        "coarse": lambda b, s: CoarseEmotionLoss()(b["v"], b["m"], b["labels"]),
        "vmnet": lambda b, s: VMNetLoss(top_k=3)(b["v"], b["m"], b["raw_v"], b["raw_m"])["loss"],
    }


def _run_cases(batch):
    results = {}
    for name, fn in _ddp_cases().items():
        leaves = {k: (t.clone().requires_grad_() if k in ("v", "m") else t) for k, t in batch.items()}
        scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
        loss = fn(leaves, scale)
        loss.backward()
        results[name] = {
            "loss": loss.detach(),
            "v": leaves["v"].grad,
            "m": leaves["m"].grad,
            "scale": scale.grad if scale.grad is not None else torch.zeros((), dtype=torch.float64),
        }
    return results


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        rows = slice(rank * HALF, (rank + 1) * HALF)
        local = {k: t[rows] for k, t in _ddp_batch().items()}
        torch.save(_run_cases(local), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    full = _run_cases(_ddp_batch())
    for name, ref in full.items():
        losses = torch.stack([r[name]["loss"] for r in per_rank])
        if name.endswith("_local"):
            assert not torch.allclose(losses[0], losses[1])  # really a per-rank share
            assert torch.allclose(losses.mean(), ref["loss"], rtol=1e-10), name
        else:
            assert torch.allclose(losses, ref["loss"].expand(WORLD_SIZE), rtol=1e-10), name
        for key in ("v", "m"):
            if ref[key] is None:
                assert all(r[name][key] is None for r in per_rank), name
                continue
            grads = torch.cat([r[name][key] for r in per_rank])
            assert torch.allclose(grads, WORLD_SIZE * ref[key], rtol=1e-8, atol=1e-12), (name, key)
        scale_grad = torch.stack([r[name]["scale"] for r in per_rank]).mean()
        assert torch.allclose(scale_grad, ref["scale"], rtol=1e-8, atol=1e-12), name
