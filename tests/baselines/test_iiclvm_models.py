"""Units of II-CLVM / II-CLVTM: frame sampling, sequence encoders, text conditioning, uint8 frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.data.frames import load_frames
from baselines.models.sequence import (
    ENCODERS,
    SequenceConfig,
    build_sequence_model,
    sample_positions,
    temporal_adjacency,
)
from baselines.models.text import HashedNgramEncoder, text_features, texts_of
from mipkit.kinds.yt8m.tfrecords import dequantize, uint8_frames
from tests.helpers.yt8m_synthetic import make_yt8m_dataset

LENGTHS = torch.tensor([1, 2, 7, 29, 30, 31, 64, 300])
K = 30


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_yt8m_dataset(tmp_path_factory.mktemp("yt8m") / "synth", 12, 0, 4, seed=1)


def test_gs_gives_k_frames_for_any_length_and_segment_centres_in_eval():
    pos = sample_positions(LENGTHS, K, "gs", train=False)
    assert pos.shape == (len(LENGTHS), K) and pos.dtype == torch.long
    for row, t in zip(pos.tolist(), LENGTHS.tolist()):
        assert row == [math.floor((k + 0.5) * t / K) for k in range(K)]
        assert all(0 <= p < t for p in row) and row == sorted(row)
        if t <= K:
            assert set(row) == set(range(t))  # short videos: every frame, repeated
    assert torch.equal(pos, sample_positions(LENGTHS, K, "gs", train=False))


def test_gs_training_draws_one_random_frame_inside_each_segment():
    g = torch.Generator().manual_seed(0)
    draws = [sample_positions(LENGTHS, K, "gs", train=True, generator=g) for _ in range(20)]
    for pos in draws:
        for row, t in zip(pos.tolist(), LENGTHS.tolist()):
            for k, p in enumerate(row):
                assert math.floor(k * t / K) <= p <= max(math.ceil((k + 1) * t / K) - 1, math.floor(k * t / K))
    long_rows = torch.stack([d[-1] for d in draws])
    assert (long_rows.float().std(dim=0) > 0).all()  # 300 frames: every segment's frame varies between draws
    u = torch.full((len(LENGTHS), K), 0.5, dtype=torch.float64)
    assert torch.equal(sample_positions(LENGTHS, K, "gs", train=True, u=u), sample_positions(LENGTHS, K, "gs"))


def test_fd_takes_the_consecutive_window_around_the_centre():
    pos = sample_positions(LENGTHS, K, "fd", train=True)
    assert torch.equal(pos, sample_positions(LENGTHS, K, "fd", train=False))  # no randomness
    for row, t in zip(pos.tolist(), LENGTHS.tolist()):
        if t >= K:
            start = (t - K) // 2
            assert row == list(range(start, start + K))
        else:
            assert set(row) == set(range(t))


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("text_dim", [0, 16])
def test_encoders_shapes_unit_norm_and_raw_features(encoder, text_dim):
    model = build_sequence_model(SequenceConfig(encoder=encoder, hidden=24, segments=K, text_dim=text_dim, heads=4))
    video, audio = torch.randn(5, K, 1024), torch.randn(5, K, 128)
    text = torch.randn(5, text_dim) if text_dim else None
    v, m, raw_v, raw_m = model(video, audio, text)
    assert v.shape == m.shape == (5, 24)
    assert torch.allclose(v.norm(dim=1), torch.ones(5), atol=1e-5) and torch.allclose(
        m.norm(dim=1), torch.ones(5), atol=1e-5
    )
    assert torch.allclose(raw_m, audio.mean(dim=1))
    if text_dim:
        assert raw_v.shape == (5, text_dim + 1024)  # concat(text, temporal-average video), each L2-normalised
        assert torch.allclose(raw_v[:, text_dim:], torch.nn.functional.normalize(video.mean(dim=1), dim=-1), atol=1e-6)
        other = model.encode_video(video, torch.randn(5, text_dim))
        assert not torch.allclose(other, v, atol=1e-3)  # the text changes the video embedding
    else:
        assert torch.allclose(raw_v, video.mean(dim=1))
    (v.sum() + m.sum()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "temperature" not in n)


@pytest.mark.parametrize("fusion", ["h0", "h0+c0", "h0+add"])
def test_bilstm_text_feature_is_the_initial_hidden_state(fusion):
    model = build_sequence_model(
        SequenceConfig(encoder="bilstm", hidden=8, segments=6, text_dim=5, dropout=0.0, text_fusion=fusion)
    )
    video, text = torch.randn(3, 6, 1024), torch.randn(3, 5)
    lstm = model.video_encoder.lstm
    cond = model.text_proj(text)
    h0 = cond.view(3, 2, 8).transpose(0, 1).contiguous()  # [directions, B, hidden]
    c0 = h0 if fusion == "h0+c0" else torch.zeros_like(h0)
    _, (h_n, _) = lstm(video, (h0, c0))
    pooled = torch.cat([h_n[0], h_n[1]], dim=-1) + (cond if fusion == "h0+add" else 0)
    expected = torch.nn.functional.normalize(model.video_encoder.out(pooled), dim=-1)
    assert torch.allclose(model.encode_video(video, text), expected, atol=1e-6)
    _, (h_zero, _) = lstm(video)
    assert not torch.allclose(h_zero, h_n)
    with pytest.raises(ValueError, match="text"):
        model.encode_video(video)


def test_forget_gate_bias_sets_the_f_gate_of_every_layer_and_direction():
    plain = build_sequence_model(SequenceConfig(encoder="bilstm", hidden=8, layers=2), seed=1)
    biased = build_sequence_model(SequenceConfig(encoder="bilstm", hidden=8, layers=2, forget_bias=1.0), seed=1)
    biases = dict(biased.video_encoder.lstm.named_parameters())
    names = [n for n in biases if n.startswith("bias_ih")]
    assert len(names) == 4  # 2 layers x 2 directions
    for name in names:
        total = biases[name] + biases[name.replace("bias_ih", "bias_hh")]
        assert torch.equal(total[8:16], torch.ones(8))  # gates i, f, g, o: f is the second block
        reference = dict(plain.video_encoder.lstm.named_parameters())[name]
        assert torch.equal(biases[name][:8], reference[:8]) and torch.equal(biases[name][16:], reference[16:])


def test_an_untrained_bilstm_forgets_its_initial_state_over_k_steps():
    """Why ``text_fusion`` defaults to h0+add: over K = 30 frames the initial state vanishes (float32)."""
    model = build_sequence_model(SequenceConfig(encoder="bilstm", hidden=24, segments=K, text_dim=16, text_fusion="h0"))
    video = dequantize(torch.randint(0, 256, (4, K, 1024), dtype=torch.uint8))
    a, b = model.encode_video(video, torch.randn(4, 16)), model.encode_video(video, torch.randn(4, 16))
    assert torch.allclose(a, b, atol=1e-4)


def test_same_seed_same_initial_weights_and_gcn_graph():
    a = build_sequence_model(SequenceConfig(encoder="gcn", hidden=8), seed=3)
    b = build_sequence_model(SequenceConfig(encoder="gcn", hidden=8), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    adj = temporal_adjacency(5, 1)
    assert torch.allclose(adj, adj.T) and adj[0, 2] == 0 and adj[0, 1] > 0 and "adj" not in a.state_dict()


def test_frames_are_uint8_until_gathered_then_dequantised(synth):
    ds = synth["train"]
    store = load_frames(ds, "rgb", chunk_rows=5)  # chunks that split the rows unevenly
    assert store.flat.dtype == torch.uint8 and store.flat.shape[1] == 1024
    reference = uint8_frames(ds.with_format("arrow")[:]["rgb"], 1024)
    assert store.lengths.tolist() == [len(r) for r in reference] == ds["num_seconds"]
    idx = torch.tensor([3, 0, 7])
    pos = sample_positions(store.lengths[idx], 8, "gs", train=True)
    out = store.gather(idx, pos, torch.device("cpu"))
    assert out.dtype == torch.float32 and out.shape == (3, 8, 1024)
    for b, i in enumerate(idx.tolist()):
        expected = dequantize(reference[i][pos[b].numpy()])
        assert np.allclose(out[b].numpy(), expected)
    assert -2.0 < float(out.min()) and float(out.max()) <= 2.0 + 4 / 512  # q * 4/255 + 4/512 - 2


def test_hashed_text_encoder_is_deterministic_and_cached_by_key(synth, tmp_path):
    enc = HashedNgramEncoder(dim=16, seed=0)
    a = enc(["Song A", "song a", "other words"])
    assert torch.allclose(a[0], a[1]) and not torch.allclose(a[0], a[2])  # lowercased
    assert torch.allclose(a, HashedNgramEncoder(dim=16, seed=0)(["Song A", "song a", "other words"]))
    assert not torch.allclose(a, HashedNgramEncoder(dim=16, seed=1)(["Song A", "song a", "other words"]))
    ds = synth["train"]
    assert texts_of(ds, "keyword")[0] == ", ".join(ds[0]["keywords"])
    messages = []
    first = text_features(enc, ds, "train", "title", tmp_path, "fp:1", log=messages.append)
    again = text_features(enc, ds, "train", "title", tmp_path, "fp:1", log=messages.append)
    assert first.shape == (len(ds), 16) and torch.equal(first, again) and "up to date" in messages[-1]
    other = text_features(
        HashedNgramEncoder(dim=16, seed=2), ds, "train", "title", tmp_path, "fp:1", log=messages.append
    )
    assert "stale" in messages[-1] and "text_weights" in messages[-1] and not torch.equal(other, first)


def test_ii_noise_benchmark_batches_and_a_tiny_run():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ii_noise", Path(__file__).resolve().parents[2] / "benchmarks" / "ii_noise.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    plans = {level: bench.batch_plan(level, 64) for level in bench.LEVELS}
    assert all(sum(p) == 64 for p in plans.values())
    assert [len(p) for p in plans.values()] == [64, 48, 32, 16]  # clusters per batch: fewer = more false negatives
    args = bench.parse(
        [
            "--clusters",
            "16",
            "--pairs-per-cluster",
            "4",
            "--batch-size",
            "8",
            "--steps",
            "5",
            "--seeds",
            "2",
            "--test-sets",
            "1",
            "--hidden",
            "16",
            "--embed",
            "8",
        ]
    )
    body, gains = bench.run(args)
    assert body.count("| most_noise |") == 2 and "The paper's trend" in body and ("most_noise", 3.0) in gains
