"""Peer pipelines, each run as its own process by bench/run.py so start-up and imports count.

    python bench/peers.py sklearn   DATA   # (b) eager timm features once + scikit-learn LogisticRegression
    python bench/peers.py tutorial  DATA   # (a) PyTorch-tutorial fixed feature extractor: SGD head, 5 epochs
Prints one JSON line: {"val_accuracy": ..., "seconds": ...}.
"""

from __future__ import annotations

import json
import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from transferkit.modalities.image.backbones import load_weights, read_state_dict  # noqa: E402
from transferkit.modalities.image.sources.packaged import PACKAGED  # noqa: E402


def lite0() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    load_weights(model, read_state_dict(PACKAGED["efficientnet_lite0"].path()), "packaged")
    return model.eval()


def loader(root: str, split: str, train: bool) -> torch.utils.data.DataLoader:
    normalize = transforms.Normalize([0.5] * 3, [0.5] * 3)
    if train:  # the tutorial's training transform
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), normalize])
    else:
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize])
    data = datasets.ImageFolder(f"{root}/{split}", tf)
    return torch.utils.data.DataLoader(data, batch_size=32, shuffle=train, num_workers=2)


@torch.inference_mode()
def features(model: torch.nn.Module, data: torch.utils.data.DataLoader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in data:
        xs.append(model(x).numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def sklearn_peer(root: str) -> float:
    from sklearn.linear_model import LogisticRegression

    model = lite0()
    train_x, train_y = features(model, loader(root, "train", False))
    val_x, val_y = features(model, loader(root, "val", False))
    return float(LogisticRegression(max_iter=2000).fit(train_x, train_y).score(val_x, val_y))


def tutorial_peer(root: str, epochs: int = 5) -> float:
    torch.manual_seed(0)
    backbone = lite0()
    for p in backbone.parameters():
        p.requires_grad = False
    head = torch.nn.Linear(backbone.num_features, 2)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    train, val = loader(root, "train", True), loader(root, "val", False)
    best = 0.0
    for _ in range(epochs):
        head.train()
        for x, y in train:
            with torch.no_grad():
                f = backbone(x)
            loss = torch.nn.functional.cross_entropy(head(f), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        vx, vy = features(backbone, val)
        with torch.no_grad():
            best = max(best, float((head(torch.from_numpy(vx)).argmax(1).numpy() == vy).mean()))
    return best


if __name__ == "__main__":
    which, root = sys.argv[1], sys.argv[2]
    accuracy = {"sklearn": sklearn_peer, "tutorial": tutorial_peer}[which](root)
    print(json.dumps({"val_accuracy": accuracy, "seconds": time.perf_counter() - START}))
