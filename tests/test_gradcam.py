import numpy as np
import torch
from torch import nn

from matryoshka.eval import gradcam_per_size
from matryoshka.models import SmallCNN
from matryoshka.nn import MatryoshkaHead, MatryoshkaModel


class PoolNet(nn.Module):
    """1x1 conv copying the channels, then global average pooling: (B, 3, H, W) -> (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage3 = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.stage3.weight.copy_(torch.eye(3)[:, :, None, None])

    def forward(self, x):
        return self.stage3(x).mean(dim=(2, 3))


def test_gradcam_finds_where_the_class_evidence_is():
    head = MatryoshkaHead(3, 2, [1, 3], efficient=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, 0] = 1.0  # class 0 reads channel 0
    model = MatryoshkaModel(PoolNet(), head)
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, :4, :4] = 1.0  # evidence in the top-left quadrant only
    cams = gradcam_per_size(model, x, [1, 3], target=torch.tensor([0]))
    assert cams.shape == (1, 2, 8, 8)
    for s in range(2):
        cam = cams[0, s]
        assert cam.max() == 1.0
        assert cam[:4, :4].mean() > 5 * cam[4:, 4:].mean()


def test_gradcam_shapes_on_small_cnn():
    torch.manual_seed(0)
    dims = [4, 8, 16]
    model = MatryoshkaModel(SmallCNN(16, width=8), MatryoshkaHead(16, 10, dims))
    cams = gradcam_per_size(model, torch.randn(3, 3, 32, 32), dims)
    assert cams.shape == (3, 3, 32, 32)
    assert np.all(cams >= 0) and np.all(cams <= 1 + 1e-6)
    assert model.training  # the caller's mode is restored
