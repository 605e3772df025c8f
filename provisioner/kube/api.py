"""The Kubernetes API client and the translation of its failures into the provisioner's errors.

Conflicts, throttling, server errors and broken connections are temporary (retried with backoff);
a forbidden, invalid or missing object is permanent and the message says which object and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

from provisioner.errors import (
    ConfigError,
    Internal,
    KubernetesConflict,
    KubernetesForbidden,
    KubernetesInvalid,
    KubernetesNotFound,
    KubernetesUnavailable,
    ProvisionerError,
)
from provisioner.settings import KubernetesSettings

log = logging.getLogger(__name__)


async def new_client(settings: KubernetesSettings) -> client.ApiClient:
    """From ``kubernetes.kubeconfig`` when set, else the pod's service account."""
    try:
        if settings.kubeconfig is not None:
            return await config.new_client_from_config(config_file=str(settings.kubeconfig), persist_config=False)
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError) as e:
        where = settings.kubeconfig or "the in-cluster service account"
        raise ConfigError(
            f"PROVISIONER_KUBERNETES__KUBECONFIG: cannot load {where}: {e} (set it to a kubeconfig file outside a pod)"
        ) from e


def api_error(error: BaseException, what: str) -> ProvisionerError:
    """A library failure as a permanent or temporary provisioner error naming ``what`` was tried."""
    if isinstance(error, client.ApiException):
        status = error.status or 0
        detail = _message(error)
        text = f"{what}: HTTP {status} {detail}"
        if status == 409:
            return KubernetesConflict(text, delay=0.5)
        if status == 429 or status >= 500 or status == 0:
            return KubernetesUnavailable(text, delay=2.0)
        if status in (401, 403):
            return KubernetesForbidden(f"{text} (check the RBAC rules in deploy/kubernetes)")
        if status == 404:
            return KubernetesNotFound(text)
        return KubernetesInvalid(text)
    if isinstance(error, aiohttp.ClientError | TimeoutError | OSError):
        return KubernetesUnavailable(f"{what}: {type(error).__name__}: {error}", delay=2.0)
    return Internal(f"{what}: {type(error).__name__}: {error}")


def _message(error: client.ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return str(error.reason or "")
    return str(body.get("message") or error.reason or "")


def as_body(manifest: Mapping[str, Any]) -> Any:
    """kubernetes-asyncio sends plain dicts as they are; its type stubs only name the model classes."""
    return manifest
