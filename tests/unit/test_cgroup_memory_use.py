"""A call's memory as its cgroup counts it (cgroups.memory_use): the figure a desktop's memory target is judged by
(docs/agents.md, "Measured"), read from cgroup v2's and v1's own files; a hierarchy without the memory controller
(v1's pids directory, listed first) is passed over, and no memory cgroup at all is None."""

from __future__ import annotations

from pathlib import Path

from responses_bridge.sandbox.cgroups.per_call import MemoryUse, memory_use

MIB = 1 << 20


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_v2_reads_current_peak_and_the_anonymous_and_shared_parts(tmp_path: Path) -> None:
    call = _write(tmp_path / "v2", {
        "memory.current": f"{150 * MIB}\n", "memory.peak": f"{170 * MIB}\n",
        "memory.stat": f"anon {110 * MIB}\nfile {30 * MIB}\nshmem {21 * MIB}\nfile_mapped {16 * MIB}\n"})
    assert memory_use([call]) == MemoryUse(150 * MIB, 170 * MIB, 110 * MIB, 21 * MIB)


def test_v2_without_memory_peak_reports_the_current_figure_as_its_peak(tmp_path: Path) -> None:
    call = _write(tmp_path / "v2", {"memory.current": f"{150 * MIB}\n", "memory.stat": f"anon {110 * MIB}\n"})
    assert memory_use([call]) == MemoryUse(150 * MIB, 150 * MIB, 110 * MIB, 0)


def test_v1_reads_its_own_files_past_the_pids_hierarchy(tmp_path: Path) -> None:
    pids = _write(tmp_path / "pids", {"pids.max": "514\n", "pids.current": "40\n"})
    memory = _write(tmp_path / "memory", {
        "memory.usage_in_bytes": f"{189 * MIB}\n", "memory.max_usage_in_bytes": f"{209 * MIB}\n",
        "memory.stat": f"cache {22 * MIB}\nrss {155 * MIB}\nshmem {22 * MIB}\nmapped_file {16 * MIB}\n"
                       f"total_rss {155 * MIB}\n"})
    assert memory_use([pids, memory]) == MemoryUse(189 * MIB, 209 * MIB, 155 * MIB, 22 * MIB)


def test_no_memory_cgroup_is_none(tmp_path: Path) -> None:
    assert memory_use([]) is None
    assert memory_use([_write(tmp_path / "pids", {"pids.max": "514\n"})]) is None
    assert memory_use([tmp_path / "gone"]) is None
