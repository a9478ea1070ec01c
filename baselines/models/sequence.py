"""II-CLVM / CLVM / II-CLVTM models (docs/methods.md): frame sampling and sequence encoders of YouTube-8M features.

* Sampling (:func:`sample_positions`): ``gs`` global sparse sampling splits a sequence of T frames
  evenly into K segments and takes one frame per segment, ``floor((k + u) * T / K)`` with ``u``
  uniform in [0, 1) when training and ``u = 0.5`` (the segment centre) when evaluating, so every
  video becomes K x d whatever its duration; ``fd`` (the ablation) takes the K consecutive frames
  around the centre. Videos shorter than K repeat frames (the same formulas; every frame is used).
* Encoders (``encoder``): ``bilstm`` (default), ``fc``, ``att``, ``gcn``; one per modality (video
  1024-d, music 128-d), each ending in a linear map to the shared dimension; outputs L2-normalised.
* II-CLVTM: a frozen text encoder's feature (computed outside the model, ``baselines.models.text``)
  is projected and used as the initial hidden state of the video biLSTM *(for the other encoders:
  added to every frame's hidden vector, choice)*. ``text_fusion = "h0+add"`` *(choice, default)* also
  adds the same projection to the biLSTM's pooled state: measured here, an untrained biLSTM's final
  states are bit-identical in float32 whatever its initial state after K = 30 steps of YouTube-8M-scale
  inputs, so with ``"h0"`` alone (the paper's wording) the text barely reaches the embedding.
  ``"h0+c0"`` also sets the initial cell state, ``forget_bias`` the forget gates' initial bias; neither
  makes the text help (``benchmarks/iiclvtm_text.py``, table in ``docs/iiclvm.md``).
* Raw features of the intra loss: the temporal average of the sampled, dequantised input; for
  II-CLVTM the query's raw feature is ``concat(text, temporal-average video)`` (each part
  L2-normalised first, *choice* ``raw_text = "unit"``; ``"plain"`` concatenates as is).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.losses import LearnableTemperature

ENCODERS = ("bilstm", "fc", "att", "gcn")
SAMPLINGS = ("gs", "fd")
VIDEO_DIM, AUDIO_DIM = 1024, 128
DEFAULT_LAYERS = {"bilstm": 1, "fc": 2, "att": 2, "gcn": 2}
TEXT_FUSIONS = ("h0", "h0+c0", "h0+add")


def sample_positions(
    lengths: torch.Tensor,
    k: int,
    sampling: str = "gs",
    train: bool = False,
    generator: torch.Generator | None = None,
    u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Frame indices ``[B, K]`` (int64, on ``lengths.device``) for sequences of ``lengths`` frames.

    ``gs``: ``floor((k + u) * T / K)``, ``u ~ U[0, 1)`` per (sample, segment) when training (or the
    given ``u``, so two modalities can share draws), 0.5 when evaluating. ``fd``: frames
    ``start .. start + K - 1`` with ``start = (T - K) // 2`` (no randomness); for T < K the same
    formula as ``gs`` at the centre (every frame, repeated).
    """
    lengths = lengths.to(torch.long).clamp(min=1)
    t = lengths[:, None].to(torch.float64)
    segments = torch.arange(k, device=lengths.device, dtype=torch.float64)[None, :]
    if sampling == "gs":
        if train:
            if u is None:
                u = torch.rand((lengths.shape[0], k), generator=generator, device=lengths.device, dtype=torch.float64)
            offset = u.to(torch.float64)
        else:
            offset = torch.full_like(segments, 0.5)
        pos = torch.floor((segments + offset) * t / k).to(torch.long)
    elif sampling == "fd":
        centred = torch.floor((segments + 0.5) * t / k).to(torch.long)
        start = ((lengths - k) // 2).clamp(min=0)[:, None]
        window = start + torch.arange(k, device=lengths.device)[None, :]
        pos = torch.where(lengths[:, None] >= k, window, centred)
    else:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return torch.minimum(pos, lengths[:, None] - 1)


@dataclass
class SequenceConfig:
    encoder: str = "bilstm"
    hidden: int = 256  # hidden and shared output dimension (choice)
    layers: int = 1  # LSTM layers / MLP depth / transformer layers / graph-conv layers
    bilstm_output: str = "final"  # final = concatenated last states of both directions | mean over time (choice)
    heads: int = 4  # att
    gcn_radius: int = 1  # gcn: frames i and j are neighbours when |i - j| <= radius (choice)
    dropout: float = 0.1
    segments: int = 30  # K
    text_dim: int = 0  # > 0: II-CLVTM (text feature of this size conditions the video encoder)
    raw_text: str = "unit"  # II-CLVTM raw query feature: unit = concat of L2-normalised parts | plain
    text_fusion: str = "h0+add"  # II-CLVTM biLSTM: h0 | h0+c0 (initial hidden and cell state) | h0+add (TEXT_FUSIONS)
    forget_bias: float = 0.0  # biLSTM: initial forget-gate bias (b_ih + b_hh of the f gate); 0 = PyTorch's init

    def to_dict(self) -> dict:
        return asdict(self)


class BiLSTMEncoder(nn.Module):
    """Bidirectional LSTM; output = concatenated final states (or mean over time), then a linear map."""

    def __init__(self, in_dim: int, hidden: int, layers: int, output: str, dropout: float, forget_bias: float = 0.0):
        super().__init__()
        self.hidden, self.layers, self.output = hidden, layers, output
        self.lstm = nn.LSTM(
            in_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        if forget_bias:
            with torch.no_grad():  # gate order i, f, g, o; the f gate's total bias b_ih + b_hh = forget_bias
                for name, bias in self.lstm.named_parameters():
                    if name.startswith("bias_"):
                        bias[hidden : 2 * hidden] = forget_bias if name.startswith("bias_ih") else 0.0
        self.out = nn.Linear(2 * hidden, hidden)

    def _state(self, value: torch.Tensor) -> torch.Tensor:
        """[B, 2 * hidden] -> [layers * 2, B, hidden], the same for every layer."""
        return value.view(value.shape[0], 2, self.hidden).transpose(0, 1).repeat(self.layers, 1, 1).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        add: torch.Tensor | None = None,
        c0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        state = None
        if h0 is not None:
            h = self._state(h0)
            state = (h, torch.zeros_like(h) if c0 is None else self._state(c0))
        seq, (h_n, _) = self.lstm(x, state)
        if self.output == "mean":
            pooled = seq.mean(dim=1)
        else:
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer, forward and backward
        return self.out(pooled if add is None else pooled + add)


class FCEncoder(nn.Module):
    """Mean over time, then an MLP (Linear-ReLU-Dropout blocks, last layer linear)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.first = nn.Linear(in_dim, hidden)
        blocks = []
        for _ in range(max(1, layers) - 1):
            blocks += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)]
        self.rest = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.first(x.mean(dim=1))
        return self.rest(h if cond is None else h + cond)


class AttEncoder(nn.Module):
    """Frame projection + learned positions, transformer encoder layers (pre-norm), mean pool, linear."""

    def __init__(self, in_dim: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, hidden))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x) + self.pos_embed[:, : x.shape[1]]
        if cond is not None:
            h = h + cond[:, None, :]
        return self.out(self.encoder(h).mean(dim=1))


def temporal_adjacency(k: int, radius: int, device=None) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` of the temporal-neighbour graph: frames within ``radius`` are linked."""
    idx = torch.arange(k, device=device)
    adj = ((idx[:, None] - idx[None, :]).abs() <= radius).float()
    d = adj.sum(dim=1).rsqrt()
    return d[:, None] * adj * d[None, :]


class GCNEncoder(nn.Module):
    """Graph convolution (Kipf & Welling) over the temporal-neighbour graph of the K frames, in plain torch.

    ``H <- H + Dropout(ReLU(A_hat H W))`` per layer (residual), mean over frames, linear.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, radius: int, dropout: float, max_len: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(max(1, layers)))
        self.drop = nn.Dropout(dropout)
        self.radius = radius
        self.register_buffer("adj", temporal_adjacency(max_len, radius), persistent=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        k = x.shape[1]
        adj = self.adj if self.adj.shape[0] == k else temporal_adjacency(k, self.radius, x.device)
        h = self.inp(x)
        if cond is not None:
            h = h + cond[:, None, :]
        for conv in self.convs:
            h = h + self.drop(F.relu(torch.einsum("ij,bjd->bid", adj.to(h.dtype), conv(h))))
        return self.out(h.mean(dim=1))


def build_encoder(cfg: SequenceConfig, in_dim: int) -> nn.Module:
    if cfg.encoder == "bilstm":
        return BiLSTMEncoder(in_dim, cfg.hidden, cfg.layers, cfg.bilstm_output, cfg.dropout, cfg.forget_bias)
    if cfg.encoder == "fc":
        return FCEncoder(in_dim, cfg.hidden, cfg.layers, cfg.dropout)
    if cfg.encoder == "att":
        return AttEncoder(in_dim, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.segments)
    if cfg.encoder == "gcn":
        return GCNEncoder(in_dim, cfg.hidden, cfg.layers, cfg.gcn_radius, cfg.dropout, cfg.segments)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {cfg.encoder!r}")


class SequenceModel(nn.Module):
    """Video and music sequence encoders (+ text conditioning for II-CLVTM) and the learnable temperature.

    ``forward(video [B,K,1024], audio [B,K,128], text [B,Dt] | None)`` on dequantised float frames
    returns ``(v, m, raw_v, raw_m)``: L2-normalised embeddings (fp32) and the raw features of the
    intra loss (temporal averages; for II-CLVTM ``raw_v = concat(text, mean video)``).
    """

    def __init__(self, cfg: SequenceConfig):
        super().__init__()
        self.cfg = cfg
        self.video_encoder = build_encoder(cfg, VIDEO_DIM)
        self.music_encoder = build_encoder(cfg, AUDIO_DIM)
        self.text_proj = None
        if cfg.text_dim:
            width = 2 * cfg.hidden if cfg.encoder == "bilstm" else cfg.hidden  # h0 of both LSTM directions
            self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, width), nn.Tanh())
        self.temperature = LearnableTemperature(0.07)

    @property
    def text_fusion(self) -> str | None:
        if not self.cfg.text_dim:
            return None
        if self.cfg.encoder != "bilstm":
            return "added to every frame"
        extra = {"h0": "", "h0+c0": " and initial cell state", "h0+add": " and added to the pooled state"}
        return "initial hidden state" + extra[self.cfg.text_fusion]

    def encode_video(self, video: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        cond = None
        if self.text_proj is not None:
            if text is None:
                raise ValueError("II-CLVTM needs the text feature of every video")
            cond = self.text_proj(text)
        if cond is None:
            out = self.video_encoder(video)
        elif self.cfg.encoder == "bilstm":
            fusion = self.cfg.text_fusion
            out = self.video_encoder(
                video, cond, cond if fusion == "h0+add" else None, cond if fusion == "h0+c0" else None
            )
        else:
            out = self.video_encoder(video, cond)
        return F.normalize(out.float(), dim=-1)

    def encode_music(self, audio: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.music_encoder(audio).float(), dim=-1)

    def raw_query(self, video: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        raw = video.float().mean(dim=1)
        if self.text_proj is None:
            return raw
        text = text.float()
        if self.cfg.raw_text == "unit":
            return torch.cat([F.normalize(text, dim=-1), F.normalize(raw, dim=-1)], dim=-1)
        return torch.cat([text, raw], dim=-1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor | None = None):
        v = self.encode_video(video, text)
        m = self.encode_music(audio)
        return v, m, self.raw_query(video, text), audio.float().mean(dim=1)

    def describe(self) -> dict:
        def count(module):
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        return {
            "encoder": self.cfg.encoder,
            "hidden": self.cfg.hidden,
            "layers": self.cfg.layers,
            "video_params": count(self.video_encoder),
            "music_params": count(self.music_encoder),
            "text_params": count(self.text_proj),
            "text_fusion": self.text_fusion,
            "params": count(self),
        }


def build_sequence_model(cfg: SequenceConfig, seed: int = 0) -> SequenceModel:
    """The same config and seed always give the same initial weights (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SequenceModel(cfg)
