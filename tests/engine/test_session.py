"""What the app remembers between runs: recent cases, autosaved edits, time-left estimates."""
import numpy as np

from engine.session import AutosaveStore, EtaEstimator, RecentCases


def test_recent_cases_most_recent_first_without_duplicates(tmp_path):
    r = RecentCases(tmp_path)
    for name in ("a.nii.gz", "b.nii.gz", "a.nii.gz"):
        r.add(tmp_path / name)
    assert [p.split("/")[-1] for p in r.load()] == ["a.nii.gz", "b.nii.gz"]


def test_autosave_round_trip_and_discard(tmp_path):
    store = AutosaveStore(tmp_path)
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 5
    store.save("/data/ct.nii.gz", "ct", labels, "Brush stroke (CRLM lesions)")
    entry = store.find("/data/ct.nii.gz", labels.shape)
    assert entry is not None and entry.description == "Brush stroke (CRLM lesions)"
    np.testing.assert_array_equal(store.load(entry), labels)
    assert store.find("/data/other.nii.gz", labels.shape) is None
    assert store.find("/data/ct.nii.gz", (4, 5, 7)) is None
    store.discard("/data/ct.nii.gz", labels.shape)
    assert store.entries() == []


def test_eta_estimate():
    eta = EtaEstimator()
    assert eta.update("predict", 0, 10, now=0.0) is None
    assert eta.update("predict", 5, 10, now=10.0) == 10.0
    assert EtaEstimator.format(10.0) == "about 10 s left"
    assert EtaEstimator.format(125.0) == "about 2 min 05 s left"


def test_journal_records_round_trip_and_a_cut_off_record_is_ignored(tmp_path):
    from engine.session import encode_record, read_journal

    rng = np.random.default_rng(0)
    runs = np.zeros((5, 6, 7), np.uint8)
    runs[1:3, 2:4, :] = 5                                  # long runs: run-length coded
    noise = rng.integers(0, 6, (3, 4, 5)).astype(np.uint8)  # short runs: plain zlib
    whole = encode_record((0, 5, 0, 6, 0, 7), runs, "brush", "a") + encode_record((0, 3, 0, 4, 0, 5), noise, "fill", "b")
    last = encode_record((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), np.uint8), "erase", "c")
    path = tmp_path / "journal-0.bin"
    path.write_bytes(whole + last[:-3])                     # killed while writing the last record
    got = read_journal(path)
    assert [h["kind"] for _, _, h in got] == ["brush", "fill"]
    np.testing.assert_array_equal(got[0][1], runs)
    np.testing.assert_array_equal(got[1][1], noise)
    damaged = bytearray(whole)
    damaged[-1] ^= 0xFF                                     # a flipped bit in the second record's data
    path.write_bytes(bytes(damaged))
    assert len(read_journal(path)) == 1
