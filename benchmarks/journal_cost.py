"""What "nothing is lost" costs: the autosave journal and snapshot on a 512 x 512 x 300 case.

    .venv/bin/python benchmarks/journal_cost.py [--small]

Prints the time of one brush stroke's journal record (encode, append, fsync: on the GUI thread after each
step), of a whole-volume record (a segmentation or its undo) and of a snapshot (the periodic autosave,
off the GUI thread). The case is the one benchmarks/gui_speed.py uses (cached in the temp folder).
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from engine.session import AutosaveStore, encode_record
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gui_speed import _cached_case

    small = "--small" in sys.argv
    shape = (96, 128, 128) if small else (300, 512, 512)
    lab = _cached_case(shape, (2.5, 2.5, 2.5) if small else (1.0, 0.7, 0.7)).labels
    d = Path(tempfile.mkdtemp())
    try:
        store = AutosaveStore(d)
        folder = d / "autosave" / "journal"
        z, y, x = (n // 2 for n in shape)
        times = []
        for i in range(30):
            box = (z, z + 1, y, y + 15, x + i, x + 15 + i)
            t = time.perf_counter()
            store.append(folder, 0, encode_record(box, lab[z:z + 1, y:y + 15, x + i:x + 15 + i], "brush", "stroke"))
            times.append((time.perf_counter() - t) * 1000)
        print(f"brush-stroke record (1 x 15 x 15 box): encode + append + fsync median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms")
        t0 = time.perf_counter()
        rec = encode_record((0, shape[0], 0, shape[1], 0, shape[2]), lab, "segmentation", "Segmentation")
        t1 = time.perf_counter()
        store.append(folder, 0, rec)
        t2 = time.perf_counter()
        print(f"whole-volume record {shape}: encode {1000 * (t1 - t0):.0f} ms ({len(rec) / 1e6:.1f} MB), "
              f"append + fsync {1000 * (t2 - t1):.0f} ms")
        t0 = time.perf_counter()
        store.write_snapshot(d / "autosave" / "snapshot", 1, "source", "case", lab)
        print(f"snapshot (np.savez_compressed, atomic, fsync'd): {1000 * (time.perf_counter() - t0):.0f} ms")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
