"""The network: a timm backbone's pooled features feed a linear (or ArcFace) classifier and an embedding head.

Neither head holds a BatchNorm: with thousands of classes and small per-process batches, BN statistics in
the classifier made the old system's validation loss explode (see the seed's QUICK_FIX_GUIDE, fix #3).
"""

from __future__ import annotations

import difflib
import math

import timm
import timm.optim
import torch
import torch.nn.functional as F
from torch import nn

from glyph_train.errors import GlyphTrainError


def check_model_name(model_name: str) -> None:
    """Refuse a name timm cannot build, suggesting the closest ones (checked before any data is rendered)."""
    source, name = timm.models.parse_model_name(model_name)
    if source is not None or timm.is_model(name):  # hf-hub:/local-dir: models are resolved by timm itself
        return
    names = timm.list_models()
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[n] for n in difflib.get_close_matches(name.lower(), by_lower, n=5, cutoff=0.6)]
    every = f"one of the {len(names)} names in timm.list_models()"
    hint = f"did you mean {', '.join(close)}? (or {every})" if close else f"choose {every}"
    raise GlyphTrainError(f"--model {model_name!r} is not a timm model; {hint}")


def create_backbone(model_name: str, img_size: int, pretrained: bool = False, in_chans: int = 1) -> nn.Module:
    """A timm model with `in_chans` input channels (one per fit) and no classifier: calling it yields pooled
    features."""
    check_model_name(model_name)
    kwargs = dict(pretrained=pretrained, in_chans=in_chans, num_classes=0)
    try:  # transformers (ViT, LeViT, ...) build position tables for a fixed input size
        return timm.create_model(model_name, img_size=img_size, **kwargs)
    except TypeError as err:  # convnets take any size and reject the keyword
        if "img_size" not in str(err):
            raise
        return timm.create_model(model_name, **kwargs)


class ArcFaceHead(nn.Module):
    """Additive angular margin (Deng et al. 2019): logits s·cos(θ_y + m) for the target class, s·cos θ elsewhere."""

    def __init__(self, in_features: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale
        # Past θ = π - m, cos(θ + m) stops decreasing in θ; there the usual linear extension cos θ - m·sin m
        # keeps the target logit monotonic (insightface's th / mm).
        self.threshold = math.cos(math.pi - margin)
        self.linear_penalty = math.sin(math.pi - margin) * margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # fp32 even under bf16 autocast: a bf16 cosine is off by ~0.004, i.e. 0.1 logit at scale 30
        with torch.autocast(features.device.type, enabled=False):
            cos = F.linear(F.normalize(features.float()), F.normalize(self.weight.float()))
        if labels is None:
            return self.scale * cos
        cos_t = cos.gather(1, labels[:, None])
        sin_t = (1.0 - cos_t.square()).clamp_min(1e-12).sqrt()  # clamp: d/dx sqrt is infinite at 0
        phi = cos_t * math.cos(self.margin) - sin_t * math.sin(self.margin)
        phi = torch.where(cos_t > self.threshold, phi, cos_t - self.linear_penalty)
        return self.scale * cos.scatter(1, labels[:, None], phi)

    def extra_repr(self) -> str:
        num_classes, in_features = self.weight.shape
        return f"{in_features=}, {num_classes=}, margin={self.margin}, scale={self.scale}"


class GlyphModel(nn.Module):
    """Backbone → pooled features → {classifier logits, L2-normalised embedding}.

    With `arcface_margin > 0` the classifier is an `ArcFaceHead`: the margin is added only when `labels` are
    passed to `forward` (training); without labels the logits are `scale·cos θ`, usable for top-k.
    `self.config` holds the constructor arguments, so `GlyphModel(**model.config)` rebuilds the architecture.
    """

    def __init__(
        self,
        model_name: str = "levit_128s",
        num_classes: int = 1,
        embedding_dim: int = 128,
        img_size: int = 128,
        arcface_margin: float = 0.0,
        arcface_scale: float = 30.0,
        dropout: float = 0.1,
        pretrained: bool = False,
        in_chans: int = 1,
    ):
        super().__init__()
        self.config = dict(model_name=model_name, num_classes=num_classes, embedding_dim=embedding_dim,
                           img_size=img_size, arcface_margin=arcface_margin, arcface_scale=arcface_scale,
                           dropout=dropout, in_chans=in_chans)
        self.backbone = create_backbone(model_name, img_size, pretrained, in_chans)
        # what pre_logits yields: models with a head conv after pooling (MobileNetV3, EfficientNet-X)
        # yield head_hidden_size features, not num_features
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        if arcface_margin > 0.0:
            self.classifier: nn.Module = ArcFaceHead(width, num_classes, arcface_margin, arcface_scale)
        else:
            self.classifier = nn.Linear(width, num_classes)
            nn.init.trunc_normal_(self.classifier.weight, std=0.02)
            nn.init.zeros_(self.classifier.bias)
        self.embedding_head = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, embedding_dim)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # pre_logits: timm's pooled features, skipping whatever head the model family has (LeViT has two)
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.features(x)
        if isinstance(self.classifier, ArcFaceHead):
            logits = self.classifier(features, labels)
        else:
            logits = self.classifier(features)
        embedding = F.normalize(self.embedding_head(features), dim=-1)
        return {"logits": logits, "embedding": embedding, "features": features}


def param_groups(model: GlyphModel, lr_backbone: float, lr_head: float, weight_decay: float) -> list[dict]:
    """Optimizer groups: backbone vs heads (own LR), each split into decay / no-decay.

    No decay for biases and 1-D tensors (norm scales), for LeViT's `attention_biases`, and for whatever the
    timm model lists in `no_weight_decay()` (position embeddings, class tokens). Each group carries a
    `name` (backbone|heads _ decay|no_decay) for logging; empty groups are left out.
    """
    skip = set(getattr(model.backbone, "no_weight_decay", lambda: ())())
    skip |= {n for n, _ in model.backbone.named_parameters() if "attention_biases" in n}  # exact names: any timm
    heads = nn.ModuleList([model.classifier, model.embedding_head])  # a view: the modules are shared, not copied
    groups = []
    for part, module, lr in (("backbone", model.backbone, lr_backbone), ("heads", heads, lr_head)):
        for group in timm.optim.param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip):
            decay = "decay" if group["weight_decay"] else "no_decay"
            groups.append({**group, "lr": lr, "name": f"{part}_{decay}"})
    return groups
