"""Quantities and the names of our objects (``kube.names``)."""

from __future__ import annotations

import pytest

from provisioner.kube import names
from tests.unit.kube.samples import UID, GiB


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1Gi", GiB),
        ("500M", 500_000_000),
        ("1.5Gi", 1536 * 1024**2),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("1.5e3", 1500),
        ("2Ki", 2048),
        ("3Ti", 3 * 1024**4),
        ("1k", 1000),
        ("7", 7),
        ("+7", 7),
        ("100m", 1),  # a tenth of a byte rounds up to a whole one
        ("1500m", 2),
        ("0.1", 1),
        ("1e-3", 1),
        ("0", 0),
        ("1Gi ", GiB),
        ("  1Gi", GiB),
    ],
)
def test_parse_quantity(text: str, size: int) -> None:
    assert names.parse_quantity(text) == size


@pytest.mark.parametrize(
    "text", ["", " ", "Gi", "-1Gi", "1 Gi", "1GB", "1K", "1gi", ".", "1..2", "1.2.3Mi", "abc", "1e"]
)
def test_parse_quantity_refuses_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        names.parse_quantity(text)


def test_parse_quantity_reads_the_exa_suffix() -> None:
    assert names.parse_quantity("1E") == 10**18


def test_parse_quantity_with_a_huge_exponent_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        names.parse_quantity("1e1000000")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (GiB, "1Gi"),
        (1536 * 1024**2, "1536Mi"),
        (2 * 1024**4, "2Ti"),
        (1024**5, "1024Ti"),
        (3 * 1024, "3Ki"),
        (1000, "1000"),
        (0, "0"),
    ],
)
def test_format_quantity_uses_the_largest_exact_binary_suffix(size: int, text: str) -> None:
    assert names.format_quantity(size) == text
    assert names.parse_quantity(text) == size


@pytest.mark.parametrize(
    ("size", "rounded"),
    [(0, GiB), (1, GiB), (GiB, GiB), (GiB + 1, 2 * GiB), (1536 * 1024**2, 2 * GiB), (10 * GiB, 10 * GiB)],
)
def test_round_up_to_gib(size: int, rounded: int) -> None:
    assert names.round_up_to_gib(size) == rounded


def test_object_names_follow_the_claim_uid() -> None:
    assert names.pv_name(UID) == f"pvc-{UID}"
    assert names.service_name(UID) == f"glusterfs-dynamic-{UID}"
