"""A policy that is not migbed's: registered on import, as MIGBED_POLICY_MODULES modules are.

"target-loaded" is legacy, and waits until the destination reports every device's initial
data loaded (DeviceLoadProgress.initial_loaded), without negotiating switchover-ack: a rule
that reads the target's load progress from the Observation, which the engine fills from the
return path and the model from its destination. Tests import it through the
`registered_policy` fixture (tests/conftest.py), which removes it again afterwards, and
name it in MIGBED_POLICY_MODULES for the processes they start.
"""

from __future__ import annotations

from migbed.core.policy import Decision, Observation, Policy, register_policy

NAME = "target-loaded"
REASON = "every device's initial data loaded on the target"


class TargetLoaded(Policy):
    name = NAME
    needs_ack = False

    def decide(self, obs: Observation) -> Decision:
        d = self._legacy(obs)
        waiting = [x.name for x in obs.devices if not x.target.initial_loaded]
        if not d.go:
            return d
        if waiting:
            return Decision("wait", f"initial data not loaded on the target: {', '.join(waiting)}",
                            d.predicted_downtime_s, "data")
        # legacy's rule with a condition on top: it rests on the data, as QEMU's rules do
        return Decision("go", REASON, d.predicted_downtime_s, "data")


register_policy(TargetLoaded, "legacy, and the target reports every device's initial data loaded")
