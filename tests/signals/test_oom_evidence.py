"""OOM evidence from a fake cgroup tree and kernel log, real child processes, and the
real files of this machine (read only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.signals.oom_evidence import (
    KMSG,
    KMSG_READ_BYTES,
    KMSG_SLACK_S,
    OomCounter,
    OomEvidence,
    OomReport,
    cgroup_v2_path,
    kernel_oom_kills,
    oom_kill_rose,
    oom_killed,
    parse_kmsg,
    parse_kmsg_oom,
    read_oom_kill,
)

UNIT = "/system.slice/train-supervisor@ljs.service"


def memory_events(oom_kill: int) -> str:
    return f"low 0\nhigh 0\nmax {oom_kill * 7}\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n"


class FakeHost:
    """A cgroup v2 tree and a /proc-like tree under tmp_path, for real pids."""

    def __init__(self, tmp_path: Path) -> None:
        self.cgroup_root = tmp_path / "cgroup"
        self.proc_root = tmp_path / "proc"
        self.events = self.cgroup_root / UNIT.lstrip("/") / "memory.events"
        self.events.parent.mkdir(parents=True)
        self.set_oom_kill(0)

    def place(self, pid: int, cgroup_lines: str = f"0::{UNIT}\n") -> None:
        (self.proc_root / str(pid)).mkdir(parents=True)
        (self.proc_root / str(pid) / "cgroup").write_text(cgroup_lines)

    def set_oom_kill(self, count: int) -> None:
        self.events.write_text(memory_events(count))

    def counter(self, pid: int) -> OomCounter:
        return OomCounter(pid, cgroup_root=self.cgroup_root, proc_root=self.proc_root)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def now_usec() -> int:
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)


# --- cgroup memory.events ---------------------------------------------------------------


def test_an_oom_kill_during_the_attempt_is_counted(host: FakeHost, child: subprocess.Popen[bytes]) -> None:
    host.place(child.pid)
    evidence = OomEvidence(host.counter(child.pid), kmsg_path=host.proc_root / "no-kmsg")
    assert evidence.before == 0
    # What the kernel does: count the kill in the cgroup, then SIGKILL the victim.
    host.set_oom_kill(1)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    report = evidence.report([child.pid])
    assert report == OomReport(cgroup_kills=1, kernel_pids=())
    assert report.oom_killed
    assert report.describe() == "the OOM killer killed 1 process(es) in the service's cgroup"


def test_a_plain_sigkill_is_not_an_oom_kill(host: FakeHost, child: subprocess.Popen[bytes]) -> None:
    host.set_oom_kill(3)  # kills from earlier attempts
    host.place(child.pid)
    evidence = OomEvidence(host.counter(child.pid), kmsg_path=host.proc_root / "no-kmsg")
    child.kill()
    child.wait()
    report = evidence.report([child.pid])
    assert not report.oom_killed
    assert report.cgroup_kills == 0
    assert report.describe() == "no OOM kill in the service's cgroup"


def test_the_cgroup_is_resolved_at_construction(host: FakeHost, child: subprocess.Popen[bytes]) -> None:
    host.place(child.pid)
    counter = host.counter(child.pid)
    child.kill()
    child.wait()
    (host.proc_root / str(child.pid) / "cgroup").unlink()  # the process is gone
    host.set_oom_kill(2)
    assert counter.events_path == host.events
    assert counter.count() == 2


def test_default_pid_is_this_process(host: FakeHost) -> None:
    host.place(os.getpid())
    assert OomCounter(cgroup_root=host.cgroup_root, proc_root=host.proc_root).count() == 0


def test_explicit_events_path(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text(memory_events(5))
    assert OomCounter(events_path=events).count() == 5


def test_unreadable_counts_are_none(host: FakeHost, tmp_path: Path) -> None:
    v1_only = 4242
    host.place(v1_only, "12:memory:/user.slice\n1:name=systemd:/user.slice/session-2.scope\n")
    no_memory_controller = 4343
    host.place(no_memory_controller, "0::/init.scope\n")
    assert host.counter(v1_only).count() is None
    assert host.counter(no_memory_controller).count() is None
    assert host.counter(999_999_999).count() is None  # no such process
    old_kernel = tmp_path / "old.events"
    old_kernel.write_text("low 0\nhigh 0\nmax 0\noom 0\n")
    assert read_oom_kill(old_kernel) is None


def test_unknown_counts_are_no_evidence() -> None:
    assert oom_kill_rose(0, 1)
    assert not oom_kill_rose(1, 1)
    assert not oom_kill_rose(None, 1)
    assert not oom_kill_rose(1, None)
    assert oom_killed is oom_kill_rose
    report = OomReport(cgroup_kills=None, kernel_pids=())
    assert not report.oom_killed
    assert "not readable" in report.describe()


def test_this_machine_reads_without_raising() -> None:
    assert isinstance(cgroup_v2_path(os.getpid()), str | None)
    count = OomCounter().count()
    assert count is None or count >= 0


# --- kernel log records -----------------------------------------------------------------

KILLED = (
    "3,1234,5678901234,-;Out of memory: Killed process 4242 (python) total-vm:48123456kB, "
    "anon-rss:31234567kB, file-rss:1234kB, shmem-rss:0kB, UID:1000 pgtables:65432kB oom_score_adj:0"
)
SUMMARY = (
    "6,1233,5678901200,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
    "global_oom,task_memcg=/system.slice/train-supervisor@ljs.service,task=python,pid=4242,uid=1000"
)
MEMCG_KILLED = (
    "3,88,120000000,-;Memory cgroup out of memory: Killed process 777 (pt_data_worker_) "
    "total-vm:9876543kB, anon-rss:4567890kB, file-rss:512kB, shmem-rss:0kB, UID:0 pgtables:12345kB "
    "oom_score_adj:200"
)


@pytest.mark.parametrize(
    ("record", "pid"),
    [
        (KILLED, 4242),
        (SUMMARY, 4242),
        (MEMCG_KILLED, 777),
        (
            "3,5,91000000,-;Out of memory (oom_kill_allocating_task): Killed process 31 (python3) "
            "total-vm:1024kB, anon-rss:512kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:44kB oom_score_adj:0",
            31,
        ),
        # Kernels before 5.1: no prefix, fewer fields.
        (
            "3,9,2000000,-;Killed process 4242 (python) total-vm:1234kB, anon-rss:1000kB, file-rss:0kB, shmem-rss:0kB",
            4242,
        ),
        # CONFIG_PRINTK_CALLER adds a header field; dictionary lines may follow.
        (KILLED.replace(",-;", ",-,caller=T4242;") + "\n SUBSYSTEM=memory\n DEVICE=+memory:x\n", 4242),
        (KILLED.replace("(python)", "(my (odd) name)"), 4242),
        (
            "6,1233,5678901200,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/system.slice/x.service,task_memcg=/system.slice/x.service,task=pt_main_thread,pid=99,uid=0",
            99,
        ),
    ],
)
def test_oom_records_name_their_victim(record: str, pid: int) -> None:
    assert parse_kmsg_oom(record) == pid


@pytest.mark.parametrize(
    "record",
    [
        "4,1230,5678900000,-;python invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0",
        "6,1240,5678905000,-;oom_reaper: reaped process 4242 (python), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        "6,1241,5678906000,-;Memory cgroup out of memory: OOM victim 4242 (python) is already exiting. Skip killing the task",
        "6,1242,5678907000,-;Tasks state (memory values in pages):",
        "12,1243,5678908000,-;myapp: Killed process 4242 (python) by hand",
        # The same words written by user space (facility 1, "user"), not by the kernel.
        KILLED.replace("3,", "11,", 1),
        "4,345,3370880689,-;mmap: python (26847): VmData 435228672 exceed data ulimit 419430400.",
        "Out of memory: Killed process 4242 (python) total-vm:1kB",  # no header
        "6,x,1,-;Out of memory: Killed process 4242 (python) total-vm:1kB",
        "",
    ],
)
def test_other_records_name_nobody(record: str) -> None:
    assert parse_kmsg_oom(record) is None


def test_record_header() -> None:
    parsed = parse_kmsg(KILLED + "\n SUBSYSTEM=memory")
    assert parsed is not None
    assert (parsed.facility, parsed.seq, parsed.usec) == (0, 1234, 5678901234)
    assert parsed.message.startswith("Out of memory: Killed process 4242")
    assert "SUBSYSTEM" not in parsed.message


# --- reading the kernel log -------------------------------------------------------------


def kmsg_file(path: Path, records: list[tuple[int, str]]) -> Path:
    """A file holding (usec, message) records as /dev/kmsg prints them, in order."""
    lines = [f"6,{seq},{usec},-;{message}\n" for seq, (usec, message) in enumerate(records)]
    path.write_text("".join(lines))
    return path


def test_kernel_log_names_our_recent_victims(tmp_path: Path) -> None:
    start = now_usec()
    old = start // 2  # half the uptime ago (kernel log times count from boot)
    since_wall = time.time()
    kmsg = kmsg_file(
        tmp_path / "kmsg",
        [
            (old, "Out of memory: Killed process 50 (python) total-vm:1kB, anon-rss:1kB"),  # old pid 50
            *[(start + i, f"filler record {i} " + "x" * 80) for i in range(400)],
            (start + 1000, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=python,pid=50,uid=0"),
            (start + 1001, "Out of memory: Killed process 50 (python) total-vm:1kB, anon-rss:1kB"),
            (start + 1002, "Out of memory: Killed process 8 (someone) total-vm:1kB, anon-rss:1kB"),
            (start + 1003, "Memory cgroup out of memory: Killed process 51 (pt_data_worker_) total-vm:1kB"),
        ],
    )
    assert kmsg.stat().st_size > 2 * KMSG_READ_BYTES  # records straddle read boundaries
    assert kernel_oom_kills([50, 51, 52], since_wall, kmsg) == [50, 51]
    assert kernel_oom_kills([50], since_wall + 3600, kmsg) == []


def test_old_victims_are_ignored(tmp_path: Path) -> None:
    # A kill logged now, asked about by an attempt that starts later than the slack allows:
    # old to it. No timestamp depends on how long the machine has been up.
    now = now_usec()
    kmsg = kmsg_file(tmp_path / "kmsg", [(now, "Out of memory: Killed process 50 (x) total-vm:1kB")])
    later = time.time() + KMSG_SLACK_S + 60
    assert kernel_oom_kills([50], later, kmsg) == []
    assert kernel_oom_kills([50], time.time() - 60, kmsg) == [50]


def test_unreadable_kernel_log_is_empty(tmp_path: Path) -> None:
    assert kernel_oom_kills([1], 0.0, tmp_path / "missing") == []
    assert kernel_oom_kills([1], 0.0, tmp_path) == []  # a directory: read() fails


def test_this_machines_kernel_log_reads_without_raising(child: subprocess.Popen[bytes]) -> None:
    # Readable here or not (dmesg_restrict, containers): either way no exception, and a
    # process that was merely started is no OOM victim.
    assert kernel_oom_kills([child.pid], time.time() - 60, KMSG) == []


def test_evidence_names_the_victim_from_the_kernel_log(
    host: FakeHost, child: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    host.place(child.pid)
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    evidence = OomEvidence(host.counter(child.pid), kmsg_path=kmsg)
    host.set_oom_kill(1)
    victim = f"Out of memory: Killed process {child.pid} (python) total-vm:1kB, anon-rss:1kB"
    kmsg_file(kmsg, [(now_usec(), victim)])
    child.kill()
    child.wait()
    report = evidence.report([child.pid])
    assert report.kernel_pids == (child.pid,)
    assert report.oom_killed
    assert report.describe() == f"the kernel's OOM killer killed pid {child.pid}"
    assert evidence.report([]).kernel_pids == ()
