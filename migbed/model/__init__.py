"""The analytical model: QEMU's pre-copy switchover with a slow-loading VFIO device.

Pure (no I/O, no clock): a scenario in, per-policy predictions out, fast enough to scan
a thousand sweep cells in a second (~0.3 ms of CPU per cell and policy).
``predict(scenario, policies, params)``.
"""

from migbed.model.inputs import DEFAULT_WIRE_RATE, ModelParams, inputs_from
from migbed.model.precopy import Outcome, simulate
from migbed.model.predict import CellPrediction, predict, predict_inputs

__all__ = ["DEFAULT_WIRE_RATE", "CellPrediction", "ModelParams", "Outcome", "inputs_from",
           "predict", "predict_inputs", "simulate"]
