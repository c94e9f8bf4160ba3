"""Local development infrastructure: Kafka brokers and clusters on 127.0.0.1, their
jars and TLS material, a local Schema Registry. Used by `make run`, the tests and
the benchmarks; no service needs it in production."""


class BrokerError(RuntimeError):
    """The local broker, cluster or Kafka tool could not be fetched, formatted or started;
    the message says what to do."""
