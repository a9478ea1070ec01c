"""Loss modules of the mipkit baselines (HG-CLIM, II-CLVM / CLVM, EMO-CLIM, VM-NET).

Equations follow ``docs/methods.md``; items marked *(choice)* there are reconstructions
and are constructor arguments here. Conventions shared by every module:

* Normalisation, logits and losses run in fp32 with autocast disabled, even inside
  ``torch.autocast`` (bf16 logits lose the small differences contrastive losses live on).
  float64 inputs stay float64 so that ``torch.autograd.gradcheck`` works.
* Embeddings are re-normalised in fp32: a no-op for unit vectors, and it makes bf16 encoder
  outputs exactly unit-norm.
* Under torch.distributed every module gathers embeddings from all ranks *with gradient*
  (see ``baselines.runtime.distributed``), so negatives / neighbourhoods span the global batch.
  Default: each rank computes the **global-batch loss** (same value on every rank, equal to
  the single-process loss). ``local_loss=True`` (inter and intra only) makes each rank use its
  local rows as queries against all candidates (open_clip's local loss, O(n * N) memory);
  then ``mean over ranks`` equals the global loss. Either way DDP's gradient averaging yields
  the single-process gradient. Every rank must hold the same number of samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.runtime.distributed import gather_no_grad, gather_with_grad, world_info

LOSS_VARIANTS: tuple[str, ...] = ("coarse", "coarse+intra", "coarse+inter", "hgclim", "emoclim", "vmnet")


def _fp32(x: Tensor) -> Tensor:
    """Upcast to fp32; keep float64 (gradcheck)."""
    return x if x.dtype == torch.float64 else x.float()


def _unit(x: Tensor) -> Tensor:
    return F.normalize(_fp32(x), dim=-1)


def _autocast_off(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def _query_rows(local: Tensor, gathered: Tensor, local_loss: bool) -> tuple[Tensor, int]:
    """Rows used as queries and the global index of the first one."""
    rank, world_size = world_info()
    if local_loss and world_size > 1:
        return local, rank * local.shape[0]
    return gathered, 0


class LearnableTemperature(nn.Module):
    """Learnable softmax temperature stored as ``log(1/tau)``; ``forward()`` returns ``1/tau = exp(param)``.

    The cap ``1/tau <= max_inverse`` (CLIP: 100) is kept by :meth:`clamp_`, which the training loop calls
    after every optimizer step (open_clip's ``logit_scale.clamp_(0, log(100))``). Clamping the *parameter*,
    not the output, keeps it trainable at the cap: with ``min(exp(p), 100)`` the gradient is exactly zero
    once ``p > log(100)`` and the scale could never come back down.
    """

    def __init__(self, init: float = 0.07, max_inverse: float = 100.0, learnable: bool = True) -> None:
        super().__init__()
        if init <= 0 or max_inverse <= 0:
            raise ValueError("temperature and max_inverse must be positive")
        self.max_inverse = float(max_inverse)
        self.log_inverse_tau = nn.Parameter(torch.tensor(math.log(1.0 / init)), requires_grad=learnable)

    def forward(self) -> Tensor:
        return self.log_inverse_tau.float().exp()

    @torch.no_grad()
    def clamp_(self) -> LearnableTemperature:
        """Clamp the parameter in place to ``[0, log(max_inverse)]`` (``1 <= 1/tau <= max_inverse``)."""
        self.log_inverse_tau.clamp_(0.0, math.log(self.max_inverse))
        return self

    @property
    def tau(self) -> float:
        """Current temperature as a python float, for logging."""
        return 1.0 / float(self.forward().detach())


class InterModalLoss(nn.Module):
    """Symmetric instance-level InfoNCE (both papers; II loss paper, section III-C1, eq. 2).

    ``S = scale * v @ m.T`` on L2-normalised ``v, m`` [N, d];
    ``L = alpha * CE(S, I) + beta * CE(S.T, I)`` (row i's target is column i).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, local_loss: bool = False) -> None:
        super().__init__()
        self.alpha, self.beta, self.local_loss = float(alpha), float(beta), bool(local_loss)

    def forward(self, v: Tensor, m: Tensor, scale: Tensor | float) -> Tensor:
        if v.shape != m.shape:
            raise ValueError(f"paired embeddings must have the same shape, got {tuple(v.shape)} and {tuple(m.shape)}")
        with _autocast_off(v):
            v, m = _unit(v), _unit(m)
            scale = _fp32(torch.as_tensor(scale, device=v.device))
            v_all, m_all = gather_with_grad(v), gather_with_grad(m)
            v_queries, offset = _query_rows(v, v_all, self.local_loss)
            m_queries, _ = _query_rows(m, m_all, self.local_loss)
            targets = torch.arange(v_queries.shape[0], device=v.device) + offset
            logits_v2m = scale * v_queries @ m_all.T  # rows of S
            logits_m2v = scale * m_queries @ v_all.T  # rows of S.T
            return self.alpha * F.cross_entropy(logits_v2m, targets) + self.beta * F.cross_entropy(logits_m2v, targets)


class IntraModalLoss(nn.Module):
    """Intra-modal structure loss of the II loss (II loss paper, section III-C2).

    ``A = cos(raw_i, raw_j)`` (a constant of the batch: raw is detached), ``B = cos(emb_i, emb_j)``.
    * ``cosine`` *(choice)*: ``r_i = cos(A_i., B_i.)``; ``L = (w_r + w_c) * mean_i(1 - r_i)`` (the column
      term equals the row term because A and B are symmetric).
    * ``kl`` *(choice)*: ``L = (w_r + w_c) * mean_i KL(softmax(A_i./t) || softmax(B_i./t))``; with the
      default weights (sum 1) this is exactly "KL averaged over rows".
    ``raw`` may be [N, d_raw] or a sequence [N, T, d_raw], averaged over T (``vbar_i``).
    Under DDP, raw is gathered without gradient (constant) and emb with gradient.
    """

    DISTANCES = ("cosine", "kl")

    def __init__(
        self,
        distance: str = "cosine",
        w_r: float = 0.5,
        w_c: float = 0.5,
        kl_temperature: float = 0.1,
        local_loss: bool = False,
    ) -> None:
        super().__init__()
        if distance not in self.DISTANCES:
            raise ValueError(f"distance must be one of {self.DISTANCES}, got {distance!r}")
        self.distance, self.w_r, self.w_c = distance, float(w_r), float(w_c)
        self.kl_temperature, self.local_loss = float(kl_temperature), bool(local_loss)

    def forward(self, raw: Tensor, emb: Tensor) -> Tensor:
        with _autocast_off(emb):
            raw = _fp32(raw.detach())
            if raw.ndim == 3:
                raw = raw.mean(dim=1)  # temporal average vbar_i
            raw, emb = F.normalize(raw, dim=-1), _unit(emb)
            raw_all, emb_all = gather_no_grad(raw), gather_with_grad(emb)
            raw_rows, _ = _query_rows(raw, raw_all, self.local_loss)
            emb_rows, _ = _query_rows(emb, emb_all, self.local_loss)
            a_rows = raw_rows @ raw_all.T
            b_rows = emb_rows @ emb_all.T
            if self.distance == "cosine":
                per_row = 1.0 - F.cosine_similarity(a_rows, b_rows, dim=1)
            else:
                t = self.kl_temperature
                per_row = F.kl_div(
                    F.log_softmax(b_rows / t, dim=1),
                    F.log_softmax(a_rows / t, dim=1),
                    reduction="none",
                    log_target=True,
                ).sum(dim=1)
            return (self.w_r + self.w_c) * per_row.mean()


class InterIntraLoss(nn.Module):
    """II loss (II loss paper, section III-C2, eqs. 9-10): ``w_inter * L_inter + w_intra * (gamma_v * L_v + gamma_m * L_m)``.

    ``w_intra = 0`` is CLVM: the total is exactly ``w_inter * L_inter`` (the intra terms are still
    computed, without graph, for logging). Default ``w_intra = 3`` *(choice)*: the paper sweeps
    {0, 3, 6, 10} and its chosen value is not recoverable from the text.
    """

    def __init__(
        self,
        w_inter: float = 1.0,
        w_intra: float = 3.0,
        gamma_v: float = 1.0,
        gamma_m: float = 1.0,
        intra: Optional[IntraModalLoss] = None,
        inter: Optional[InterModalLoss] = None,
    ) -> None:
        super().__init__()
        self.w_inter, self.w_intra = float(w_inter), float(w_intra)
        self.gamma_v, self.gamma_m = float(gamma_v), float(gamma_m)
        self.intra = intra if intra is not None else IntraModalLoss()
        self.inter = inter if inter is not None else InterModalLoss()

    def forward(self, v: Tensor, m: Tensor, raw_v: Tensor, raw_m: Tensor, scale: Tensor | float) -> dict[str, Tensor]:
        inter = self.inter(v, m, scale)
        if self.w_intra == 0.0:
            with torch.no_grad():
                intra_v, intra_m = self.intra(raw_v, v), self.intra(raw_m, m)
            total = self.w_inter * inter
        else:
            intra_v, intra_m = self.intra(raw_v, v), self.intra(raw_m, m)
            total = self.w_inter * inter + self.w_intra * (self.gamma_v * intra_v + self.gamma_m * intra_m)
        return {"loss": total, "inter": inter, "intra_v": intra_v, "intra_m": intra_m}


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020, L_out) between queries and keys.

    For anchor i with positives P(i) (keys sharing its label) and candidates A(i):
    ``L_i = -1/|P(i)| * sum_{p in P(i)} log(exp(q_i.k_p / t) / sum_{a in A(i)} exp(q_i.k_a / t))``,
    averaged over anchors that have at least one positive. ``keys=None`` is the same-set case:
    A(i) and P(i) exclude i itself. Label -1 = unlabelled: such anchors are skipped and such keys
    are never positives (they stay in the denominator as negatives). Returns a graph-connected
    zero when no anchor has a positive. Not distributed by itself: pass gathered tensors
    (``CoarseEmotionLoss`` does).
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(
        self, queries: Tensor, query_labels: Tensor, keys: Optional[Tensor] = None, key_labels: Optional[Tensor] = None
    ) -> Tensor:
        with _autocast_off(queries):
            same_set = keys is None
            q = _unit(queries)
            k = q if same_set else _unit(keys)
            query_labels = query_labels.to(q.device)
            key_labels = query_labels if key_labels is None else key_labels.to(q.device)
            logits = q @ k.T / self.temperature
            positive = (query_labels[:, None] == key_labels[None, :]) & (key_labels[None, :] >= 0)
            if same_set:
                self_pair = torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
                positive &= ~self_pair
                logits = logits.masked_fill(self_pair, float("-inf"))
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            n_positive = positive.sum(dim=1)
            anchors = (query_labels >= 0) & (n_positive > 0)
            # masked_fill (not multiply): the self-pair log-prob is -inf and -inf * 0 = nan.
            mean_positive_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / n_positive.clamp(min=1)
            # Masked mean instead of boolean indexing: no host sync, and 0 when no anchor counts.
            per_anchor = torch.where(anchors, mean_positive_log_prob, torch.zeros_like(mean_positive_log_prob))
            return -per_anchor.sum() / anchors.sum().clamp(min=1)


class CoarseEmotionLoss(nn.Module):
    """EMO-CLIM coarse loss *(choice: HG-CLIM's coarse granularity)*: four SupCon terms.

    ``L = w0 * SupCon(v->v) + w1 * SupCon(m->m) + w2 * SupCon(v->m) + w3 * SupCon(m->v)``, positives
    share the emotion label. Computed on the global batch under DDP.
    """

    TERMS = ("i2i", "m2m", "i2m", "m2i")

    def __init__(self, temperature: float = 0.07, weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25)) -> None:
        super().__init__()
        if len(weights) != 4:
            raise ValueError("weights must hold 4 values (i2i, m2m, i2m, m2i)")
        self.weights = tuple(float(w) for w in weights)
        self.supcon = SupConLoss(temperature)

    def terms(self, v: Tensor, m: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The four unweighted SupCon terms by name."""
        v, m = gather_with_grad(v), gather_with_grad(m)
        labels = gather_no_grad(labels.to(v.device))
        return {
            "i2i": self.supcon(v, labels),
            "m2m": self.supcon(m, labels),
            "i2m": self.supcon(v, labels, m, labels),
            "m2i": self.supcon(m, labels, v, labels),
        }

    def forward(self, v: Tensor, m: Tensor, labels: Tensor) -> Tensor:
        terms = self.terms(v, m, labels)
        return sum(w * terms[name] for w, name in zip(self.weights, self.TERMS))


class VMNetLoss(nn.Module):
    """VM-NET / CBVMR (Hong et al. 2018) loss.

    Inter-modal ranking on cosine distance ``d = 1 - cos`` with the top-K hardest negatives:
    ``L_xy = mean_i mean_{j in topK_i} max(0, margin + d(x_i, y_i) - d(x_i, y_j))`` *(choice: mean,
    not sum, over the K negatives, so the scale does not depend on K or the batch size)*;
    ``L_yx`` likewise with music anchors. The soft intra-modal structure terms ``Ls_x, Ls_y`` are
    implemented *(choice)* as the ``IntraModalLoss`` cosine term between raw and embedded
    neighbourhoods, instead of CBVMR's sign-of-distance-difference triplets.
    ``L = w_xy * L_xy + w_yx * L_yx + w_struct * (Ls_x + Ls_y)``. Global batch under DDP.
    """

    def __init__(
        self,
        margin: float = 0.1,
        top_k: int = 100,
        w_xy: float = 3.0,
        w_yx: float = 1.0,
        w_struct: float = 0.2,
        structure: Optional[IntraModalLoss] = None,
    ) -> None:
        super().__init__()
        self.margin, self.top_k = float(margin), int(top_k)
        self.w_xy, self.w_yx, self.w_struct = float(w_xy), float(w_yx), float(w_struct)
        self.structure = structure if structure is not None else IntraModalLoss("cosine")

    def ranking(self, sim: Tensor) -> Tensor:
        """Hinge over the top-K negatives of each row; ``sim[i, i]`` is the positive."""
        n = sim.shape[0]
        k = min(self.top_k, n - 1)
        if k <= 0:
            return sim.sum() * 0.0
        positive = sim.diagonal()
        negatives = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=sim.device), float("-inf"))
        hardest = negatives.topk(k, dim=1).values  # highest cosine = smallest distance = worst violation
        # margin + (1 - cos_pos) - (1 - cos_neg) = margin - cos_pos + cos_neg
        return F.relu(self.margin - positive[:, None] + hardest).mean()

    def forward(self, v: Tensor, m: Tensor, raw_v: Tensor, raw_m: Tensor) -> dict[str, Tensor]:
        with _autocast_off(v):
            v_all, m_all = gather_with_grad(_unit(v)), gather_with_grad(_unit(m))
            sim = v_all @ m_all.T
            xy, yx = self.ranking(sim), self.ranking(sim.T)
        struct_v, struct_m = self.structure(raw_v, v), self.structure(raw_m, m)  # gathers itself
        total = self.w_xy * xy + self.w_yx * yx + self.w_struct * (struct_v + struct_m)
        return {"loss": total, "xy": xy, "yx": yx, "struct_v": struct_v, "struct_m": struct_m}


class HGCLIMLoss(nn.Module):
    """HG-CLIM loss and its ablation rows (HG-CLIM paper, sections 3 and 4.3).

    ``L = L_coarse + lambda_inter * L_inter_fine + lambda_intra * (gamma_v * L_intra_v + gamma_m * L_intra_m)``
    Variants (``LOSS_VARIANTS``) and the terms they return besides ``loss``:
      ``coarse`` / ``emoclim``: coarse | ``coarse+intra``: coarse, intra_v, intra_m |
      ``coarse+inter``: coarse, inter | ``hgclim``: coarse, inter, intra_v, intra_m |
      ``vmnet``: xy, yx, struct_v, struct_m (labels and scale unused).
    ``L_intra_fine`` *(choice)* is ``IntraModalLoss`` with the pre-projection encoder features as raw.
    """

    def __init__(
        self,
        variant: str = "hgclim",
        lambda_inter: float = 1.0,
        lambda_intra: float = 1.0,
        gamma_v: float = 1.0,
        gamma_m: float = 1.0,
        coarse: Optional[CoarseEmotionLoss] = None,
        inter: Optional[InterModalLoss] = None,
        intra: Optional[IntraModalLoss] = None,
        vmnet: Optional[VMNetLoss] = None,
    ) -> None:
        super().__init__()
        if variant not in LOSS_VARIANTS:
            raise ValueError(f"variant must be one of {LOSS_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.lambda_inter, self.lambda_intra = float(lambda_inter), float(lambda_intra)
        self.gamma_v, self.gamma_m = float(gamma_v), float(gamma_m)
        self.use_coarse = variant != "vmnet"
        self.use_inter = variant in ("coarse+inter", "hgclim")
        self.use_intra = variant in ("coarse+intra", "hgclim")
        self.coarse = coarse if coarse is not None else CoarseEmotionLoss()
        self.inter = inter if inter is not None else InterModalLoss()
        self.intra = intra if intra is not None else IntraModalLoss()
        self.vmnet = vmnet if vmnet is not None else VMNetLoss()

    def forward(
        self,
        v: Tensor,
        m: Tensor,
        raw_v: Optional[Tensor] = None,
        raw_m: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        scale: Tensor | float | None = None,
    ) -> dict[str, Tensor]:
        if self.variant == "vmnet":
            if raw_v is None or raw_m is None:
                raise ValueError("variant 'vmnet' needs raw_v and raw_m")
            return self.vmnet(v, m, raw_v, raw_m)
        if labels is None:
            raise ValueError(f"variant {self.variant!r} needs emotion labels")
        out: dict[str, Tensor] = {"coarse": self.coarse(v, m, labels)}
        total = out["coarse"]
        if self.use_inter:
            if scale is None:
                raise ValueError(f"variant {self.variant!r} needs the inverse temperature `scale`")
            out["inter"] = self.inter(v, m, scale)
            total = total + self.lambda_inter * out["inter"]
        if self.use_intra:
            if raw_v is None or raw_m is None:
                raise ValueError(f"variant {self.variant!r} needs raw_v and raw_m")
            out["intra_v"], out["intra_m"] = self.intra(raw_v, v), self.intra(raw_m, m)
            total = total + self.lambda_intra * (self.gamma_v * out["intra_v"] + self.gamma_m * out["intra_m"])
        return {"loss": total, **out}
