"""How many CPU threads torch should use when the caller does not say."""

import os
import time

# CPU time other processes take during a short sample counts as one CPU per this much.
BUSY_FRACTION = 0.5
SAMPLE_SECONDS = 0.2


def usable_cpus():
    """The CPUs this process may run on (its affinity mask, which containers and batch
    systems set), not every core of the machine."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _cpu_times():
    """{cpu: (total, idle)} jiffies from /proc/stat."""
    times = {}
    with open('/proc/stat') as f:
        for line in f:
            name, *values = line.split()
            if name.startswith('cpu') and name[3:].isdigit():
                v = [int(x) for x in values[:8]]  # guest time is already in user time
                times[int(name[3:])] = (sum(v), v[3] + v[4])  # idle + iowait
    return times


def busy_cpus(cpus, seconds=SAMPLE_SECONDS):
    """How many of `cpus` other processes keep busy now (sampled over `seconds`, while
    this process waits); 0 where the system does not tell (no /proc/stat)."""
    try:
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
    except (OSError, ValueError):
        return 0
    busy = 0.0  # summed over the CPUs: a process the scheduler moves between two counts once
    for cpu in cpus:
        if cpu in before and cpu in after:
            total = after[cpu][0] - before[cpu][0]
            idle = after[cpu][1] - before[cpu][1]
            busy += 1 - idle / total if total > 0 else 0.0
    return int(busy + 1 - BUSY_FRACTION)  # rounded: a CPU counts when half busy


def default_threads():
    """The usable CPUs that no other process keeps busy (at least one).

    Torch splits every operation evenly between its threads and waits for the last: one
    thread sharing its core with another busy process slows the whole step down (2
    threads beside one busy process on 2 cores: 1.7x slower than 1 thread,
    bench/run_training.py cost), so a CPU already taken is left out."""
    cpus = usable_cpus()
    return max(1, len(cpus) - busy_cpus(cpus))
