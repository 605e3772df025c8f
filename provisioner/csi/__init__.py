"""The project's own CSI node plugin: kubelet mounts our gluster volumes into pods through it.

It serves the CSI Identity and Node services (spec v1.13, stubs in ``provisioner.csi.proto``) on a
unix socket and registers itself with kubelet through kubelet's plugin-registration socket. Each
gluster volume gets one FUSE mount per node (NodeStageVolume) that pods see through bind mounts
(NodePublishVolume). There is no Controller service: the daemon (``provisioner run``) creates,
expands and deletes volumes from Kafka requests and writes the PVs itself, so nothing here talks to
the storage nodes except the glusterfs client.

This package imports nothing from the rest of ``provisioner`` but ``provisioner.errors`` (an
import-linter contract), so the daemon and the node plugin can be released and deployed apart.
``provisioner.csi.attributes`` is the one module the daemon's PV code calls.
"""
