"""Which partition a verdict key goes to: the one Kafka's Java clients (and aiokafka's ``send``) choose.

The verdicts topic is compacted by key, so every revision of a slot must land
on the partition its earlier revisions went to, whichever client or version
sent them. The hashes below are Kafka's own test vectors for its murmur2
(``org.apache.kafka.common.utils.UtilsTest.testMurmur2``).
"""

import pytest

from stream.live.verdict_batches import partition_of

JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
@pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2.items())
def test_partition_as_the_java_client(key: str, java_hash: int, partitions: int) -> None:
    """Java's ``Utils.toPositive(murmur2(key)) % partitions``."""
    assert partition_of(key.encode(), range(partitions)) == (java_hash & 0x7FFFFFFF) % partitions


def test_partitions_listed_in_any_order() -> None:
    """The topic's partitions as metadata gives them (a set): the choice is by partition number, not position."""
    key = b"app-1:1796659500000"
    assert partition_of(key, [3, 1, 0, 2]) == partition_of(key, [0, 1, 2, 3])
