"""``descendants`` (tools/process_memory.py), which the memory benches and samplers read a server's
workers from: the children files it walks find what a scan of every process finds, a child started from another
thread of its parent included (each thread's file lists only the children that thread started)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from tools.process_memory import _descendants_by_scan, descendants

# a parent whose second child is started from a thread of its own, which stays (a thread's children go to another
# thread of the process when it ends), and whose first child has a child of its own
TREE = textwrap.dedent("""
    import subprocess, threading, time
    subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    threading.Thread(target=lambda: (subprocess.Popen(["sleep", "30"]), time.sleep(30)), daemon=True).start()
    time.sleep(30)
""")


def test_the_walk_finds_what_the_scan_finds_children_of_every_thread_included() -> None:
    parent = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        for _ in range(200):  # bounded polling: until its three descendants have started
            if len(_descendants_by_scan(parent.pid)) == 3:
                break
            time.sleep(0.05)
        scanned = sorted(_descendants_by_scan(parent.pid))
        assert len(scanned) == 3, scanned
        assert sorted(descendants(parent.pid)) == scanned
    finally:
        for child in descendants(parent.pid):
            subprocess.run(["kill", "-9", str(child)], check=False)
        parent.kill()
        parent.wait()
