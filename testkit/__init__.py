"""Fixtures shared by tests/ and bench/ (never shipped in the wheel).

- migbed.experiments.localstack: THE process harness (start, health-check, stop a service);
  it is shipped because `migbed run` uses it. testkit adds what only tests and benchmarks need:
- testkit.harness: a Lab of service processes for one test, SIGTERM/kill checks, sessions,
  ports, /metrics scraping, waiting.
- testkit.procstat: CPU and memory of a process (RSS, peak RSS, a sampler).
- testkit.netns: a real link in a network namespace, to shape (tc) or cut.
- testkit.goodput: TCP goodput between two processes (migbed.env.goodput, which containers
  run and so stays in the package).

tests/ and bench/ import it as `testkit` (pytest's pythonpath and bench/_common.py put the
repository root on sys.path).
"""
