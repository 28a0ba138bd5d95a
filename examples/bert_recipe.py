"""The BERT-base encoder layer (B=8, S=128, H=768, 12 heads, GELU, post-LayerNorm) through
daceml's pipeline, pass by pass.

usage: python examples/bert_recipe.py [--threads 2] [--rounds 10] [--verify]

What the default pipeline does to it (the printed table says how much of each):
- level 1: the exporter's weight transposes fold into the GEMMs (transB), MatMul + bias Add
  become Gemm nodes, transpose chains merge, shape computations become constants;
- level 2: GEMMs and batched MatMuls go to oneMKL; GELU and the residual Adds become part of
  the GEMM before them (FuseEpilogues); the attention's head transposes become strides of the
  batched GEMMs (FoldTransposesIntoMatMul); softmax and LayerNorm are one pass per row;
- level 3: everything inlined into one state, elementwise maps fused;
- level 4: reshapes become views, transients are allocated once per program.

Hand-tuned hooks: none. The default choices are the ones measured best on this machine
(`python examples/gemm_libraries.py`); a per-node choice would go into ``hand_tuned`` here,
e.g. ``node.implementation = "blas"`` for one MatMul.
"""
import torch

from daceml.testing.bench_models import BertEncoderLayer
from recipe_common import arguments, run_recipe

if __name__ == "__main__":
    args = arguments(__doc__)
    torch.manual_seed(0)
    run_recipe("recipe_bert_layer", BertEncoderLayer(), torch.randn(8, 128, 768), args)
