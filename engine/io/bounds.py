"""Bounded reading: the size an image header claims is checked before any voxel is read.

A 250-byte NRRD header saying ``data file: /dev/zero`` with 2000^3 voxels once made ``info`` grow past 15 GB:
the reader trusted the header and the device never ends. Before SimpleITK (or pynrrd) reads voxels:

* every data file an NRRD (``.nrrd``/``.nhdr``: ``data file:`` with one name, ``LIST`` or a
  ``<format> <min> <max> <step>`` pattern) or a MetaImage (``.mha``/``.mhd``: ``ElementDataFile`` with one
  name, ``LIST`` or a pattern) header names must be a regular file (never a device, a pipe or a folder);
* uncompressed data files together must hold the bytes the header claims; compressed ones (gzip, bzip2, zlib)
  are decompressed in bounded pieces up to that size only (a decompression bomb costs time proportional to
  the claim, never memory);
* the claimed size, times the copies opening a case makes, must fit in the memory available (the smaller of
  the machine's available memory and this process's address-space limit).

Refusals are :class:`~engine.errors.InputError` sentences. Headers are parsed here only as far as these
checks need; SimpleITK still reads the image.
"""
from __future__ import annotations

import bz2
import logging
import math
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Optional

from ..errors import InputError

log = logging.getLogger(__name__)

#: copies of the voxels alive at once while a case opens (file buffer, canonical copy, checks/conversion)
MEMORY_COPIES = 3
MAX_DATA_FILES = 100_000
_CHUNK = 1 << 20
_HEADER_LIMIT = 1 << 20          # a header (or a detached .nhdr/.mhd with its file list) larger than this: refused


def available_memory_bytes() -> Optional[int]:
    """Bytes this process can still allocate: the machine's available memory, capped by RLIMIT_AS (minus what
    the process already maps). None when unknown."""
    avail: Optional[int] = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil: /proc/meminfo on Linux, else unknown
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    try:
        import resource            # POSIX only (no address-space limit to honour on Windows)

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        unlimited = soft == resource.RLIM_INFINITY
    except (ImportError, ValueError, OSError, AttributeError):
        soft, unlimited = 0, True
    if not unlimited:
        used = 0
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
        left = max(0, int(soft) - used)
        avail = left if avail is None else min(avail, left)
    return avail


def check_memory(name: str, n_bytes: int, copies: int = MEMORY_COPIES) -> None:
    """Refuse an image whose voxels (``n_bytes`` as read) would not fit in the memory available."""
    avail = available_memory_bytes()
    if avail is not None and n_bytes * copies > avail:
        raise InputError(f"{name} claims {_gb(n_bytes)} of voxel data, more than this computer can hold while "
                         f"opening it ({_gb(avail)} of memory available; about {copies}x the image is needed). "
                         "If the file is genuine, open it on a computer with more memory or crop it first.")


def _gb(n: int) -> str:
    return f"{n / 1024 ** 3:.1f} GB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.0f} MB"


# ---------------------------------------------------------------------------------------------------------------
def _regular_file(header: Path, name: str) -> Path:
    p = Path(name)
    if not p.is_absolute():
        p = header.parent / p
    try:
        st = os.stat(p)                     # follows links: a link to /dev/zero is a device
    except (OSError, ValueError) as exc:    # ValueError: a name with a NUL byte
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid file name"
        raise InputError(f"{header.name} names the data file '{name[:80]!s}', which cannot be opened "
                         f"({why}).") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe or socket")
        raise InputError(f"{header.name} was refused: its data file '{name}' is {kind}, not a file. An image's "
                         "voxels must come from a regular file.")
    return p


