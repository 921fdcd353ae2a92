"""RabbitMQ: topology as data, envelopes, connections, shard membership, lanes, and the one consumer."""
