"""kpatch-analyze matrix: probes x kernels on a 2-worker Dask cluster (embedded and external).

Every cell must equal a single ``check`` of the same probe on the same image; a worker killed
mid-run, a kernel that keeps killing workers and a corrupt image cost only their own columns.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from distributed import Client, LocalCluster

from kpatch_core.attach import check_targets
from kpatch_core.cache import code_fingerprint
from kpatch_core.cli import main
from kpatch_core.image import Image
from kpatch_core.matrix import Matrix, compute, engine
from kpatch_core.matrix.classify import classify
from kpatch_core.errors import InputError
from kpatch_core.matrix.plan import (
    KernelRef,
    Probe,
    kernel_ref,
    kernel_refs,
    parse_probe,
    probes_digest,
    probes_from_file,
)
from kpatch_core.matrix.render import html_page, json_text, to_json
from kpatch_core.matrix.worker import Cell, Column
from kpatch_core.probe import check
from kpatch_core.target import parse_target

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
IMAGES = sorted(str(p) for p in TESTDATA.glob("*/vmlinux")) + \
    sorted(str(p) for p in TESTDATA.glob("*/vmlinux-6.12"))
# entries, offsets, return probes and refusals across the five arches' test images
PROBES = [parse_probe(s) for s in (
    "plain_func", "r plain_func", "plain_func+1", "r plain_func+9", "asm_nokprobe_func",
    "asm_nokprobe_func.isra.0", "notrace_func", "dup_static", "insn_helper", "kprobe_dispatcher",
    "r kprobe_dispatcher", "arch_prepare_kprobe_ftrace", "s390_plain", "s390_nokprobe",
    "ppc_toc_func", "ppc_toc_notrace", "a_nokprobe", "k_add", "a_notrace", "no_such_function")]
REFS = [KernelRef(p, path=p) for p in IMAGES]

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task wrappers below


def _single_check_json(path: str, probe: Probe) -> dict:
    """What `kpatch-analyze check IMAGE PROBE` gives for this one probe."""
    [(_, v)] = check_targets(Image.open(path), [probe.kprobe_target])
    return v.to_json()


def _assert_cells_equal_single_check(m: Matrix, refs: list[KernelRef]) -> None:
    for k, (ref, col) in enumerate(zip(refs, m.columns)):
        assert not col.failed, (ref.label, col.error)
        assert col.label == ref.label
        assert len(col.cells) == len(m.probes)
        for probe, cell in zip(m.probes, col.cells):
            assert cell.verdict == _single_check_json(ref.path or "", probe), (ref.label, probe)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One 2-worker LocalCluster for the tests that do not kill workers."""
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def matrix(client: Client) -> Matrix:
    cols = engine.run(REFS, PROBES, client=client, store_url=None)
    return Matrix.build(PROBES, cols)


def test_every_cell_equals_a_single_check(matrix: Matrix) -> None:
    assert len(IMAGES) >= 8 and len(matrix.columns) == len(IMAGES)
    _assert_cells_equal_single_check(matrix, REFS)
    # the x86_64 rows carry the kernel's different answers, classified
    x86 = IMAGES.index(str(TESTDATA / "x86_64" / "vmlinux"))
    cat = {str(p): matrix.classes[r][x86].category for r, p in enumerate(matrix.probes)}
    assert cat["kprobe:plain_func"] == "ok"
    assert cat["kprobe:asm_nokprobe_func"] == "blacklisted"
    assert cat["kprobe:notrace_func"] == "notrace"
    assert cat["kprobe:plain_func+1"] == "refused"  # EILSEQ, and on no kernel accepted
    assert cat["kprobe:no_such_function"] == "vanished"
    assert cat["kprobe:s390_plain"] == "vanished"


def test_worker_killed_mid_run_matrix_completes(tmp_path: Path, matrix: Matrix) -> None:
    victim = REFS[3].label
    task = functools.partial(_die_once, str(tmp_path / "died"), victim)
    cols = engine.run(REFS, PROBES, workers=2, store_url=None, task=task)
    assert (tmp_path / "died").exists()  # a worker really died computing the victim
    assert [c.to_json() | {"seconds": 0} for c in cols] == \
        [c.to_json() | {"seconds": 0} for c in matrix.columns]


def test_kernel_that_keeps_killing_workers_fails_alone(matrix: Matrix) -> None:
    victim = REFS[1].label
    cols = engine.run(REFS, PROBES, workers=2, store_url=None,
                      task=functools.partial(_die_always, victim))
    failed = [c for c in cols if c.failed]
    assert [c.label for c in failed] == [victim]
    assert "worker died" in (failed[0].error or "")
    assert [c.to_json() | {"seconds": 0} for c in cols if not c.failed] == \
        [c.to_json() | {"seconds": 0} for c in matrix.columns if c.label != victim]


