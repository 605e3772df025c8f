"""The marks that make the nodes self-describing: which volume a brick or gluster volume belongs to,
and which deployment made it.

Every gluster volume we create carries two options, every brick image two user xattrs, every
thin LV three LVM tags and every device's VG up to three. ``reconcile`` reads them back to tell
our things from anything else on shared nodes, so the names here are a contract with what is
already on disk: never rename one. A deployment is named by its state topic (``owner``); two
deployments on the same nodes never take each other's bricks for orphans.
"""

from __future__ import annotations

from collections.abc import Mapping

ID_OPTION = "user.provisioner.id"
"""Gluster volume option: our volume id."""
OWNER_OPTION = "user.provisioner.owner"
"""Gluster volume option: the deployment (state topic) that made the volume."""

IMAGE_VOLUME_XATTR = "user.provisioner.volume"
IMAGE_OWNER_XATTR = "user.provisioner.owner"
IMAGE_XATTR_PATTERN = r"^user\.provisioner\."
"""``getfattr -m`` pattern matching every xattr we put on a brick image."""

LV_VOLUME_TAG = "provisioner.volume"
LV_BRICK_TAG = "provisioner.brick"
LV_OWNER_TAG = "provisioner.owner"

VG_DEVICE_TAG = "provisioner.device"
VG_CLUSTER_TAG = "provisioner.cluster"


def volume_options(volume_id: str, owner: str) -> tuple[tuple[str, str], ...]:
    """The options that mark a gluster volume as ours (the owner only when the deployment has one)."""
    return ((ID_OPTION, volume_id), *(((OWNER_OPTION, owner),) if owner else ()))


def image_xattrs(volume_id: str, owner: str) -> tuple[tuple[str, str], ...]:
    return ((IMAGE_VOLUME_XATTR, volume_id), *(((IMAGE_OWNER_XATTR, owner),) if owner else ()))


def lv_tags(volume_id: str, brick_id: str, owner: str) -> tuple[tuple[str, str], ...]:
    return ((LV_VOLUME_TAG, volume_id), (LV_BRICK_TAG, brick_id), *(((LV_OWNER_TAG, owner),) if owner else ()))


def vg_tags(device_id: str, cluster: str, owner: str) -> tuple[tuple[str, str], ...]:
    """The marks on a device's VG: which device of which cluster it is, and the deployment's name."""
    return (
        (VG_DEVICE_TAG, device_id),
        (VG_CLUSTER_TAG, cluster),
        *(((LV_OWNER_TAG, owner),) if owner else ()),
    )


def is_ours(options: Mapping[str, str], owner: str) -> bool:
    """Whether a gluster volume's options mark it as one of this deployment's."""
    return bool(owner) and options.get(OWNER_OPTION) == owner and ID_OPTION in options
