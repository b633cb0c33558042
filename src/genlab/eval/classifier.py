"""The feature network of genlab's sample-quality metrics: a small CNN trained on the data set itself.

Inception features describe ImageNet photos, not 28x28 grey clothing; a classifier trained on the
data set's own training split gives features and class probabilities that mean something here
(as in the "FID with a domain classifier" practice for MNIST-like data). Its weights ship with
genlab; `genlab classifier` retrains them with a fixed seed.
"""

from __future__ import annotations

import hashlib
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from genlab.data import epoch_order, to_float
from genlab.errors import GenlabError
from genlab.io import atomic_write

FEATURE_DIM = 256
SHIPPED = {"fashion-mnist": "classifier-fashion-mnist.safetensors", "mnist": "classifier-mnist.safetensors"}


class FeatureClassifier(nn.Module):
    """28x28x1 -> 256-d features -> 10 logits. Three conv blocks (32, 64, 128 channels), one hidden layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()

        def block(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))

        self.conv = nn.Sequential(block(in_channels, 32), block(32, 64), block(64, 128))  # 28 -> 14 -> 7 -> 3
        self.fc = nn.Linear(128 * 3 * 3, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, 256) post-ReLU features: the space of the Frechet distance."""
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def weights_sha256(weights: dict[str, Tensor]) -> str:
    """SHA-256 of the tensors themselves (name, dtype, shape, bytes in name order).

    Not of the file: safetensors writes its metadata header in no fixed order, so two saves of
    the same weights can differ byte for byte.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shipped_path(dataset: str) -> Path | None:
    """The packaged weights for a built-in data set, if genlab ships them."""
    name = SHIPPED.get(dataset)
    if name is None:
        return None
    path = Path(str(resources.files("genlab") / "assets" / name))
    return path if path.is_file() else None


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[FeatureClassifier, dict[str, str]]:
    """(classifier in eval mode, its metadata incl. sha256) from a safetensors file."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        weights = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise GenlabError(f"{path}: not a genlab classifier ({e}); retrain it with `genlab classifier`") from None
    model = FeatureClassifier()
    model.load_state_dict(weights)
    meta["sha256"] = weights_sha256(weights)
    meta["path"] = str(path)
    return model.to(device).eval(), meta


@torch.no_grad()
def accuracy(model: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(to_float(images[i : i + batch_size]))
        correct += (logits.argmax(1) == labels[i : i + batch_size]).sum().item()
    return correct / len(images)


def train_classifier(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    out: str | Path,
    dataset: str,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    log=print,
) -> dict[str, str]:
    """Train with a fixed seed and data order, write safetensors with metadata; return the metadata."""
    torch.manual_seed(seed)
    model = FeatureClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(train_images) // batch_size))
    started = time.monotonic()
    for epoch in range(epochs):
        model.train()
        order = epoch_order(len(train_images), seed, epoch)
        steps = len(train_images) // batch_size
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(to_float(train_images[idx])), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if epoch == 0 and i == min(49, steps - 1) and steps > 100:  # the cost up front, from the first 50 steps
                per_epoch = (time.monotonic() - started) / (i + 1) * steps
                log(f"classifier: ~{per_epoch:.0f} s an epoch on this machine, ~{per_epoch * epochs / 60:.1f} min for {epochs}")
        acc = accuracy(model, test_images, test_labels)
        log(f"classifier epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f} ({time.monotonic() - started:.0f}s)")
    meta = {
        "dataset": dataset,
        "test_accuracy": f"{acc:.4f}",
        "epochs": str(epochs),
        "seed": str(seed),
        "batch_size": str(batch_size),
        "lr": str(lr),
        "torch": torch.__version__,
        "feature_layer": f"fc post-ReLU, {FEATURE_DIM}-d",
    }
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    data = save(weights, metadata=meta)
    atomic_write(out, lambda f: f.write(data))
    meta["sha256"] = weights_sha256(weights)
    return meta
