"""GlyphModel: heads, ArcFace margin, gradient flow of each loss term, parameter groups.

The tiny backbone is timm's `test_vit` at 32 px (0.27M parameters, ~7 ms per forward+backward of 16 images
on 2 CPU threads; LayerNorm, no BatchNorm). levit_128s, the default, is checked for its pooled output.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glyph_train.model.network import ArcFaceHead, GlyphModel, param_groups
from glyph_train.training.losses import supcon_loss


def tiny(**kwargs):
    torch.manual_seed(0)
    return GlyphModel("test_vit", num_classes=5, img_size=32, dropout=0.0, **kwargs)


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 1, 32, 32, generator=g), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])


def _norm_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_levit_gives_pooled_features_and_heads_have_no_batchnorm():
    model = GlyphModel("levit_128s", num_classes=7, img_size=64)
    assert all(isinstance(h, nn.Identity) for h in model.backbone.get_classifier())  # LeViT's BN heads gone
    out = model.eval()(torch.rand(2, 1, 64, 64))
    assert out["features"].shape == (2, model.backbone.num_features) == (2, 384)
    assert out["logits"].shape == (2, 7) and out["embedding"].shape == (2, 128)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2), atol=1e-5)
    assert isinstance(model.classifier, nn.Linear)
    assert not _norm_layers(model.classifier) and not _norm_layers(model.embedding_head)
    assert not _norm_layers(GlyphModel("levit_128s", num_classes=7, img_size=64, arcface_margin=0.3).classifier)


def test_convnet_without_img_size_and_config_rebuilds():
    model = GlyphModel("test_convnext", num_classes=3, img_size=48, embedding_dim=16)
    assert model(torch.rand(2, 1, 48, 48))["embedding"].shape == (2, 16)
    rebuilt = GlyphModel(**model.config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def _grad_parts(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()

    def reached(module):
        grads = [p.grad for p in module.parameters()]
        return [g is not None and bool(g.abs().sum() > 0) for g in grads]

    return {part: reached(getattr(model, part)) for part in ("backbone", "classifier", "embedding_head")}


@pytest.mark.parametrize("arcface_margin", [0.0, 0.3])
def test_each_loss_term_reaches_its_parts(arcface_margin):
    model = tiny(arcface_margin=arcface_margin)
    x, y = _batch()
    ce = _grad_parts(model, F.cross_entropy(model(x, y)["logits"], y))
    assert all(ce["backbone"]) and all(ce["classifier"]) and not any(ce["embedding_head"])
    con = _grad_parts(model, supcon_loss(model(x, y)["embedding"], y, 0.1))
    assert all(con["backbone"]) and all(con["embedding_head"]) and not any(con["classifier"])


def test_arcface_adds_the_angular_margin():
    head = ArcFaceHead(in_features=4, num_classes=3, margin=0.5, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4) * 2.0)  # any length: weights are normalised
    theta = 0.7
    features = torch.tensor([[math.cos(theta), math.sin(theta), 0.0, 0.0]]) * 5.0
    plain = head(features)
    assert torch.allclose(plain, 30.0 * torch.tensor([[math.cos(theta), math.sin(theta), 0.0]]), atol=1e-5)
    margin = head(features, torch.tensor([0]))
    assert margin[0, 0].item() == pytest.approx(30.0 * math.cos(theta + 0.5), abs=1e-4)
    assert (plain[0, 0] - margin[0, 0]).item() == pytest.approx(30.0 * (math.cos(theta) - math.cos(theta + 0.5)), abs=1e-4)
    assert torch.equal(margin[0, 1:], plain[0, 1:])  # other classes untouched
    # beyond θ = π - m the target logit keeps falling (linear extension) instead of rising again
    angles = torch.linspace(2.4, 3.1, 8)
    far = head(torch.stack([angles.cos(), angles.sin(), 0 * angles, 0 * angles], 1), torch.zeros(8, dtype=torch.long))
    assert (far[1:, 0] < far[:-1, 0]).all()


def test_arcface_model_uses_margin_only_with_labels():
    model = tiny(arcface_margin=0.3).eval()
    x, y = _batch()
    plain, margin = model(x)["logits"], model(x, y)["logits"]
    assert plain.abs().max() <= 30.0 + 1e-4
    target = torch.arange(8), y
    assert (margin[target] < plain[target]).all()
    margin[target] = plain[target]
    assert torch.allclose(margin, plain)


def test_param_groups_split_lr_and_decay():
    model = GlyphModel("levit_128s", num_classes=7, img_size=64)
    groups = param_groups(model, lr_backbone=1e-3, lr_head=3e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    for g in groups:
        part, decay = g["name"].split("_", 1)
        assert g["lr"] == (1e-3 if part == "backbone" else 3e-3)
        assert g["weight_decay"] == (0.05 if decay == "decay" else 0.0)
        for p in g["params"]:
            n = names[id(p)]
            assert n.startswith("backbone.") == (part == "backbone")
            no_decay = p.ndim <= 1 or n.endswith(".bias") or "attention_biases" in n
            assert no_decay == (decay == "no_decay"), n
    assert any("attention_biases" in n for n in seen)
    torch.optim.AdamW(groups)  # the groups are valid optimizer input


def test_param_groups_honour_timm_no_weight_decay():
    model = tiny()
    groups = param_groups(model, 1e-3, 1e-3, 0.05)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.backbone.pos_embed) in no_decay and model.backbone.pos_embed.ndim == 3


def test_backbones_with_a_head_conv_after_pooling_build():
    """MobileNetV3's pre-logits features are its head conv's 1024/1280, not num_features: the heads must take
    those (a shape mismatch at the first forward, before)."""
    model = GlyphModel("mobilenetv3_small_050", num_classes=7, embedding_dim=16, img_size=32)
    out = model(torch.zeros(2, 1, 32, 32))
    assert out["logits"].shape == (2, 7) and out["embedding"].shape == (2, 16)


def test_two_channel_input():
    model = GlyphModel("resnet10t", num_classes=3, embedding_dim=8, img_size=32, in_chans=2)
    assert model.config["in_chans"] == 2
    assert model(torch.zeros(2, 2, 32, 32))["logits"].shape == (2, 3)
