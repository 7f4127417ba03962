"""Extraction throughput of EfficientNet-Lite0 at 224 px, end to end from files (decode included).

    python bench/throughput.py DATA_FOLDER [N]
Prints one JSON line with img/s for: decode only, eager torch (NCHW), torch channels_last, transferkit.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from transferkit.modalities.image.backbones import resolve_backbone
from transferkit.modalities.image.features import FeatureSource, extract_features
from transferkit.modalities.image.model import FeatureNet
from transferkit.modalities.image.pipeline import decode_batches


def main(folder: str, limit: int) -> dict[str, float]:
    files = sorted(str(p) for p in Path(folder).rglob("*.jpg"))[:limit]
    spec = resolve_backbone("efficientnet_lite0")
    rates: dict[str, float] = {"images": len(files)}

    start = time.perf_counter()
    for _ in decode_batches(files, spec.preprocessing, 64):
        pass
    rates["decode only"] = len(files) / (time.perf_counter() - start)

    net = FeatureNet(spec.build(), spec.preprocessing).eval()
    for label, layout in (("eager torch (NCHW)", torch.contiguous_format), ("torch channels_last", torch.channels_last)):
        model = net.to(memory_format=layout)
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in decode_batches(files, spec.preprocessing, 32):
                images = torch.from_numpy(batch.images).permute(0, 3, 1, 2).float().div(255)
                model.backbone(((images - model.normalize.mean) / model.normalize.std).contiguous(memory_format=layout))
        rates[label] = len(files) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as cache:
        source = FeatureSource.from_spec(spec)
        extract_features(source, files[:2], cache_dir=cache, use_cache=False, show_progress=False)  # export once
        result = extract_features(source, files, cache_dir=cache, use_cache=False, show_progress=False)
        rates["transferkit (ONNX Runtime)"] = len(files) / result.seconds
    return rates


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400)))
