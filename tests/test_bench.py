"""make bench's memory sampling: the tree of the measured process, and nothing else."""

import os
import subprocess
import sys
import time

import pytest

from iptnlp.bench import _descendants, _tree_rss_mb


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_memory_is_sampled_over_the_child_and_its_children_only():
    code = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '5']); print(p.pid, flush=True); time.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        grandchild = int(child.stdout.readline())
        deadline = time.time() + 5
        while grandchild not in _descendants(child.pid) and time.time() < deadline:
            time.sleep(0.05)
        tree = _descendants(child.pid)
        assert tree[0] == child.pid and grandchild in tree
        assert os.getpid() not in tree
        assert _tree_rss_mb(child.pid) > 0
    finally:
        for pid in ([grandchild] if grandchild else []):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        child.kill()
        child.wait()
    assert _tree_rss_mb(child.pid) == 0   # a process that is gone holds nothing
