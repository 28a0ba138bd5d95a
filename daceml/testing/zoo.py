"""A model zoo of small, hand-written networks (random weights, no downloads).

Each entry gives a module factory and example inputs; tests and benchmarks use them.
Sizes are small so that a compile takes seconds on 2 cores.
"""
import math
from typing import Callable, Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):

    def __init__(self, d_in=32, hidden=64, d_out=10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.LayerNorm(hidden), nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """ResNet basic block with a strided projection shortcut."""

    def __init__(self, cin=8, cout=16, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.down(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1 reduce, 3x3, 1x1 expand) with identity shortcut."""

    def __init__(self, c=16, mid=4):
        super().__init__()
        self.conv1 = nn.Conv2d(c, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + x)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1, depthwise 3x3, project 1x1, ReLU6."""

    def __init__(self, c=8, expand=4):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


class MBConv(nn.Module):
    """EfficientNet MBConv with squeeze-and-excitation and SiLU."""

    def __init__(self, c=8, expand=4, se_ratio=0.25):
        super().__init__()
        h = c * expand
        s = max(1, int(c * se_ratio))
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.SiLU())
        self.se_reduce = nn.Conv2d(h, s, 1)
        self.se_expand = nn.Conv2d(s, h, 1)
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.dw(self.expand(x))
        se = F.adaptive_avg_pool2d(y, 1)
        se = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(se))))
        return x + self.project(y * se)


class BertLayer(nn.Module):
    """A hand-written BERT encoder layer (post-LN, GELU)."""

    def __init__(self, d=32, heads=4, ff=64):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.out(y))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class GPT2Block(nn.Module):
    """A GPT-2 style pre-LN decoder block with a causal mask."""

    def __init__(self, d=32, heads=4, seq=16):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.attn(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        att = att.masked_fill(~self.mask[:s, :s], float("-inf"))
        y = (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyViT(nn.Module):
    """Patch embedding (strided conv), class token, position embedding, one encoder layer, head."""

    def __init__(self, img=16, patch=4, d=32, classes=10):
        super().__init__()
        n = (img // patch)**2
        self.embed = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.layer = BertLayer(d, 4, 2 * d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        p = self.embed(x).flatten(2).transpose(1, 2)
        p = torch.cat([self.cls.expand(x.shape[0], -1, -1), p], dim=1) + self.pos
        return self.head(self.layer(p)[:, 0])


class LSTMModel(nn.Module):

    def __init__(self, d_in=8, hidden=16, classes=4):
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class UNetBlock(nn.Module):
    """U-Net style: down (conv, pool), bottom conv, up (transposed conv), skip concat, conv."""

    def __init__(self, c=4, h=8):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(c, h, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.Conv2d(h, 2 * h, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * h, h, 2, stride=2)
        self.fuse = nn.Conv2d(2 * h, c, 3, padding=1)

    def forward(self, x):
        d = self.down(x)
        b = self.bottom(F.max_pool2d(d, 2))
        return self.fuse(torch.cat([self.up(b), d], dim=1))


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module


#: name -> (factory, input factory)
ZOO: Dict[str, Tuple[Callable[[], nn.Module], Callable[[], Tuple[torch.Tensor, ...]]]] = {
    "mlp": (MLP, lambda: (torch.randn(4, 32), )),
    "lenet": (LeNet, lambda: (torch.randn(2, 1, 28, 28), )),
    "resnet_basic": (BasicBlock, lambda: (torch.randn(2, 8, 8, 8), )),
    "resnet_bottleneck": (Bottleneck, lambda: (torch.randn(2, 16, 8, 8), )),
    "mobilenetv2_block": (InvertedResidual, lambda: (torch.randn(2, 8, 8, 8), )),
    "efficientnet_mbconv": (MBConv, lambda: (torch.randn(2, 8, 8, 8), )),
    "bert_layer": (BertLayer, lambda: (torch.randn(2, 16, 32), )),
    "torch_encoder_layer": (lambda: nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True),
                            lambda: (torch.randn(2, 16, 32), )),
    "gpt2_block": (GPT2Block, lambda: (torch.randn(2, 16, 32), )),
    "vit": (TinyViT, lambda: (torch.randn(2, 3, 16, 16), )),
    "lstm": (LSTMModel, lambda: (torch.randn(2, 6, 8), )),
    "unet_block": (UNetBlock, lambda: (torch.randn(2, 4, 8, 8), )),
}


def make(name: str, seed: int = 0) -> Tuple[nn.Module, Tuple[torch.Tensor, ...]]:
    """The zoo model ``name`` (random weights from ``seed``) and example inputs."""
    factory, inputs = ZOO[name]
    torch.manual_seed(seed)
    module = _randomize(factory(), seed)
    return module, inputs()
