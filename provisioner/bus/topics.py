"""Creates the daemon's topics with the right shape when they are missing.

The state topic is compacted (one live record per object, forever); the others keep a week.
Existing topics are left as they are: changing partition counts of a keyed topic reorders keys.
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from provisioner.errors import KafkaUnavailable
from provisioner.settings import KafkaSettings

log = logging.getLogger(__name__)
WEEK_MS = str(7 * 24 * 3600 * 1000)


def wanted_topics(settings: KafkaSettings) -> list[NewTopic]:
    rf = settings.replication_factor
    return [
        NewTopic(settings.requests_topic, settings.requests_partitions, rf, topic_configs={"retention.ms": WEEK_MS}),
        NewTopic(settings.results_topic, settings.requests_partitions, rf, topic_configs={"retention.ms": WEEK_MS}),
        NewTopic(
            settings.state_topic,
            settings.requests_partitions,
            rf,
            topic_configs={
                "cleanup.policy": "compact",
                "min.compaction.lag.ms": "0",
                "segment.ms": "3600000",
            },
        ),
        NewTopic(settings.dlq_topic, 1, rf, topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)}),
    ]


def _admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, request_timeout_ms=int(settings.request_timeout * 1000)
    )


async def ensure_topics(settings: KafkaSettings) -> None:
    admin = _admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in wanted_topics(settings) if t.name not in existing]
        if missing:
            log.info("creating topics %s", ", ".join(t.name for t in missing))
            response = await admin.create_topics(missing)
            for name, code, *rest in response.topic_errors:
                # 36 = TOPIC_ALREADY_EXISTS: another daemon was quicker, which is what we wanted.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaUnavailable(f"cannot create topic {name}: error {code} {rest}")
    except KafkaError as e:
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.bootstrap} to check topics: {e}") from e
    finally:
        await admin.close()


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (consumers only know topics they subscribe to, so ask the admin API)."""
    admin = _admin(settings)
    try:
        await admin.start()
        [description] = await admin.describe_topics([topic])
    except KafkaError as e:
        raise KafkaUnavailable(f"cannot describe topic {topic} at {settings.bootstrap}: {e}") from e
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for p in description.get("partitions", []))
    if description.get("error_code") or not numbers:
        raise KafkaUnavailable(f"topic {topic} does not exist at {settings.bootstrap}")
    return [TopicPartition(topic, n) for n in numbers]
