"""Kafka adapters (aiokafka): topics, the state topic, transactional outcomes, the request loop.

aiokafka exceptions are translated here; nothing above this package catches ``KafkaError``.
"""