def test_corrupt_image_marks_its_column_failed(tmp_path: Path, capsys: pytest.CaptureFixture
                                                ) -> None:
    bad = tmp_path / "vmlinux-corrupt"
    data = (TESTDATA / "x86_64" / "vmlinux").read_bytes()
    bad.write_bytes(data[:200])  # ELF header, section table cut off
    garbage = tmp_path / "vmlinux-garbage"
    garbage.write_bytes(b"\x7fELF" + b"\xff" * 4000)
    good = str(TESTDATA / "x86_64" / "vmlinux-6.12")
    rc = main(["matrix", "-p", "plain_func", "-p", "r plain_func", str(bad), good, str(garbage),
               "--workers", "2", "--no-store", "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert rc == 1
    assert [k["error"] is not None for k in doc["kernels"]] == [True, False, True]
    assert doc["cells"][0][1]["verdict"] == _single_check_json(good, parse_probe("plain_func"))
    assert doc["cells"][0][0]["category"] == "failed"
    assert "2 of 3 kernel(s) failed" in err and str(bad) in err and str(garbage) in err
    assert "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_workers(address: str, n: int, procs: list[subprocess.Popen]) -> None:
    from distributed import Client
    with Client(address, timeout="30s") as c:
        deadline = time.monotonic() + 60
        while len(c.scheduler_info(n_workers=-1)["workers"]) < n:
            assert all(p.poll() is None for p in procs), "a dask process exited"
            assert time.monotonic() < deadline, "dask workers did not register"
            time.sleep(0.2)


def test_external_scheduler_gives_the_same_output(tmp_path: Path, capsys: pytest.CaptureFixture
                                                  ) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    env = dict(os.environ, PYTHONPATH=str(TESTDATA.parent))
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(port),
                                      "--dashboard-address", ":0", "--no-show"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        _wait_for_workers(address, 2, procs)
        args = ["matrix", *[f"-p{p.kprobe_target}" for p in PROBES], *IMAGES, "--json"]
        assert main(args + ["--store", str(tmp_path / "ext"), "--scheduler", address]) == 0
        external = capsys.readouterr().out
        assert main(args + ["--workers", "2", "--no-store"]) == 0
        embedded = capsys.readouterr().out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert external == embedded
    assert len(json.loads(external)["kernels"]) == len(IMAGES)
    # the workers stored the columns by build-id where the client can read them
    x86 = Image.open(str(TESTDATA / "x86_64" / "vmlinux")).build_id
    assert list((tmp_path / "ext" / "columns" / str(x86)).glob("*.json"))


def test_store_answers_a_second_run(tmp_path: Path, matrix: Matrix, client: Client) -> None:
    refs = REFS[:3]
    for attempt in range(3):  # the shared tree's code may change under us (it is in the key)
        store = tmp_path / f"store{attempt}"
        url = "file://" + str(store)
        code = code_fingerprint.__wrapped__()
        first = engine.run(refs, PROBES, client=client, store_url=url)
        again = engine.run(refs, PROBES, client=client, store_url=url)
        if code_fingerprint.__wrapped__() == code:
            break
    assert all(c.seconds > 0 for c in first)
    assert all(c.seconds == 0 for c in again)  # read back, not computed
    ident = Image.open(refs[0].path or "").build_id
    assert list((store / "columns" / str(ident)).glob("*.json"))
    assert [c.cells for c in again] == [c.cells for c in matrix.columns[:3]]


def test_store_memory_url_shared_by_an_in_process_cluster() -> None:
    """Another fsspec scheme than a directory: ``memory://``, which the workers of an in-process
    cluster (threads) share; the second run reads every column back by build-id."""
    import fsspec

    refs, probes = REFS[:2], PROBES[:4]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        for attempt in range(3):  # the shared tree's code may change under us (it is in the key)
            url = f"memory://kpatch-matrix-{os.getpid()}-{attempt}"
            code = code_fingerprint.__wrapped__()
            first = engine.run(refs, probes, client=c, store_url=url)
            again = engine.run(refs, probes, client=c, store_url=url)
            if code_fingerprint.__wrapped__() == code:
                break
    assert all(col.seconds > 0 for col in first) and all(col.seconds == 0 for col in again)
    assert [col.cells for col in again] == [col.cells for col in first]
    stored = fsspec.filesystem("memory").ls(url[len("memory:/"):] + "/columns", detail=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in stored) == \
        sorted(str(Image.open(r.path or "").build_id) for r in refs)


def test_compute_returns_a_dataframe(client: Client) -> None:
    images = [str(TESTDATA / "x86_64" / "vmlinux"), str(TESTDATA / "x86_64" / "vmlinux-6.12")]
    df = compute(["plain_func", "kretprobe:plain_func", "notrace_func"], images, client=client)
    assert len(df) == 6 and not df.attrs["failed"]
    wide = df.pivot(index="probe", columns="kernel", values="category")
    assert wide.loc["kprobe:notrace_func"].tolist() == ["notrace", "notrace"]
    row = df[(df.probe == "kretprobe:plain_func") & (df.kernel == images[1])].iloc[0]
    v = check(Image.open(images[1]), "r plain_func")
    errno = row.errno if isinstance(row.errno, str) else None  # pandas: missing is NaN
    assert (bool(row.ok), errno, row.method) == (v.ok, v.errno, v.method.value if v.method else None)


def _column(cells: list[Cell], arch: str = "x86_64") -> Column:
    return Column("k", None, "id", arch, "6.1", "6.1", tuple(cells))


def _v(ok: bool, reason: str | None = None, why: str = "") -> dict:
    return {"ok": ok, "reason": reason, "errno": None if ok else "EINVAL", "why": why}


def test_classify_names_what_changed() -> None:
    probes = [parse_probe("f"), parse_probe("g"), parse_probe("h"), parse_probe("f+8")]
    old = _column([Cell(_v(True), signature="int f(int)", func_offset=0),
                   Cell(_v(True), func_offset=0), Cell(_v(True), func_offset=0),
                   Cell(_v(True), func_offset=8)])
    new = _column([Cell(_v(True), signature="int f(long)", func_offset=4),
                   Cell(_v(False, "NO_SYMBOL"), clones=("g.isra.0",), has_symbol=False),
                   Cell(_v(False, "NO_SYMBOL"), in_dwarf=True, has_symbol=False),
                   Cell(_v(False, "NOT_BOUNDARY"))])
    gone = _column([Cell(_v(True), signature="int f(int)", func_offset=0),
                    Cell(_v(False, "NO_SYMBOL"), in_dwarf=False, has_symbol=False),
                    Cell(_v(False, "NOTRACE")), Cell(_v(False, "BLACKLIST_NOKPROBE"))])
    got = classify(probes, [old, new, gone])
    assert [c.category for c in got[0]] == ["ok", "ok", "ok"]
    assert got[0][1].tags == ("moved", "signature-changed") and got[0][0].tags == ()
    assert [c.category for c in got[1]] == ["ok", "renamed-into-clone", "vanished"]
    assert [c.category for c in got[2]] == ["ok", "inlined", "notrace"]
    assert [c.category for c in got[3]] == ["ok", "moved", "blacklisted"]


def test_html_is_one_offline_file_with_drill_down(matrix: Matrix, tmp_path: Path) -> None:
    page = html_page(matrix)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    doc = json.loads(page.split('<script type="application/json" id="data">')[1]
                     .split("</script>")[0])
    assert doc == json.loads(json_text(matrix)) == to_json(matrix)
    cells = sum(len(r) for r in doc["cells"])
    assert page.count('class="c"') == cells == len(PROBES) * len(IMAGES)
    assert any(c.get("verdict", {}).get("kernel_function") == "within_kprobe_blacklist"
               for r in doc["cells"] for c in r)


@pytest.mark.parametrize("argv, code, text", [
    (["matrix", "testdata/x86_64/vmlinux"], 2, "no probes"),
    (["matrix", "-p", "vfs_read"], 2, "no kernels"),
    (["matrix", "-p", "vfs_read", "--debian", "6.12.117+deb13-m68k"], 2, "DEBARCH"),
    (["matrix", "-p", "vfs_read", "/nonexistent/vmlinux"], 1, "no such kernel image"),
    (["matrix", "--from", "/nonexistent/tool.bt", "testdata/x86_64/vmlinux"], 1, "no such file"),
    (["matrix", "-p", "vfs_read+zz", "testdata/x86_64/vmlinux"], 2, "malformed target"),
    (["matrix", "-p", "f", "testdata/x86_64/vmlinux", "--scheduler", "localhost:1"], 2,
     "tcp://HOST:8786"),
])
def test_bad_input_is_one_line(argv: list[str], code: int, text: str,
                               capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    monkeypatch.chdir(TESTDATA.parent)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1


def _die_once(marker: str, victim: str, ref: KernelRef, *args: object) -> Column:
    """Kill this worker process the first time the victim kernel is computed."""
    if ref.label == victim and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return engine.kernel_task(ref, *args)  # type: ignore[arg-type]


def _die_always(victim: str, ref: KernelRef, *args: object) -> Column:
    """Kill this worker process whenever the victim kernel is computed."""
    if ref.label == victim:
        os._exit(1)
    return engine.kernel_task(ref, *args)  # type: ignore[arg-type]


def test_bpftrace_tool_rows_globs_and_fentry(tmp_path: Path, client: Client) -> None:
    tool = tmp_path / "plainstat.bt"
    tool.write_text("#!/usr/bin/env bpftrace\nkprobe:plain_*\n{ @[func] = count(); }\n"
                    "kretprobe:plain_func { @r = count(); }\nfentry:plain_func { @f = count(); }\n"
                    "kprobe:no_such_* { @n = count(); }\n")
    probes, notes = probes_from_file(str(tool))
    assert [str(p) for p in probes] == ["kprobe:plain_*", "kretprobe:plain_func",
                                        "fentry:plain_func", "kprobe:no_such_*"]
    assert notes == [] and probes[0].source == "bpftrace"
    refs = [r for r in REFS if "/x86_64/" in (r.path or "")]
    m = Matrix.build(probes, engine.run(refs, probes, client=client))
    for ref, col in zip(refs, m.columns):
        image = Image.open(ref.path or "")
        glob = col.cells[0]
        expanded = [t for t, _ in check_targets(image, [probes[0].kprobe_target])]
        assert glob.matches is not None and [n for n, _ in glob.matches] == \
            [t.symbol for t in expanded] and len(expanded) >= 2
        for name, v in glob.matches:
            [(_, single)] = check_targets(image, [parse_target(f"kprobe:{name}")])
            assert v == single.to_json()
        for r in (1, 2):
            assert col.cells[r].verdict == _single_check_json(ref.path or "", probes[r])
        assert col.cells[2].verdict["attach"] == "fentry"
        assert col.cells[3].matches == () and m.classes[3][m.columns.index(col)].category == \
            "vanished"


def test_boot_directory_gives_one_column_per_kernel_image(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinux-6.1.0-test", "vmlinux-6.12.0-test"):
        (boot / name).symlink_to(TESTDATA / "x86_64" / ("vmlinux" if "6.1." in name
                                                        else "vmlinux-6.12"))
    (boot / "config-6.1.0-test").write_text("CONFIG_KPROBES=y\n")
    refs = kernel_refs(str(boot))
    assert [Path(r.path or "").name for r in refs] == ["vmlinux-6.1.0-test", "vmlinux-6.12.0-test"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="without kernel images"):
        kernel_refs(str(empty))


def test_debian_build_fetched_once_then_answered_by_build_id(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "fetch.sh"  # stands in for tools/fetch-debian-kernel.sh (no network)
    script.write_text(f'#!/bin/bash\necho "$1 $2" >> {calls}\n'
                      f'[ "$1" = 6.1.0-99-amd64 ] || {{ echo "E: no such package" >&2; exit 1; }}\n'
                      f'mkdir -p "$3" && cp {TESTDATA / "x86_64" / "vmlinux"} "$3/vmlinux"\n')
    monkeypatch.setenv("KPATCH_FETCH_SCRIPT", str(script))
    monkeypatch.setenv("KPATCH_KERNELS", str(tmp_path / "kernels"))
    store = str(tmp_path / "store")
    probes = tuple(PROBES[:3])
    digest = probes_digest(probes)
    ref = kernel_ref("--debian", "6.1.0-99-amd64")
    col = engine.kernel_task(ref, probes, digest, store)
    assert not col.failed and col.label == "6.1.0-99-amd64" and col.build_id
    for probe, cell in zip(probes, col.cells):
        assert cell.verdict == _single_check_json(str(TESTDATA / "x86_64" / "vmlinux"), probe)
    assert (tmp_path / "kernels" / "by-build-id" / col.build_id).is_symlink()
    shutil.rmtree(tmp_path / "kernels")  # the store answers without a download
    again = engine.kernel_task(ref, probes, digest, store)
    assert again.cells == col.cells and calls.read_text().splitlines() == ["6.1.0-99-amd64 amd64"]
    bad = engine.kernel_task(kernel_ref("--debian", "6.1.0-98-arm64"), probes, digest, store)
    assert bad.failed and "download failed (E: no such package)" in (bad.error or "")



def test_debian_download_that_hangs_fails_its_column(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fetch.sh"  # a stalled mirror: the fetch never returns by itself
    script.write_text("#!/bin/bash\nsleep 60 &\nwait\n")  # a child holds the pipes too
    monkeypatch.setenv("KPATCH_FETCH_SCRIPT", str(script))
    monkeypatch.setenv("KPATCH_KERNELS", str(tmp_path / "kernels"))
    monkeypatch.setenv("KPATCH_FETCH_TIMEOUT", "1")
    probes = tuple(PROBES[:1])
    t0 = time.monotonic()
    col = engine.kernel_task(kernel_ref("--debian", "6.1.0-99-amd64"), probes,
                             probes_digest(probes), None)
    assert time.monotonic() - t0 < 30
    assert col.failed and "download did not finish in 1 s" in (col.error or "")
