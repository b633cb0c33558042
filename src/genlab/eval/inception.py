"""Standard Inception FID through pytorch-fid (optional extra `genlab[inception]`).

It needs torchvision and the FID Inception weights (downloaded on first use). Where either is
missing this says so in one line and the rest of the evaluation stands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def inception_fid(fake: Tensor, real: Tensor, batch_size: int = 100) -> float | str:
    """FID between two image sets in [-1, 1] in pool3 features of the FID Inception net, or why not."""
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
        from pytorch_fid.inception import InceptionV3

        net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    except Exception as e:  # ImportError, torchvision op failures, no network for the weights
        return f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}".strip()

    def stats(images: Tensor):
        feats = []
        for i in range(0, len(images), batch_size):
            x = (images[i : i + batch_size].float() + 1) / 2  # pytorch-fid takes [0, 1]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            feats.append(net(x)[0].flatten(1))
        f = torch.cat(feats).double().numpy()
        return f.mean(0), __import__("numpy").cov(f, rowvar=False)

    return float(calculate_frechet_distance(*stats(fake), *stats(real)))
