"""The PV's volumeAttributes: the pure builder the daemon calls and the strict parser NodeStage uses."""

from __future__ import annotations

import pytest

from provisioner.csi import attributes
from provisioner.csi.errors import InvalidArgument


def test_builder_writes_exactly_volume_and_servers() -> None:
    built = attributes.volume_attributes("vol_0a1b", ["10.77.0.11", "10.77.0.12", "gluster3.example.org"])
    assert built == {"volume": "vol_0a1b", "servers": "10.77.0.11,10.77.0.12,gluster3.example.org"}
    source = attributes.parse_volume_context(built)
    assert source.spec == "10.77.0.11:/vol_0a1b"
    assert source.backups == ("10.77.0.12", "gluster3.example.org")


@pytest.mark.parametrize(
    ("volume", "servers"),
    [
        ("all", ["h1"]),  # gluster's reserved name
        ("-o", ["h1"]),
        ("vol/../x", ["h1"]),
        ("vol a", ["h1"]),
        ("v" * 65, ["h1"]),
        ("vol", []),
        ("vol", ["-oremount"]),
        ("vol", ["h1:24007"]),
        ("vol", ["h1", "h1"]),
        ("vol", ["h1;reboot"]),
        ("vol", ["h1,h2"]),
        ("vol", [f"h{i}" for i in range(17)]),
    ],
)
def test_builder_refuses_what_the_node_plugin_would_refuse(volume: str, servers: list[str]) -> None:
    with pytest.raises(ValueError, match=r"volume|server"):
        attributes.volume_attributes(volume, servers)


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({}, "volume_context[volume]"),
        ({"volume": "v"}, "volume_context[servers]"),
        ({"volume": "", "servers": "h"}, "volume_context[volume]"),
        ({"volume": "v", "servers": "h", "backupServers": "x"}, "volume_context[backupServers]"),
        ({"volume": "v", "servers": "h,"}, "volume_context[servers]"),
        ({"volume": "v$(id)", "servers": "h"}, "volume_context[volume]"),
        ({"volume": "v", "servers": "h -o x"}, "volume_context[servers]"),
    ],
)
def test_context_errors_name_the_key(context: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        attributes.parse_volume_context(context)
    assert raised.value.field == field


def test_pod_info_keys_from_kubelet_are_accepted() -> None:
    context = {
        "volume": "v",
        "servers": "h",
        attributes.POD_NAME: "web-0",
        attributes.POD_NAMESPACE: "team-a",
        attributes.POD_UID: "7c1a6a57-1d4f-4b8e-9a55-3f2b5d9b8c11",
        attributes.SERVICE_ACCOUNT: "default",
        attributes.EPHEMERAL: "false",
    }
    assert attributes.parse_volume_context(context).volume == "v"


def test_long_refused_values_are_shown_bounded() -> None:
    with pytest.raises(InvalidArgument) as raised:
        attributes.parse_volume_context({"volume": "x" * 5000, "servers": "h"})
    assert len(str(raised.value)) < 200
