"""HG-CLIM model library and embedding cache (CPU, tiny random encoders, no downloads)."""

from __future__ import annotations

import pytest
import torch

from baselines.data.embedding_cache import load_or_build, make_key
from baselines.models import HGCLIM, ModelConfig, WeightsError, build_model
from baselines.models.encoders import load_music_weights

B = 4


@pytest.fixture(scope="module")
def tiny() -> HGCLIM:
    return build_model(ModelConfig(preset="tiny"))


def _inputs(model: HGCLIM, n: int = B):
    size = model.image_encoder.data_config["input_size"]
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *size, generator=g), 0.1 * torch.randn(n, 320_000, generator=g)


def test_tiny_shapes_dtypes_and_normalised_projection(tiny):
    images, audio = _inputs(tiny)
    tiny.eval()
    with torch.inference_mode():
        v, m, raw_v, raw_m = tiny(images=images, audio=audio)
    assert v.shape == (B, 256) and m.shape == (B, 256)
    assert raw_v.shape == (B, tiny.image_encoder.out_dim) and raw_m.shape == (B, tiny.music_encoder.out_dim)
    assert v.dtype == m.dtype == torch.float32
    torch.testing.assert_close(v.norm(dim=1), torch.ones(B))
    torch.testing.assert_close(m.norm(dim=1), torch.ones(B))
    # the cached path (features in) gives the same embeddings as the full forward
    with torch.inference_mode():
        v2, m2, _, _ = tiny(raw_v=raw_v, raw_m=raw_m)
    torch.testing.assert_close(v2, v)
    torch.testing.assert_close(m2, m)


def test_bf16_autocast_keeps_the_mel_front_end_in_fp32(tiny):
    """The GPU path encodes under bf16 autocast; CPU autocast exercises the same code."""
    images, audio = _inputs(tiny, 2)
    tiny.eval()
    seen = []
    hook = tiny.music_encoder.mel.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].dtype, out.dtype)))
    try:
        with torch.inference_mode():
            reference = tiny.music_encoder(audio)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = tiny.music_encoder(audio)
                v, m, _, _ = tiny(images=images, audio=audio)
    finally:
        hook.remove()
    assert all(dtypes == (torch.float32, torch.float32) for dtypes in seen)
    assert v.dtype == m.dtype == torch.float32  # projections normalised in fp32
    assert torch.nn.functional.cosine_similarity(mixed.float(), reference).min() > 0.99


def test_same_config_same_random_encoders():
    a, b = build_model(ModelConfig(preset="tiny")), build_model(ModelConfig(preset="tiny"))
    c = build_model(ModelConfig(preset="tiny", init_seed=1))
    sa, sb, sc = (x.music_encoder.state_dict() for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_frozen_encoders_get_no_grad_and_stay_in_eval(tiny):
    images, audio = _inputs(tiny)
    tiny.train()
    assert tiny.image_proj.training and tiny.music_proj.training
    # PaSST's mel front-end jitters / masks in train mode: the wrapper must stay in eval
    assert not tiny.music_encoder.training and not tiny.music_encoder.mel.training
    assert not tiny.music_encoder.net.training and not tiny.image_encoder.model.training
    assert all(not m.training for m in tiny.music_encoder.modules())
    v, m, _, _ = tiny(images=images, audio=audio)
    (v * m).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in tiny.image_encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in tiny.music_encoder.parameters())
    assert all(p.grad is not None for p in tiny.image_proj.parameters())
    tiny.zero_grad(set_to_none=True)
    tiny.eval()


def test_finetune_last_unfreezes_last_stages_only():
    model = build_model(ModelConfig(preset="tiny", finetune_last=1))
    assert not model.encoders_frozen
    net = model.music_encoder.net
    assert all(p.requires_grad for p in net.blocks[-1].parameters())
    assert not any(p.requires_grad for p in net.blocks[0].parameters())
    assert all(p.requires_grad for p in model.image_encoder.model.stages[-1].parameters())
    assert not any(p.requires_grad for p in model.image_encoder.model.stages[0].parameters())
    model.train()
    assert net.blocks[-1].training and not net.blocks[0].training
    assert not model.music_encoder.mel.training  # never: no mel augmentation on a frozen front-end
    # frozen params are left out of checkpoints, fine-tuned ones are kept
    frozen = model.frozen_param_names()
    assert any(n.startswith("music_encoder.net.blocks.0.") for n in frozen)
    assert not any(n.startswith("music_encoder.net.blocks.1.") for n in frozen)


