"""Datacenter-scale maintenance: draining racks, shares of hosts or rolling waves, simulated.

`migbed simulate DATACENTER.toml`: the fleet planner (migbed/fleet/planner.py) places every
guest, the analytical model (migbed/model) gives each migration's course for the bandwidth
it gets, and migrations share NICs, rack uplinks and the spine max-min fairly, re-shared at
every start and end (SimPy drives the events). docs/datacenter.md says what is modelled.

  spec.py       the datacenter file: parsed, bounded, every error naming its field
  topology.py   hosts, racks, links and each migration's path
  sharing.py    max-min fair rates, re-solved where a change can reach (pure)
  course.py     a migration's course from the model, cached per bandwidth class (pure)
  simulator.py  the discrete-event simulation (SimPy)
  report.py     the summary, JSON, CSV and plots
(`migbed simulate`'s flags are read in migbed/cli/simulate.py.)
"""
