"""anyseg's placement of torch's OpenMP threads (``kernels.bound_threads``) and the variables
that give another process the same (``kernels.placement_env``)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from anyseg import kernels

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.fixture
def team_of_every_cpu(monkeypatch):
    """torch's team as large as the process's CPUs, no placement in the environment."""
    if len(CPUS) < 2 or kernels._team() is None:
        pytest.skip("needs two CPUs or more and torch on GNU OpenMP")
    for name in kernels.PLACEMENT_ENV:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(len(CPUS))
    yield
    torch.set_num_threads(threads)


def in_new_thread(fn):
    """``fn()`` on a thread of its own (whose OpenMP team is its own), its result."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def placements():
    """The calling thread's CPUs before, within and after ``bound_threads``, and its team's
    threads' ids and CPUs after."""
    before = os.sched_getaffinity(0)
    with kernels.bound_threads():
        inside = os.sched_getaffinity(0)
        torch.ones(100_000).sum()  # torch work in the context
    after = os.sched_getaffinity(0)
    tids = np.zeros(len(CPUS), np.int64)
    kernels._run("thread_ids", len(CPUS), tids)
    return before, inside, after, threading.get_native_id(), {t: os.sched_getaffinity(t) for t in tids.tolist()}


def test_bound_threads_place_the_caller_and_its_team(team_of_every_cpu):
    before, inside, after, me, team = in_new_thread(placements)
    assert inside == {CPUS[0]} and after == before  # the caller's CPUs back after
    assert me in team and len(team) == len(CPUS)
    workers = [cpus for tid, cpus in team.items() if tid != me]
    assert sorted(min(c) for c in workers) == CPUS[1:] and all(len(c) == 1 for c in workers)  # kept there


def test_parts_beyond_the_team_run_on_the_team(team_of_every_cpu):
    """A loop split in several parts per thread runs on torch's team (each thread claiming
    parts as it is free), not on a thread per part: on two CPUs a team of eight would share
    them, and the pool would be made and ended again around each such loop."""

    def ids():
        # a part per element; thread_ids' entry claims one part per thread, the rest stay 0
        tids = np.zeros(4 * len(CPUS), np.int64)
        kernels._run("thread_ids", len(tids), tids, parts_per_thread=4)
        return set(tids.tolist()) - {0}

    assert len(in_new_thread(ids)) == len(CPUS)


def test_placement_left_to_the_environment(team_of_every_cpu, monkeypatch):
    assert kernels.placement_env(len(CPUS)) == {"OMP_PROC_BIND": "close", "OMP_PLACES": "threads"}
    assert kernels.placement_env(1) == kernels.placement_env(len(CPUS) + 1) == {}
    monkeypatch.setenv("OMP_PROC_BIND", "false")
    assert kernels.placement_env(len(CPUS)) == {}
    before, inside, after, me, team = in_new_thread(placements)
    assert inside == after == before and all(cpus == set(CPUS) for cpus in team.values())


def test_placement_not_allowed_is_left_to_the_system(team_of_every_cpu, monkeypatch):
    calls = []

    def refused(*args):
        calls.append(args)
        raise PermissionError("not allowed")

    monkeypatch.setattr(kernels.os, "sched_setaffinity", refused)

    def twice():
        with kernels.bound_threads():
            first = os.sched_getaffinity(0)
        with kernels.bound_threads():
            return first, os.sched_getaffinity(0)

    assert in_new_thread(twice) == (set(CPUS), set(CPUS))
    assert len(calls) == 1  # tried once per thread, then left alone


# --------------------------------------------------------------------------- CPU quotas
def cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000\n"}, 2),
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two threads
    ({"cpu.max": "20000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_cpu_quota_of_cgroup_files(tmp_path, files, quota):
    from anyseg._process import cpu_quota

    assert cpu_quota(cgroup(tmp_path, files)) == quota


@pytest.mark.parametrize("membership, quota", [
    ("0::/pod/app\n", 2),  # v2: the pod's limit above the container's group
    ("4:cpu,cpuacct:/pod/app\n", 3),  # v1: the container's own group
    ("0::/elsewhere\n", 4),  # groups not under this root: the root's
])
def test_cpu_quota_along_the_process_group(tmp_path, membership, quota):
    from anyseg._process import cpu_quota

    root = cgroup(tmp_path / "fs", {"cpu.max": "400000 100000", "pod/cpu.max": "200000 100000",
                                    "pod/app/cpu.max": "max 100000", "cpu/cpu.cfs_quota_us": "-1",
                                    "cpu/cpu.cfs_period_us": "100000", "cpu/pod/app/cpu.cfs_quota_us": "250000",
                                    "cpu/pod/app/cpu.cfs_period_us": "100000"})
    (tmp_path / "cgroup").write_text(membership)
    assert cpu_quota(root, str(tmp_path / "cgroup")) == quota


def test_threads_fit_a_quota_unless_the_environment_sets_them(monkeypatch):
    from anyseg import _process

    threads = torch.get_num_threads()
    monkeypatch.setattr(_process, "cpu_quota", lambda: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _process.fit_threads_to_quota() is None and torch.get_num_threads() == threads
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    try:
        assert _process.fit_threads_to_quota() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert _process.usable_cpus() == 1  # anyseg bench's default threads
    monkeypatch.setattr(_process, "cpu_quota", lambda: 8)  # more than the CPUs seen: nothing to do
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _process.fit_threads_to_quota() is None and _process.usable_cpus() == 4
