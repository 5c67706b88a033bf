"""The simulated upstream (`scanctl demo-api`): the analysis API's routes with latency, rate
limits and faults on demand, for `make demo`, the integration tests and the benchmarks."""