def test_missing_weights_file_is_one_line_naming_the_flag(tmp_path):
    with pytest.raises(WeightsError) as err:
        build_model(
            ModelConfig(
                image_weights=str(tmp_path / "nowhere" / "convnext.safetensors"),
                music_weights=str(tmp_path / "passt.pt"),
            )
        )
    message = str(err.value)
    assert message.startswith("--image-weights") and "convnext.safetensors" in message
    assert str(tmp_path) not in message and "\n" not in message


def test_full_preset_refuses_without_weights_unless_random_init():
    with pytest.raises(WeightsError, match="--random-init"):
        build_model(ModelConfig(preset="full"))
    with pytest.raises(WeightsError, match="--preset tiny"):
        build_model(ModelConfig(preset="tiny", image_weights=__file__))


def test_image_weights_load_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    path = tmp_path / "atto.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    cfg = ModelConfig(image_arch="convnext_atto", image_weights=str(path), random_init=True, proj_hidden=32)
    model = build_model(cfg)
    assert model.image_encoder.weights_id.startswith("sha256:")
    assert model.music_encoder.weights_id == "random:0"
    loaded = model.image_encoder.model.state_dict()
    assert torch.equal(loaded["stem.0.weight"], src.state_dict()["stem.0.weight"])
    # a checkpoint of another architecture is refused with one line
    timm_other = timm.create_model("convnext_femto", pretrained=False)
    bad = tmp_path / "femto.safetensors"
    save_file({k: v.contiguous() for k, v in timm_other.state_dict().items()}, str(bad))
    with pytest.raises(WeightsError, match="--image-weights: 'femto.safetensors'"):
        build_model(ModelConfig(image_arch="convnext_atto", image_weights=str(bad), random_init=True))


def test_music_weights_strict_loading_lists_missing_keys(tmp_path, tiny):
    net = tiny.music_encoder.net
    good = tmp_path / "passt.pt"
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, good)  # wrapper-style prefix accepted
    target = build_model(ModelConfig(preset="tiny", init_seed=5)).music_encoder.net
    load_music_weights(target, good)
    assert torch.equal(target.cls_token, net.cls_token)
    state = dict(net.state_dict())
    del state["blocks.1.attn.qkv.weight"]
    bad = tmp_path / "partial.pt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(WeightsError, match=r"missing 1 keys: blocks\.1\.attn\.qkv\.weight"):
        load_music_weights(target, bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read 'junk.pt'"):
        load_music_weights(target, junk)


def test_cache_key_tracks_weights_preprocessing_and_data(tiny):
    key = make_key(tiny, "train", "fp:10")
    other_seed = build_model(ModelConfig(preset="tiny", init_seed=1))
    assert make_key(other_seed, "train", "fp:10")["music_weights"] == "random:1" != key["music_weights"]
    assert make_key(tiny, "train", "fp:11") != key
    original = dict(tiny.image_encoder.data_config)
    try:
        tiny.image_encoder.data_config["crop_pct"] = 0.875
        changed = make_key(tiny, "train", "fp:10")
    finally:
        tiny.image_encoder.data_config.clear()
        tiny.image_encoder.data_config.update(original)
    assert changed["image_preprocessing"] != key["image_preprocessing"]
    assert make_key(tiny, "train", "fp:10") == key


def test_stale_cache_is_rebuilt_never_reused(tmp_path):
    calls, messages = [], []

    def build(value):
        def _build():
            calls.append(value)
            return {"raw_v": torch.full((3, 2), value), "raw_m": torch.full((3, 4), value)}

        return _build

    key = {"split": "train", "image_weights": "sha256:aaa", "image_preprocessing": {"input_size": [3, 64, 64]}}
    first = load_or_build(tmp_path, "train", key, build(1.0), log=messages.append)
    again = load_or_build(tmp_path, "train", dict(key), build(2.0), log=messages.append)
    assert calls == [1.0] and torch.equal(again["raw_v"], first["raw_v"]) and "up to date" in messages[-1]
    stale = dict(key, image_weights="sha256:bbb")
    rebuilt = load_or_build(tmp_path, "train", stale, build(3.0), log=messages.append)
    assert calls == [1.0, 3.0] and float(rebuilt["raw_v"][0, 0]) == 3.0
    assert "stale" in messages[-1] and "image_weights" in messages[-1]
    (tmp_path / "train.pt").write_bytes(b"truncated")
    load_or_build(tmp_path, "train", stale, build(4.0), log=messages.append)
    assert calls[-1] == 4.0
