"""Odd voxels and bounded reading (issue 13).

* A float CT with NaN / inf voxels used to kill the process (segmentation fault): ``load_image_file`` kept a
  NumPy view of an image, replaced the image and read the freed memory. The reading runs in a subprocess here
  (a segfault fails the test instead of killing pytest) with glibc told to return freed blocks to the system
  at once (``MALLOC_MMAP_THRESHOLD_``), which makes a read of freed memory crash every time.
* A 250-byte header naming ``/dev/zero`` as its data file and claiming 2000^3 voxels made ``info`` eat all
  memory. Here in a subprocess under an address-space limit: it must be refused in words, quickly.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, *args: str, env_extra: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))


def _nan_ct(path: Path) -> None:
    """A float32 CT-like volume (air around a soft-tissue body) with one NaN, one +inf and one -inf voxel."""
    import SimpleITK as sitk

    a = np.full((24, 96, 96), -1000.0, np.float32)
    a[2:22, 10:86, 10:86] = 50.0
    a[12, 40, 40] = np.nan
    a[13, 41, 41] = np.inf
    a[14, 42, 42] = -np.inf
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_non_finite_voxels_never_crash_and_are_reported_the_same_for_every_format(tmp_path, ext):
    f = tmp_path / f"ct{ext}"
    _nan_ct(f)
    code = """
        import sys, main
        from engine.io import load_case
        case = load_case(sys.argv[1])
        assert case.image.min() >= -1024, case.image.min()
        for w in case.provenance.warnings:
            print("WARNING:", w)
        sys.exit(main.main(["info", sys.argv[1]]))
    """
    r = _run(code, str(f), env_extra={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert r.returncode == 0, f"crashed or failed (rc {r.returncode}): {r.stderr[-2000:]}"
    out = r.stdout
    # one rule, one sentence, with the count: as the case opens (CLI and window show these warnings) and in info
    assert "WARNING: 3 voxels" in out and "treated as air (-1024 HU)" in out
    assert "warning:     3 voxels" in out
    # the three voxels with no value do not make the CT look like something else
    assert "do not look like CT" not in out


def test_measure_on_a_ct_with_nan_voxels_does_not_crash(tmp_path):
    import SimpleITK as sitk

    f = tmp_path / "ct.nii.gz"
    _nan_ct(f)
    lab = np.zeros((24, 96, 96), np.uint8)
    lab[4:20, 20:70, 20:70] = 1
    li = sitk.GetImageFromArray(lab)
    li.CopyInformation(sitk.ReadImage(str(f)))
    sitk.WriteImage(li, str(tmp_path / "labels.nii.gz"))
    r = _run("import sys, main; sys.exit(main.main(['measure', sys.argv[1], sys.argv[2]]))", str(f),
             str(tmp_path / "labels.nii.gz"), env_extra={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-2000:]}"
    assert "3 voxels" in r.stdout + r.stderr


# --- bounded reading ---------------------------------------------------------------------------------------------
NRRD_HEAD = "NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nspacings: 1 1 1\nencoding: {enc}\nendian: little\n"
MHA_HEAD = "ObjectType = Image\nNDims = 3\nDimSize = {sizes}\nElementType = MET_SHORT\n{extra}ElementDataFile = {df}\n"

#: the subprocess: 3 GB of address space at most; prints the command's exit code and peak memory
BOUNDED = """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, 3 * 1024 ** 3))
    import main
    rc = main.main([sys.argv[1], *sys.argv[2:]])
    # VmHWM: this program's peak (ru_maxrss would include the forking parent's on Linux)
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
    print("RC", rc, "MAXRSS_MB", int(hwm) // 1024)
"""


def _headers(tmp: Path, sizes: str) -> dict[str, Path]:
    for n in ("zero_link.raw", "zero_link0.raw", "zero_link1.raw"):
        (tmp / n).symlink_to("/dev/zero")
    out = {}
    for name, text in {
        "attached_name.nrrd": NRRD_HEAD.format(sizes=sizes, enc="raw") + "data file: /dev/zero\n\n",
        "detached.nhdr": NRRD_HEAD.format(sizes=sizes, enc="raw") + "data file: /dev/zero\n",
        "gzip.nhdr": NRRD_HEAD.format(sizes=sizes, enc="gzip") + "data file: /dev/zero\n",
        "link.nhdr": NRRD_HEAD.format(sizes=sizes, enc="raw") + "data file: zero_link.raw\n",
        "list.nhdr": NRRD_HEAD.format(sizes=sizes, enc="raw") + "data file: LIST 2\n/dev/zero\n/dev/zero\n",
        "pattern.nhdr": NRRD_HEAD.format(sizes=sizes, enc="raw") + "data file: zero_link%d.raw 0 1 1 2\n",
        "element.mha": MHA_HEAD.format(sizes=sizes, extra="", df="/dev/zero"),
        "pattern.mhd": MHA_HEAD.format(sizes=sizes, extra="", df="zero_link%d.raw 0 1 1"),
        "element.mhd": MHA_HEAD.format(sizes=sizes, extra="", df="zero_link.raw"),
        "compressed.mhd": MHA_HEAD.format(sizes=sizes, extra="CompressedData = True\n", df="/dev/zero"),
        "list.mhd": MHA_HEAD.format(sizes=sizes, extra="", df="LIST 2D") + "/dev/zero\n" * 3,
    }.items():
        p = tmp / name
        p.write_text(text)
        out[name] = p
    (tmp / "input_is_a_device.nrrd").symlink_to("/dev/zero")
    out["input_is_a_device.nrrd"] = tmp / "input_is_a_device.nrrd"
    return out


@pytest.mark.parametrize("sizes", ["2000 2000 2000", "64 64 64"])
def test_headers_naming_a_device_are_refused_in_words_with_bounded_memory(tmp_path, sizes):
    for name, p in _headers(tmp_path, sizes).items():
        for cmd in ("info", "measure") if name in ("detached.nhdr", "element.mha") else ("info",):
            args = [cmd, str(p)] + ([str(p)] if cmd == "measure" else [])
            r = _run(BOUNDED, *args, timeout=60)
            assert r.returncode == 0, f"{name}: the process died (rc {r.returncode}): {r.stderr[-1500:]}"
            rc, rss = int(r.stdout.split("RC ")[1].split()[0]), int(r.stdout.split("MAXRSS_MB ")[1].split()[0])
            assert rc == 2, f"{name} {cmd} was opened (rc {rc}): {r.stdout[-800:]}"
            err = r.stderr
            assert "Traceback" not in err
            assert ("a device" in err or "not a regular file" in err), f"{name}: {err[-600:]}"
            assert rss < 1500, f"{name}: {rss} MB"


def test_a_claim_larger_than_memory_is_refused_before_reading(tmp_path):
    raw = tmp_path / "small.raw"
    raw.write_bytes(b"\0" * 4096)
    hdr = tmp_path / "huge.nhdr"
    hdr.write_text(NRRD_HEAD.format(sizes="2000 2000 2000", enc="raw") + "data file: small.raw\n")
    r = _run(BOUNDED, "info", str(hdr), timeout=60)
    assert "RC 2" in r.stdout, r.stdout + r.stderr[-1000:]
    assert "of memory available" in r.stderr and "claims 14.9 GB" in r.stderr


def test_detached_data_shorter_than_the_claim_is_refused(tmp_path):
    from engine.errors import InputError
    from engine.io import load_case

    (tmp_path / "short.raw").write_bytes(b"\0" * 1000)
    hdr = tmp_path / "short.nhdr"
    hdr.write_text(NRRD_HEAD.format(sizes="64 64 64", enc="raw") + "data file: short.raw\n")
    with pytest.raises(InputError, match="hold 1000 bytes where the header claims 524288"):
        load_case(hdr)
    # a well-formed detached pair still opens
    vol = (np.arange(64 ** 3) % 2000 - 1000).astype("<i2")
    (tmp_path / "ok.raw").write_bytes(vol.tobytes())
    ok = tmp_path / "ok.nhdr"
    ok.write_text(NRRD_HEAD.format(sizes="64 64 64", enc="raw") + "data file: ok.raw\n")
    assert load_case(ok).image.shape == (64, 64, 64)


def test_a_gzip_data_file_is_decompressed_only_up_to_the_claim(tmp_path):
    """A decompression bomb: 64 MB of zeros in ~64 KB; the header claims 512 KB. The check stops at the
    claim (bounded memory and time) and the image opens."""
    from engine.io.bounds import decompressed_at_least

    bomb = tmp_path / "bomb.raw.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as g:
        block = b"\0" * (1 << 20)
        for _ in range(64):
            g.write(block)
    got, ok = decompressed_at_least([(bomb, 0)], "gzip", 524288)
    assert ok and 524288 <= got <= 524288 + (1 << 20)
    got, ok = decompressed_at_least([(bomb, 0)], "gzip", 1 << 40)   # never more than the stream holds
    assert ok and got == 64 << 20
    cut = tmp_path / "cut.raw.gz"
    cut.write_bytes(bomb.read_bytes()[:2000])
    hdr = tmp_path / "cut.nhdr"
    hdr.write_text(NRRD_HEAD.format(sizes="512 512 512", enc="gzip") + "data file: cut.raw.gz\n")
    from engine.errors import InputError
    from engine.io import load_case
    with pytest.raises(InputError, match="end before the voxels the header claims"):
        load_case(hdr)
