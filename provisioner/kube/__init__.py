"""Kubernetes: claims in (``watch``), PersistentVolumes, Endpoints and Services out (``run``)."""
