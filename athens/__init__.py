"""Athens: durable, long-term storage for Prometheus data that speaks PromQL."""

__version__ = "0.1.0"
