"""The Kafka adapters against the real broker: topics, transactional state records, state rebuild."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devstack.stack import Stack, TopicReader
from provisioner.bus.publisher import PartitionPublisher
from provisioner.bus.records import Outgoing, Records, Topics
from provisioner.bus.state_topic import StateTopicReader
from provisioner.bus.topics import ensure_topics
from provisioner.domain import Cluster, ClusterId, Replicate, Volume, VolumeId, VolumeStatus
from provisioner.errors import KafkaUnavailable
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange

pytestmark = pytest.mark.integration


def kafka_settings(stack: Stack, name: str) -> KafkaSettings:
    prefix = stack.topic(name)
    return KafkaSettings(
        bootstrap=stack.bootstrap,
        requests_topic=f"{prefix}.requests",
        results_topic=f"{prefix}.results",
        state_topic=f"{prefix}.state",
        dlq_topic=f"{prefix}.dlq",
        group_id=f"{prefix}.group",
        transactional_id_prefix=f"{prefix}.tx",
        requests_partitions=2,
    )


async def test_topics_are_created_once_with_a_compacted_state_topic(stack: Stack) -> None:
    settings = kafka_settings(stack, "topics")
    await ensure_topics(settings)
    await ensure_topics(settings)  # a second daemon starting finds them
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        [config] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.state_topic)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in config.resources[0][4]}
    assert entries["cleanup.policy"] == "compact"


async def test_state_written_in_transactions_is_rebuilt_by_a_new_reader(stack: Stack) -> None:
    settings = kafka_settings(stack, "state")
    await ensure_topics(settings)
    publisher = PartitionPublisher(settings, TopicPartition(settings.requests_topic, 0))
    records = Records(Topics(results=settings.results_topic, state=settings.state_topic, dlq=settings.dlq_topic))
    await publisher.start()
    cluster = Cluster(id=ClusterId("c1"))
    keep = Volume(VolumeId("a" * 32), "keep", cluster.id, 1, Replicate(), (), VolumeStatus.ONLINE)
    gone = Volume(VolumeId("b" * 32), "gone", cluster.id, 1, Replicate(), (), VolumeStatus.CREATING)
    try:
        await publisher.publish(
            records.state(
                [StateChange.put_cluster(cluster), StateChange.put_volume(keep), StateChange.put_volume(gone)]
            )
        )
        await publisher.publish(records.state([StateChange.delete_volume(gone.id)]))
    finally:
        await publisher.stop()

    state = DesiredState()
    reader = StateTopicReader(settings, state)
    await reader.start()
    try:
        assert await reader.catch_up() == 4
        assert await reader.catch_up() == 0  # nothing new
    finally:
        await reader.stop()
    assert state.clusters == {cluster.id: cluster}
    assert state.volumes == {keep.id: keep}
    assert state.volume_named(cluster.id, "keep") == keep


async def test_a_record_the_broker_refuses_fails_its_whole_transaction(stack: Stack) -> None:
    """Every send's delivery is checked before the commit: a record the broker refuses (here, over a
    topic's ``max.message.bytes``, which the producer cannot know) fails the transaction, nothing of
    it becomes visible, and a fresh publisher with the same transactional id commits again."""
    settings = kafka_settings(stack, "refused")
    await ensure_topics(settings)
    small = f"{settings.results_topic}.small"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(small, 1, 1, topic_configs={"max.message.bytes": "1024"})])
    finally:
        await admin.close()
    partition = TopicPartition(settings.requests_topic, 0)
    first = PartitionPublisher(settings, partition)
    await first.start()
    try:
        with pytest.raises(KafkaUnavailable):
            await first.publish(
                [Outgoing(settings.results_topic, None, b"lost", []), Outgoing(small, None, b"x" * 8192, [])]
            )
    finally:
        await first.stop()
    second = PartitionPublisher(settings, partition)
    await second.start()
    try:
        await second.publish([Outgoing(settings.results_topic, None, b"after", [])])
    finally:
        await second.stop()
    async with TopicReader(stack, settings.results_topic) as reader:
        await reader.poll(2.0)
        values = [value for _, value, _ in reader.records]
    assert values == [b"after"]
