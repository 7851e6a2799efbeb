"""The default thread count leaves out CPUs that other processes keep busy."""

import os
import subprocess
import sys
import time

from dual_engine.cpus import busy_cpus, default_threads, usable_cpus


def test_usable_cpus_follow_the_affinity_mask():
    assert usable_cpus() == sorted(os.sched_getaffinity(0))


def test_a_cpu_kept_busy_by_another_process_is_left_out():
    cpus = usable_cpus()
    spinner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os; os.sched_setaffinity(0, {%d})\nwhile True: pass" % cpus[0],
        ]
    )
    try:
        time.sleep(0.3)
        busy = busy_cpus(cpus, seconds=0.5)
        threads = default_threads()
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 1
    assert 1 <= threads <= max(1, len(cpus) - 1)  # one CPU: still one thread
