import gc
import os
import weakref

from learner import memory
from learner.memory import memory_limit_bytes, peak_resident_bytes, release_free_memory, resident_bytes
from tests.ci import unavailable


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_release_free_memory_hands_freed_heap_pages_back():
    blocks = [b"x" * 100_000 for _ in range(2_000)]  # ~200 MiB of blocks below glibc's mmap threshold: heap
    pin = b"y" * 100_000  # allocated after them, it keeps the heap's top busy: free() alone cannot shrink it
    del blocks
    before = _resident_mib()
    if not release_free_memory():
        unavailable("no glibc malloc_trim on this platform")
    assert before - _resident_mib() > 100, "freed heap pages stayed resident"
    assert pin[0:1] == b"y"


class _Node:
    def __init__(self) -> None:
        self.payload = bytearray(10_000_000)
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_release_free_memory_frees_cyclic_garbage_without_waiting_for_python():
    enabled = gc.isenabled()
    gc.disable()  # as good as Python's rare full collections, for the length of this test
    try:
        node = _Node()
        alive = weakref.ref(node)
        del node
        assert alive() is not None
        release_free_memory()
        assert alive() is None, "a cycle (and its 10 MB) outlived the period"
    finally:
        if enabled:
            gc.enable()


def test_resident_and_peak_follow_an_allocation_and_its_release():
    if resident_bytes() != resident_bytes():  # NaN: no /proc here
        unavailable("no /proc/self/statm on this platform")
    before = resident_bytes()
    block = bytearray(300 * 2**20)  # zero-filled, so every page is touched
    grown = resident_bytes()
    status = _resident_mib() * 2**20
    peak = peak_resident_bytes()
    del block
    after = resident_bytes()
    assert grown - before > 250 * 2**20
    assert abs(grown - status) < 50 * 2**20, "disagrees with /proc/self/status"
    assert peak >= grown - 4 * 2**20  # the kernel's RSS counters are synced lazily, not exactly
    assert grown - after > 250 * 2**20, "the freed block is still counted"
    assert peak_resident_bytes() >= peak, "the high-water mark went down"


def test_memory_limit_is_the_machine_or_a_lower_container_limit(tmp_path, monkeypatch):
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (v2, v1))
    assert memory_limit_bytes() == machine  # no cgroup files
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert memory_limit_bytes() == machine
    v2.write_text(f"{2**30}\n")
    assert memory_limit_bytes() == 2**30
