"""Test helpers: single-node ONNX models, comparison against onnxruntime."""
