"""An EfficientNet-B0 MBConv block (24 channels, expansion 6, 3x3 depthwise, squeeze-excitation,
residual; batch 8 at 56x56, BatchNorm with non-trivial statistics) through daceml's pipeline,
pass by pass.

usage: python examples/mbconv_recipe.py [--threads 2] [--rounds 10] [--verify]

What the default pipeline does to it (the printed table says how much of each):
- level 1: nothing to do here: the exporter (``torch.onnx.export(..., dynamo=True)`` on an
  eval-mode module) has already folded the three BatchNorms into the conv weights; a graph that
  keeps BatchNormalization nodes gets them folded by FoldBatchNormIntoConv, and the folded
  weights are then computed by a prep program only when a parameter changes
  (HoistWeightComputations, level 2);
- level 2: the 1x1 convs with many input channels go to oneMKL, the others and the depthwise
  conv to the direct kernel; every SiLU (Sigmoid + Mul) and the residual Add become part of
  the conv before them, the squeeze-excitation scale a per-image scale of the project conv's
  weights (FuseEpilogues: 9 nodes into 5 convs); the depthwise conv pads each channel in its
  own buffer;
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