def _pattern_files(fmt: str, lo: str, hi: str, step: str) -> list[str]:
    try:
        a, b, s = int(lo), int(hi), int(step)
    except ValueError:
        return []
    if s == 0 or (b - a) / s < 0 or abs((b - a) // s) + 1 > MAX_DATA_FILES:
        return []
    try:
        return [fmt % i for i in range(a, b + (1 if s > 0 else -1), s)]
    except (TypeError, ValueError):
        return []


def _nrrd_layout(path: Path) -> Optional[tuple[list[Path], str, int, int]]:
    """(data files, encoding, byte skip, offset of attached data) for an NRRD header; data files empty when the
    data are attached."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    if not head.startswith(b"NRRD"):
        return None
    end = head.find(b"\n\n")
    detached_header = path.name.lower().endswith(".nhdr")
    text = (head if end < 0 else head[:end]).decode("latin-1")
    lines = text.split("\n")
    fields: dict[str, str] = {}
    files: list[str] = []
    for i, line in enumerate(lines[1:], 1):
        line = line.rstrip("\r")
        if not line or line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        fields[key] = value
        if key in ("data file", "datafile"):
            parts = value.split()
            if parts and parts[0].upper() == "LIST":
                files = [ln.strip() for ln in lines[i + 1:] if ln.strip()]
            elif len(parts) >= 4 and "%" in parts[0]:
                files = _pattern_files(*parts[:4])
                if not files:
                    raise InputError(f"{path.name} was refused: its data file pattern '{value[:80]}' names no "
                                     f"file or more than {MAX_DATA_FILES}.")
            else:
                files = [value]
            break
    encoding = fields.get("encoding", "raw").lower()
    try:
        skip = int(fields.get("byte skip", "0"))
    except ValueError:
        skip = 0
    if not files and detached_header and end < 0:
        raise InputError(f"{path.name} is a detached NRRD header that names no data file.")
    offset = end + 2 if end >= 0 else len(head)
    return [_regular_file(path, f) for f in files], encoding, skip, offset


def _meta_layout(path: Path) -> Optional[tuple[list[Path], bool, int]]:
    """(data files, compressed, offset of LOCAL data) for a MetaImage header; files empty when LOCAL."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    m = re.search(rb"(?m)^\s*ElementDataFile\s*=\s*([^\r\n]*)\r?\n?", head)
    if not m:
        return None
    value = m.group(1).decode("latin-1").strip()
    compressed = bool(re.search(rb"(?im)^\s*CompressedData\s*=\s*True", head[:m.start()]))
    parts = value.split()
    if value.upper() == "LOCAL":
        return [], compressed, m.end()
    if parts and parts[0].upper() == "LIST":
        rest = head[m.end():].decode("latin-1").splitlines()
        files = [ln.strip() for ln in rest if ln.strip()]
    elif len(parts) >= 4 and "%" in parts[0]:
        files = _pattern_files(*parts[:4])
        if not files:
            raise InputError(f"{path.name} was refused: its data file pattern '{value[:80]}' names no file or "
                             f"more than {MAX_DATA_FILES}.")
    else:
        files = [value]
    if len(files) > MAX_DATA_FILES:
        raise InputError(f"{path.name} names more than {MAX_DATA_FILES} data files.")
    return [_regular_file(path, f) for f in files], compressed, 0


def decompressed_at_least(files: list[tuple[Path, int]], kind: str, need: int) -> tuple[int, bool]:
    """Decompress the streams (file, offset) one after the other, in bounded pieces, until ``need`` bytes came
    out; returns (bytes out, every stream was well-formed up to there). Never holds more than a few MB."""
    total = 0
    for path, offset in files:
        d = (zlib.decompressobj(16 + zlib.MAX_WBITS) if kind == "gzip" else
             zlib.decompressobj(zlib.MAX_WBITS) if kind == "zlib" else bz2.BZ2Decompressor())
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                pending = b""
                while total < need:
                    if kind == "bzip2":
                        if d.eof:
                            break
                        if d.needs_input:
                            pending = f.read(_CHUNK)
                            if not pending:
                                break
                        out = d.decompress(pending, max_length=_CHUNK)
                        pending = b""
                    else:
                        if d.eof:
                            break
                        data = d.unconsumed_tail or f.read(_CHUNK)
                        out = d.decompress(data, _CHUNK)   # b"" at the end flushes what zlib still holds
                        if not data and not out:
                            break
                    total += len(out)
        except (zlib.error, OSError, EOFError, ValueError):
            return total, False
    return total, True


def check_data_files(path: Path) -> None:
    """Before a reader opens the header: the file and every data file it names must be regular files, and the
    header's core fields (dimension, sizes, types) must make sense (ITK's MetaImage reader crashes the process
    on ``NDims = -1``)."""
    check_regular_input(path)
    name = path.name.lower()
    try:
        if name.endswith((".nrrd", ".nhdr")):
            _check_nrrd_fields(path)
            _nrrd_layout(path)
        elif name.endswith((".mha", ".mhd")):
            _check_meta_fields(path)
            _meta_layout(path)
    except OSError as exc:
        raise InputError(f"{path.name} could not be read ({exc.strerror or exc}).") from None


_META_TYPES = {"MET_CHAR", "MET_UCHAR", "MET_SHORT", "MET_USHORT", "MET_INT", "MET_UINT", "MET_LONG", "MET_ULONG",
               "MET_LONG_LONG", "MET_ULONG_LONG", "MET_FLOAT", "MET_DOUBLE"}
_NRRD_TYPES = {"signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t", "short", "short int",
               "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
               "unsigned short int", "uint16", "uint16_t", "int", "signed int", "int32", "int32_t", "uint",
               "unsigned int", "uint32", "uint32_t", "longlong", "long long", "long long int", "signed long long",
               "signed long long int", "int64", "int64_t", "ulonglong", "unsigned long long",
               "unsigned long long int", "uint64", "uint64_t", "float", "double"}
_NRRD_ENCODINGS = {"raw", "txt", "text", "ascii", "hex", "gz", "gzip", "bz2", "bzip2"}


def _bad_field(path: Path, field: str, value: str, need: str) -> InputError:
    return InputError(f"{path.name} could not be read: its header field '{field}' is '{value[:40]}', {need}. "
                      "The file is damaged or was not written by an imaging program.")


def _ints(path: Path, field: str, value: str, n: Optional[int], low: int, high: int) -> list[int]:
    try:
        vals = [int(v) for v in value.split()]
    except ValueError:
        raise _bad_field(path, field, value, "not whole numbers") from None
    if (n is not None and len(vals) != n) or not vals or any(not low <= v <= high for v in vals):
        raise _bad_field(path, field, value, f"where {n or 'some'} whole number(s) from {low} to {high} are needed")
    return vals


def _check_meta_fields(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT).decode("latin-1")
    fields: dict[str, str] = {}
    for line in head.split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        fields[key] = value.strip()
        if key == "ElementDataFile":
            break
    if "NDims" not in fields:
        return                               # not a MetaImage header: the reader says so
    nd = _ints(path, "NDims", fields["NDims"], 1, 1, 8)[0]
    if "DimSize" in fields:
        _ints(path, "DimSize", fields["DimSize"], nd, 1, 2 ** 31 - 1)
    if "ElementNumberOfChannels" in fields:
        _ints(path, "ElementNumberOfChannels", fields["ElementNumberOfChannels"], 1, 1, 64)
    if "HeaderSize" in fields:
        _ints(path, "HeaderSize", fields["HeaderSize"], 1, -1, 2 ** 40)
    if "CompressedDataSize" in fields:
        _ints(path, "CompressedDataSize", fields["CompressedDataSize"], 1, 0, 2 ** 50)
    et = fields.get("ElementType")
    if et is not None and et not in _META_TYPES:
        raise _bad_field(path, "ElementType", et, "not a voxel type")
    for key, count in (("ElementSpacing", nd), ("ElementSize", nd), ("Offset", nd), ("Position", nd),
                       ("Origin", nd), ("CenterOfRotation", nd), ("TransformMatrix", nd * nd),
                       ("Rotation", nd * nd), ("Orientation", nd * nd)):
        if key in fields:
            try:
                vals = [float(v) for v in fields[key].split()]
            except ValueError:
                raise _bad_field(path, key, fields[key], "not numbers") from None
            if len(vals) != count or not all(math.isfinite(v) for v in vals):
                raise _bad_field(path, key, fields[key], f"where {count} finite numbers are needed")


def _check_nrrd_fields(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    if not head.startswith(b"NRRD"):
        return
    end = head.find(b"\n\n")
    fields: dict[str, str] = {}
    for line in (head if end < 0 else head[:end]).decode("latin-1").split("\n")[1:]:
        line = line.rstrip("\r")
        if not line or line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
        if key.strip().lower() in ("data file", "datafile"):
            break
    if "dimension" not in fields:
        return
    nd = _ints(path, "dimension", fields["dimension"], 1, 1, 16)[0]
    if "sizes" in fields:
        _ints(path, "sizes", fields["sizes"], nd, 1, 2 ** 31 - 1)
    if "type" in fields and fields["type"].lower() not in _NRRD_TYPES:
        raise _bad_field(path, "type", fields["type"], "not a voxel type")
    if "encoding" in fields and fields["encoding"].lower() not in _NRRD_ENCODINGS:
        raise _bad_field(path, "encoding", fields["encoding"], "not an encoding NRRD knows")
    for key in ("byte skip", "line skip"):
        if key in fields:
            _ints(path, key, fields[key], 1, -1, 2 ** 40)


def check_image_bytes(path: Path, expected: int) -> None:
    """Before any voxel is read: refuse (InputError) a header whose data files are not regular files, hold
    fewer bytes than ``expected`` (the bytes the header's size and type claim), or whose claim does not fit in
    memory. Attached data are checked by :func:`engine.io.integrity.check_complete`."""
    check_memory(path.name, expected)
    name = path.name.lower()
    try:
        if name.endswith((".nrrd", ".nhdr")):
            layout = _nrrd_layout(path)
            if layout is None or not layout[0]:
                return
            files, encoding, skip, _ = layout
            if encoding == "raw":
                have = sum(max(0, f.stat().st_size - max(skip, 0)) for f in files)
                if have < expected:
                    raise InputError(f"{path.name} could not be read: its data file(s) hold {have} bytes where "
                                     f"the header claims {expected}.")
            elif encoding in ("gzip", "gz", "bzip2", "bz2"):
                kind = "gzip" if encoding.startswith("g") else "bzip2"
                got, ok = decompressed_at_least([(f, max(skip, 0)) for f in files], kind, expected)
                if not ok or got < expected:
                    raise InputError(f"{path.name} could not be read: its compressed data file(s) end before the "
                                     "voxels the header claims (damaged or cut off).")
        elif name.endswith((".mha", ".mhd")):
            layout = _meta_layout(path)
            if layout is None or not layout[0]:
                return
            files, compressed, _ = layout
            if compressed:
                got, ok = decompressed_at_least([(f, 0) for f in files], "zlib", expected)
                if not ok or got < expected:
                    raise InputError(f"{path.name} could not be read: its compressed data file(s) end before the "
                                     "voxels the header claims (damaged or cut off).")
            else:
                have = sum(f.stat().st_size for f in files)
                if have < expected:
                    raise InputError(f"{path.name} could not be read: its data file(s) hold {have} bytes where "
                                     f"the header claims {expected}.")
    except OSError as exc:
        raise InputError(f"{path.name} could not be read ({exc.strerror or exc}).") from None


def check_regular_input(path: Path) -> None:
    """The file itself must be a regular file (a link to /dev/zero named ct.nrrd is a device)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:     # ValueError: a name with a NUL byte
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid file name"
        raise InputError(f"{path} cannot be opened: {why}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path.name} is not a regular file (a device, pipe or folder); LiverPlan reads images "
                         "only from files.")
