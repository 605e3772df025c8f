"""Event-driven GlusterFS volume provisioner.

Requests arrive as CloudEvents on Kafka; bricks are placed by a pure allocator, prepared on the
storage nodes over SSH, assembled into gluster volumes, and every request gets exactly one result event.
"""

__version__ = "0.1.0"
