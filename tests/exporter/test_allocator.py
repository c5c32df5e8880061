"""Freed state arrays leave memory: glibc's mmap threshold stays where the sidecar set it."""

from __future__ import annotations

import numpy as np

from otel_anomaly.exporter.allocator import keep_large_blocks_mapped, mapped_bytes


def test_a_freed_large_array_does_not_send_the_next_ones_to_the_heap() -> None:
    # CI and the image run on glibc (Debian), where the threshold can be set.
    assert keep_large_blocks_mapped(environ={}), "mallopt refused the threshold"
    freed = np.ones(4 << 20, np.uint8)  # 4 MiB, its own mapping
    del freed  # unfixed, glibc would now raise its threshold to 4 MiB
    before = mapped_bytes()
    assert before is not None, "mallinfo2 is missing (glibc before 2.33)"
    block = np.ones(1 << 20, np.uint8)
    grown = mapped_bytes()
    assert grown is not None and grown - before >= block.nbytes, (
        "a 1 MiB array came from the heap, where freeing it would not return it")


def test_the_operators_threshold_is_left_alone() -> None:
    assert not keep_large_blocks_mapped(environ={"MALLOC_MMAP_THRESHOLD_": "65536"})
