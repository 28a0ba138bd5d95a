"""Data movement and FLOPs: per node and edge (dataflow), per level with the lower bound and
the roofline position (movement)."""
from daceml.analysis.movement import MovementReport, kernel_traffic, lower_bound, machine_peaks, movement_report

__all__ = ["MovementReport", "kernel_traffic", "lower_bound", "machine_peaks", "movement_report"]
