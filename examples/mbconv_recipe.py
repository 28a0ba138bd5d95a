"""An EfficientNet-B0 MBConv block (24 channels, expansion 6, 3x3 depthwise, squeeze-excitation,
residual; batch 8 at 56x56, BatchNorm with non-trivial statistics) through daceml's pipeline,
pass by pass.

usage: python examples/mbconv_recipe.py [--threads 2] [--rounds 10] [--verify]

What the default pipeline does to it (the printed table says how much of each):
- level 1: the three BatchNorms fold into the convolutions before them (weights and biases
  computed from the live parameters);
- level 2: those folded weights are hoisted into a prep program that runs only when a
  parameter changes; the 1x1 convs with many input channels go to oneMKL, the others and the
  depthwise conv to the direct kernel; every SiLU (Sigmoid + Mul) and the residual Add become
  part of the conv before them, the squeeze-excitation scale a per-image scale of the project
  conv's weights (FuseEpilogues); the depthwise conv pads each channel in its own buffer;
- level 3: inlined, the remaining elementwise maps fused;
- level 4: transients allocated once per program.

Hand-tuned hooks: none; ``hand_tuned`` in run_recipe is where one would pin an implementation
(``node.implementation = "pure"``) or run a DaCe transformation on the imported graph.
"""
import torch

from daceml.testing.bench_models import MBConvBlock, randomize_batchnorm
from recipe_common import arguments, run_recipe

if __name__ == "__main__":
    args = arguments(__doc__)
    torch.manual_seed(0)
    block = MBConvBlock(24, 24, 6, 3, 1).eval()
    randomize_batchnorm(block)
    run_recipe("recipe_mbconv_block", block, torch.randn(8, 24, 56, 56), args)
