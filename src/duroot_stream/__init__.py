"""duroot-stream: du on file-system roots as an event-sourced workflow on Kafka."""

__version__ = "0.1.0"
