"""ResNet-20 (the CIFAR-style residual network of the CPU regime preset): shape, size, BN."""

import torch
import torch.nn.functional as F
from torch import nn

from salun.models import build_model, list_archs


def _resnet20(width=1.0, in_channels=1):
    return build_model("resnet20", in_channels=in_channels, num_classes=10, image_size=28,
                       mean=(0.5,) * in_channels, std=(0.25,) * in_channels, width=width)


def _expected_params(c: tuple[int, int, int], cin: int, classes: int) -> int:
    """ResNet-20 counted by hand: stem conv + BN; 3 stages of 3 blocks (two 3×3 convs and two
    BNs each; the first block of stages 2 and 3 adds a 1×1 conv + BN shortcut); linear head."""
    bn = lambda ch: 2 * ch  # noqa: E731 (weight and bias)
    total = 9 * cin * c[0] + bn(c[0])
    prev = c[0]
    for ch in c:
        for j in range(3):
            first_in = prev if j == 0 else ch
            total += 9 * first_in * ch + bn(ch) + 9 * ch * ch + bn(ch)
            if j == 0 and first_in != ch:
                total += first_in * ch + bn(ch)
        prev = ch
    return total + c[2] * classes + classes


def test_resnet20_is_registered_and_has_the_hand_counted_size():
    assert "resnet20" in list_archs()
    m = _resnet20()
    assert sum(p.numel() for p in m.parameters()) == _expected_params((16, 32, 64), 1, 10)
    half = _resnet20(width=0.5, in_channels=3)
    assert sum(p.numel() for p in half.parameters()) == _expected_params((8, 16, 32), 3, 10)


def test_resnet20_has_20_weighted_layers_and_downsamples_twice():
    m = _resnet20()
    convs3 = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3)]
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(convs3) + len(linears) == 20  # 1 stem + 18 in blocks + the head
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 1 + 18 + 2
    # 28 → 28 → 14 → 7 spatially: the body before pooling ends at 64 × 7 × 7
    body = m.features[:-2]
    assert body(m.normalize(torch.rand(2, 1, 28, 28))).shape == (2, 64, 7, 7)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_resnet20_trains_one_step_and_updates_batchnorm_statistics():
    torch.manual_seed(0)
    m = _resnet20(width=0.5)
    bn = m.features[1]
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    mean0 = bn.running_mean.clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    m.train()
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    opt.step()
    changed = [n for n, p in m.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # every parameter received a gradient step
    assert not torch.equal(bn.running_mean, mean0)
    # eval mode uses the running statistics: two identical inputs, batch-independent outputs
    m.eval()
    with torch.no_grad():
        single = m(x[:1])
        batch = m(x)
    assert torch.allclose(single, batch[:1], atol=1e-5)
