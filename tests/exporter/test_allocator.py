"""Freed state arrays leave memory: glibc's mmap threshold stays where the sidecar set it."""

from __future__ import annotations

import subprocess
import sys

from otel_anomaly.exporter.allocator import keep_large_blocks_mapped

# In a fresh process, as the CLI calls it: in this long-lived one, earlier tests' freed
# blocks in the heap would serve the array whatever the threshold.
_PROBE = """
import ctypes
import numpy as np
from otel_anomaly.exporter.allocator import keep_large_blocks_mapped

class MallInfo2(ctypes.Structure):  # glibc 2.33 and later
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def mapped_bytes():  # bytes in blocks of their own mapping
    return mallinfo2().hblkhd

assert keep_large_blocks_mapped(environ={}), "mallopt refused the threshold"
freed = np.ones(4 << 20, np.uint8)  # 4 MiB, its own mapping
del freed  # left to itself, glibc would now raise its threshold to 4 MiB
before = mapped_bytes()
block = np.ones(1 << 20, np.uint8)
print(mapped_bytes() - before)
"""


def test_a_freed_large_array_does_not_send_the_next_ones_to_the_heap() -> None:
    # CI and the image run on glibc (Debian), where the threshold can be set.
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1 << 20, (
        f"a 1 MiB array came from the heap (mapped bytes grew by {done.stdout.strip()}), "
        "where freeing it would not return it")


def test_the_operators_threshold_is_left_alone() -> None:
    assert not keep_large_blocks_mapped(environ={"MALLOC_MMAP_THRESHOLD_": "65536"})
