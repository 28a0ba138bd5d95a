"""Passes of the four-level lowering pipeline, and ``optimize``."""
from daceml.transformation.pipeline import OptimizationReport, VerificationError, describe, optimize, pipeline

__all__ = ["optimize", "pipeline", "describe", "OptimizationReport", "VerificationError"]
