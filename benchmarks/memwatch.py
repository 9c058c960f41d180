"""Peak memory of a process tree, sampled in a background thread (benchmarks only, not a test).

    with TreeSampler(pid, interval=0.5, limit_bytes=18 << 30) as s:
        ...                       # run / wait for the process tree rooted at ``pid``
    s.report()                    # {"launcher": {...}, "processes": [...], "peak_tree_rss": ...}

Every ``interval`` seconds the sampler reads ``/proc/<pid>/status`` (VmRSS, VmHWM) of the root
process and of all its descendants (children of children included: Dask nannies start their
workers as grandchildren). Per process it keeps the largest VmRSS seen, the last VmHWM seen
(the kernel's own high-water mark, so a peak between two samples is not missed while the
process lives) and its command line; for the tree it keeps the largest sum of VmRSS of one
sample and a timeline ``(t, root_rss, others_rss)``.

``limit_bytes``: when the tree's summed RSS exceeds it, every process of the tree is sent
SIGKILL by its pid (children first) and ``killed`` is set, so a run cannot take the machine
down. Pure ``/proc`` reading: no psutil needed.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Dict, List, Optional

PAGE = 1024


def _status(pid: int) -> Optional[Dict[str, int]]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            out = {}
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "PPid:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * (PAGE if k != "PPid" else 1)
            return out
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300]
    except OSError:
        return ""


def _children_map() -> Dict[int, List[int]]:
    kids: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid: int) -> List[int]:
    kids = _children_map()
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def role_of(cmd: str, is_root: bool) -> str:
    if is_root:
        return "launcher"
    if "sdk_worker_main" in cmd or "sdk_worker" in cmd:
        return "beam-sdk-worker"
    if "multiprocessing.spawn" in cmd or "spawn_main" in cmd:
        return "spawned (dask nanny/worker)"
    if "multiprocessing.resource_tracker" in cmd or "resource_tracker" in cmd:
        return "resource_tracker"
    return "child"


class TreeSampler(threading.Thread):
    def __init__(self, root_pid: int, interval: float = 0.5,
                 limit_bytes: Optional[int] = None, include_root: bool = True):
        super().__init__(daemon=True)
        self.root, self.interval, self.limit = root_pid, interval, limit_bytes
        self.include_root = include_root
        self.procs: Dict[int, Dict] = {}
        self.timeline: List[tuple] = []
        self.peak_tree = 0
        self.killed = False
        self._stop_evt = threading.Event()
        self.t0 = time.time()
        self.labels: Dict[int, str] = {}  # pid -> role, set by the caller (e.g. dask workers)

    def label(self, pid: int, role: str) -> None:
        self.labels[pid] = role

    def sample(self) -> None:
        pids = ([self.root] if self.include_root else []) + descendants(self.root)
        tot = root_rss = 0
        now = time.time() - self.t0
        for pid in pids:
            st = _status(pid)
            if not st or "VmRSS" not in st:
                continue
            rec = self.procs.get(pid)
            if rec is None:
                cmd = _cmdline(pid)
                rec = self.procs[pid] = dict(pid=pid, cmd=cmd, max_rss=0, hwm=0,
                                             first_s=round(now, 1), ppid=st.get("PPid"))
            rec["max_rss"] = max(rec["max_rss"], st["VmRSS"])
            rec["hwm"] = max(rec["hwm"], st.get("VmHWM", 0))
            rec["last_s"] = round(now, 1)
            tot += st["VmRSS"]
            if pid == self.root:
                root_rss = st["VmRSS"]
        self.peak_tree = max(self.peak_tree, tot)
        self.timeline.append((round(now, 1), root_rss, tot - root_rss))
        if self.limit and tot > self.limit and not self.killed:
            self.killed = True
            for pid in reversed(pids):  # children first, each by its own pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)
        self.sample_safe()

    def sample_safe(self) -> None:
        try:
            self.sample()
        except Exception:  # the tree may be gone
            pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def report(self, min_bytes: int = 50 << 20) -> Dict:
        """Launcher peak, every process that reached ``min_bytes`` (role, peak RSS, HWM), the
        tree's peak summed RSS and a timeline thinned to <= 400 points."""
        procs = []
        for pid, r in sorted(self.procs.items()):
            role = self.labels.get(pid) or role_of(r["cmd"], pid == self.root)
            if pid != self.root and max(r["max_rss"], r["hwm"]) < min_bytes:
                continue
            procs.append(dict(pid=pid, role=role, peak_rss_mb=round(r["max_rss"] / 2**20),
                              hwm_mb=round(r["hwm"] / 2**20), alive_s=(r["first_s"], r["last_s"]),
                              cmd=r["cmd"][:120]))
        step = max(1, len(self.timeline) // 400)
        root = self.procs.get(self.root, {})
        return dict(launcher_peak_rss_mb=round(root.get("max_rss", 0) / 2**20),
                    launcher_hwm_mb=round(root.get("hwm", 0) / 2**20),
                    peak_tree_rss_mb=round(self.peak_tree / 2**20),
                    killed_at_limit=self.killed, processes=procs,
                    timeline_mb=[(t, round(a / 2**20), round(b / 2**20))
                                 for t, a, b in self.timeline[::step]])
