"""The stream shell: the Faust app and its agent and timers, the booker that retries and
splits, Kafka I/O, dead letters, metrics and logs."""
