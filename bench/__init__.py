"""Athens benchmark suite: the same remote-write bytes and PromQL queries sent
to Athens, Prometheus and VictoriaMetrics side by side (`python -m bench.compare`)."""
