"""The network and its export: what training builds and evaluation and inference load.

    network.py  GlyphModel: a timm backbone, a linear or ArcFace classifier and an embedding head
    export.py   the inference export on disk (safetensors weights, labels.json, config.json): writer and reader
"""
