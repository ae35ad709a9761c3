import pytest
import torch

from matryoshka.models import MLP, SmallCNN, backbone_blocks, build_backbone, resnet


def test_mlp_and_small_cnn_shapes():
    assert MLP(64, 16, hidden=(32,))(torch.randn(3, 1, 8, 8)).shape == (3, 16)
    cnn = SmallCNN(24, width=8)
    assert cnn(torch.randn(2, 3, 32, 32)).shape == (2, 24)
    blocks = backbone_blocks(cnn)
    assert blocks[0] is cnn.stage1 and blocks[2][1] is cnn.proj


@pytest.mark.parametrize("d", [None, 48])
def test_resnet18_cifar_stem(d):
    pytest.importorskip("torchvision")
    net = resnet("resnet18", d=d, cifar_stem=True)
    assert net.net.conv1.kernel_size == (3, 3)
    assert isinstance(net.net.maxpool, torch.nn.Identity)
    z = net.eval()(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 512 if d is None else d)
    blocks = backbone_blocks(net)
    assert len(blocks) == 5
    assert blocks[4][0] is net.net.layer4 and blocks[4][1] is net.proj


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", 8)
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match="unknown ResNet 'resnet7'"):
        resnet("resnet7")
