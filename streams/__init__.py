"""The Kafka shell: the faust-streaming worker, topics, codec edge, dead
letters, batching, clock ticks and state snapshots around the pure engine."""
