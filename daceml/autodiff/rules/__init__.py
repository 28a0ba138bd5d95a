"""Gradient rules, one module per op family (imported by :mod:`daceml.autodiff.registry`)."""
