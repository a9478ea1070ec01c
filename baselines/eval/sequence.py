"""Evaluation embeddings and instance retrieval of the sequence models (II-CLVM / CLVM / II-CLVTM).

Used by the task's validation and final evaluation (``baselines.tasks.iiclvm``), by ``mipkit eval`` of such a
run and by the search demo (``baselines.eval.search``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from baselines.eval.metrics import instance_metrics
from baselines.eval.retrieval import pools
from baselines.models.sequence import sample_positions

if TYPE_CHECKING:
    from baselines.tasks.iiclvm import IICLVMConfig

DIRECTIONS = ("v2m", "m2v")


@torch.inference_mode()
def embed(
    model, stores: tuple, text: torch.Tensor | None, cfg: IICLVMConfig, device: torch.device, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation embeddings (fp32, CPU) of a split: deterministic frames (GS segment centres / FD window)."""
    rgb, audio = stores
    if len(rgb) == 0:
        return torch.zeros(0, cfg.hidden), torch.zeros(0, cfg.hidden)
    was_training = model.training
    model.eval()
    vs, ms = [], []
    for start in range(0, len(rgb), chunk):
        idx = torch.arange(start, min(start + chunk, len(rgb)))
        pos_v = sample_positions(rgb.lengths[idx.to(rgb.lengths.device)], cfg.segments, cfg.sampling, train=False)
        pos_m = sample_positions(audio.lengths[idx.to(audio.lengths.device)], cfg.segments, cfg.sampling, train=False)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            t = text[idx.to(text.device)] if text is not None else None
            vs.append(model.encode_video(rgb.gather(idx, pos_v, device), t).float().cpu())
            ms.append(model.encode_music(audio.gather(idx, pos_m, device)).float().cpu())
    model.train(was_training)
    return torch.cat(vs), torch.cat(ms)


def sequence_retrieval(v: torch.Tensor, m: torch.Tensor, candidates, seeds) -> dict:
    from baselines.eval.chance import instance_chance

    sim = v.float() @ m.float().T
    return {
        "n_pairs": int(sim.shape[0]),
        DIRECTIONS[0]: instance_metrics(sim),
        DIRECTIONS[1]: instance_metrics(sim.T),
        "chance": {"instance": instance_chance(int(sim.shape[0]))},
        "pools": pools(sim, candidates, seeds, DIRECTIONS) if candidates else {},
    }
