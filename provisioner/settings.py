"""Settings: environment variables ``PROVISIONER_<GROUP>__<FIELD>`` (or an env file), validated at start.

Every field says its unit and why it exists. A bad value stops start-up with a message that names
the setting (``provisioner.cli`` formats pydantic's error into ``PROVISIONER_KAFKA__BOOTSTRAP: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PROVISIONER_"


class Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Group):
    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers.")
    requests_topic: str = Field("gluster.requests", description="Requests in; key = cluster id.")
    results_topic: str = Field("gluster.results", description="One terminal result per request; key = volume id.")
    state_topic: str = Field("gluster.state", description="Compacted desired state; key = object id.")
    dlq_topic: str = Field("gluster.dlq", description="Undecodable or invalid events, with the reason.")
    group_id: str = Field("gluster-provisioner", description="Consumer group of the daemons.")
    transactional_id_prefix: str = Field(
        "gluster-provisioner", description="Prefix of per-partition transactional ids (fences zombies)."
    )
    requests_partitions: Annotated[int, Field(ge=1)] = Field(
        6,
        description="Partitions when the daemon creates the requests topic; more = more clusters in parallel.",
    )
    replication_factor: Annotated[int, Field(ge=1)] = Field(1, description="For topics the daemon creates.")
    request_timeout: Annotated[float, Field(gt=0)] = Field(30.0, description="Seconds for broker calls.")
    session_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0, description="Seconds without heartbeats before the group gives a dead daemon's partitions away."
    )


class SshSettings(Group):
    user: str = Field("root", description="Login on storage nodes (gluster and mount need root).")
    key_file: Path = Field(Path("/etc/provisioner/ssh/id_ed25519"), description="Client private key.")
    known_hosts: Path = Field(
        Path("/etc/provisioner/ssh/known_hosts"), description="Trusted host keys; unknown hosts are refused."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    connect_timeout: Annotated[float, Field(gt=0)] = Field(10.0, description="Seconds to open a connection.")
    max_sessions_per_host: Annotated[int, Field(ge=1, le=100)] = Field(
        8, description="Concurrent commands per node; keep below sshd MaxSessions (default 10)."
    )


class StorageSettings(Group):
    command_timeout: Annotated[float, Field(gt=0)] = Field(120.0, description="Seconds per brick command.")
    gluster_timeout: Annotated[int, Field(ge=5)] = Field(
        120, description="Seconds for the gluster CLI (--timeout); the SSH timeout adds 30 on top."
    )
    min_brick_size: Annotated[int, Field(ge=300 * 1024**2)] = Field(
        1024**3, description="Bytes; smaller volumes get a brick of this size (XFS needs >= 300 MiB)."
    )
    max_brick_size: Annotated[int, Field(ge=1024**3)] = Field(4 * 1024**4, description="Bytes per brick.")
    max_bricks_per_volume: Annotated[int, Field(ge=1)] = 32
    gluster_concurrency: Annotated[int, Field(ge=1, le=256)] = Field(
        8, description="gluster CLI calls at once per cluster (its glusterds lock per volume, but share the pool)."
    )
    fstab: str = Field(
        "/etc/fstab",
        pattern=r"^/[A-Za-z0-9._/-]+$",
        description="fstab on the nodes that brick mounts are written to, so bricks return after a reboot.",
    )


class WorkerSettings(Group):
    max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        6,
        description="Tries of one step of a request (a node command, a gluster call, an API call) that fails "
        "temporarily, before the request is answered as failed. The one retry budget: nothing below retries.",
    )
    retry_backoff: Annotated[float, Field(gt=0)] = Field(
        1.0, description="Seconds: the cap of the random wait after the first failed try; it doubles per try."
    )
    retry_backoff_max: Annotated[float, Field(gt=0)] = Field(30.0, description="Seconds, cap of the backoff.")
    request_deadline: Annotated[float, Field(gt=0)] = Field(
        900.0,
        description="Seconds a request may take in all, retries included; past it the request fails with "
        "DeadlineExceeded (and what it made is rolled back), so no volume is held for tens of minutes.",
    )
    rollback_deadline: Annotated[float, Field(gt=0)] = Field(
        300.0, description="Seconds the rollback of a failed request may take, on top of the request's deadline."
    )
    max_in_flight: Annotated[int, Field(ge=1, le=256)] = Field(
        16, description="Requests worked on at once per input partition (different volumes run concurrently)."
    )
    crash_after: str = Field(
        "",
        pattern=r"^([a-z_.]+:[1-9][0-9]*)?$",
        description="Tests only: exit at the Nth passing of a point (POINT:N): a node command (mkfs.xfs:1) "
        "or a transaction phase (transaction_sent:2, transaction_committed:1).",
    )
    shutdown_grace: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Seconds in-flight work may take to finish after SIGTERM."
    )
    health_interval: Annotated[float, Field(gt=0)] = Field(
        5.0,
        description="Seconds between probes of every storage node's sshd and glusterd; a node is down "
        "(placement avoids it) after 2 failed probes in a row, and up again at the first success.",
    )
    reconcile_interval: Annotated[float, Field(ge=0)] = Field(
        300.0,
        description="Seconds between the daemon's reconcile passes (the first right after start); 0 turns "
        "them off. A pass reads every node and counts orphans in provisioner_reconcile_drift_found.",
    )
    reconcile_repair: bool = Field(
        False, description="Let the daemon's passes remove the orphans they find (as `reconcile --repair` does)."
    )


class HttpSettings(Group):
    host: str = Field("0.0.0.0", description="Address of /metrics, /healthz and /readyz.")  # noqa: S104
    port: Annotated[int, Field(ge=0, le=65535)] = Field(9464, description="0 disables the HTTP server.")


class KubernetesSettings(Group):
    enabled: bool = Field(
        False, description="Create PVs, Endpoints, Services and claim events for requests that name a claim."
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file; unset = the pod's service account (in-cluster configuration)."
    )
    provisioner_name: str = Field(
        "gluster.org/glusterfs",
        pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)?$",
        description="StorageClass `provisioner` this serves; written to pv.kubernetes.io/provisioned-by.",
    )
    namespace: str = Field(
        "gluster-provisioner",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Namespace of the watcher's Lease (one watcher acts at a time).",
    )
    lease_duration: Annotated[float, Field(ge=2)] = Field(
        15.0, description="Seconds a watcher's Lease lasts without renewal before another may take over."
    )
    resync: Annotated[float, Field(gt=0)] = Field(
        300.0, description="Seconds between full relists of claims and volumes by the watcher (missed events)."
    )
    api_timeout: Annotated[float, Field(gt=0)] = Field(30.0, description="Seconds per Kubernetes API call.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    ssh: SshSettings = SshSettings()
    storage: StorageSettings = StorageSettings()
    worker: WorkerSettings = WorkerSettings()
    http: HttpSettings = HttpSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    source: str = Field("/gluster-provisioner", description="CloudEvents source of events this daemon emits.")
