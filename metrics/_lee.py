"""Lee (1994) 3D thinning, voxel-for-voxel identical to ``skimage.morphology.skeletonize`` on 3D masks,
compiled with numba and working on the object's surface instead of the whole volume.

scikit-image (``_skeletonize_lee_cy._compute_thin_image``, after Arganda-Carreras' Skeletonize3D) repeats,
until one full round of the border directions deletes nothing:

1. scan the WHOLE padded volume in raster order and list every foreground voxel whose neighbour in the
   current direction is background and that is deletable (not an end point, Euler invariant, simple) in
   the image as it stands at the start of the scan;
2. re-check those candidates sequentially in the same order against the image as it is being thinned,
   and delete each that still passes (scikit-image <= 0.26: the simple-point test only; its development
   branch since: the whole test, and another direction order). :data:`VARIANTS` holds both;
   :func:`installed_variant` picks the one the installed scikit-image runs, by thinning probe masks.

This module does exactly that, with changes that do not change which voxels are deleted or when:

* the scan walks a list of *active* voxels (foreground voxels with a 6-neighbour in the background:
  only they can be border points) instead of the whole volume. A voxel joins the list when a
  6-neighbour is deleted. The scan's order does not matter (nothing changes during it); the candidates
  are put back in raster order for the re-check through a bitmap of the volume (one bit per voxel,
  read 64 voxels a word between the lowest and the highest candidate);
* "deletable" depends only on the voxel's 3x3x3 neighbourhood, so it is cached per voxel and forgotten
  when a voxel of that neighbourhood is deleted. A voxel whose cached answer is "not deletable" leaves
  the list until a neighbour's deletion makes it dirty again; in the re-check, a candidate whose
  neighbourhood has not changed since the scan is deleted without re-testing;
* the neighbourhood is a 27-bit integer: end point = one neighbour; the Euler test uses Lee's table
  (column delta-G26 of Table 2) on the same eight octants as skimage (all eight table indices from four
  byte look-ups); "simple" (the 26 neighbours form one 26-connected component, skimage's octree
  labelling) is a flood fill by bit-parallel 3x3x3 dilation.

The cost goes from O(volume x iterations) to O(surface x iterations + deleted voxels): about 75 ns per
deleted voxel, against scikit-image's ~2 ns per voxel of the box per direction pass. The gain is
therefore largest for sparse, branching objects (vessels) and smallest for a thick tube that fills its
box. The compiled functions release the GIL (two masks can be thinned in two threads) and are cached
on disk by numba (``cache=True``), so only the very first call on a machine pays the compilation.

Importing this module imports numba (it stays importable without it; :func:`thin` then refuses);
:mod:`metrics.centerline` imports it on the first skeleton and falls back to scikit-image when numba is
missing or fails.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
    HAVE_NUMBA = True
except ImportError:  # metrics.centerline then thins with scikit-image; keep this module importable
    HAVE_NUMBA = False

    def njit(*args, **kwargs):
        return lambda f: f

# Lee et al. 1994, Table 2, column delta-G26, at the odd indices (skimage's fill_Euler_LUT)
_EULER_ODD = [1, -1, -1, 1, -3, -1, -1, 1, -1, 1, 1, -1, 3, 1, 1, -1, -3, -1,
              3, 1, 1, -1, 3, 1, -1, 1, 1, -1, 3, 1, 1, -1, -3, 3, -1, 1, 1,
              3, -1, 1, -1, 1, 1, -1, 3, 1, 1, -1, 1, 3, 3, 1, 5, 3, 3, 1,
              -1, 1, 1, -1, 3, 1, 1, -1, -7, -1, -1, 1, -3, -1, -1, 1, -1,
              1, 1, -1, 3, 1, 1, -1, -3, -1, 3, 1, 1, -1, 3, 1, -1, 1, 1,
              -1, 3, 1, 1, -1, -3, 3, -1, 1, 1, 3, -1, 1, -1, 1, 1, -1, 3,
              1, 1, -1, 1, 3, 3, 1, 5, 3, 3, 1, -1, 1, 1, -1, 3, 1, 1, -1]
EULER_LUT = np.zeros(256, np.int64)
EULER_LUT[1::2] = _EULER_ODD

# neighbourhood indices of the eight octants, in skimage's order (NEB, NWB, SEB, SWB, NEU, NWU, SEU, SWU);
# the j-th index sets bit 7 - j of the octant's table index
OCTANTS = np.array([[2, 1, 11, 10, 5, 4, 14],
                    [0, 9, 3, 12, 1, 10, 4],
                    [8, 7, 17, 16, 5, 4, 14],
                    [6, 15, 7, 16, 3, 12, 4],
                    [20, 23, 19, 22, 11, 14, 10],
                    [18, 21, 9, 12, 19, 22, 10],
                    [26, 23, 17, 14, 25, 22, 16],
                    [24, 25, 15, 16, 21, 22, 12]], np.int64)


def _octant_byte_tables() -> np.ndarray:
    """(4, 256) int64: for byte b of a 27-bit neighbourhood with value v, the bits that v sets in the eight
    octants' table indices: bits 1-7 of octant o's index in bits 7o..7o+6 (bit 0 is always set), so all
    eight indices cost 4 look-ups."""
    t = np.zeros((4, 256), np.int64)
    for b in range(4):
        for v in range(256):
            packed = 0
            for o in range(8):
                for j in range(7):
                    k = int(OCTANTS[o, j])
                    if k // 8 == b and (v >> (k % 8)) & 1:
                        packed |= 1 << (7 * o + 6 - j)
            t[b, v] = packed
    return t


OCTANT_BYTES = _octant_byte_tables()

# Neighbourhood bit k = 9 * (dp + 1) + 3 * (dc + 1) + (dr + 1) (skimage's get_neighborhood numbering:
# r varies fastest, then c, then p). Masks of the bits on each face of the 3x3x3 cube, for dilation.
_K = np.arange(27)
_FULL = np.int64((1 << 27) - 1)
_CENTRE = np.int64(1 << 13)


def _face(sel) -> np.int64:
    return np.int64(sum(1 << int(k) for k in _K[sel]))


_LO1, _HI1 = _face(_K % 3 == 0), _face(_K % 3 == 2)
_LO3, _HI3 = _face((_K // 3) % 3 == 0), _face((_K // 3) % 3 == 2)
_LO9, _HI9 = _face(_K // 9 == 0), _face(_K // 9 == 2)


@njit(cache=True, nogil=True, inline="always")
def _dilate(x):
    """3x3x3 dilation of a 27-bit neighbourhood (separable: three 1D dilations)."""
    x = x | ((x & ~_HI1) << 1) | ((x & ~_LO1) >> 1)
    x = x | ((x & ~_HI3) << 3) | ((x & ~_LO3) >> 3)
    x = x | ((x & ~_HI9) << 9) | ((x & ~_LO9) >> 9)
    return x & _FULL


@njit(cache=True, nogil=True)
def _deletable(m, lut, octants):
    """skimage's test on a 27-bit neighbourhood (centre set): not an end point, Euler invariant, simple.

    ``octants``: :data:`OCTANT_BYTES`; the octant table indices are skimage's (bit 7 - j for the j-th
    neighbour of the octant, bit 0 always set)."""
    m26 = m & ~_CENTRE
    # end point: exactly one foreground neighbour
    if m26 != 0 and (m26 & (m26 - 1)) == 0:
        return False
    packed = (octants[0, _u(m & 255)] | octants[1, _u((m >> 8) & 255)] | octants[2, _u((m >> 16) & 255)]
              | octants[3, _u((m >> 24) & 255)])
    euler = 0
    for o in range(8):
        euler += lut[_u((((packed >> (7 * o)) & 127) << 1) | 1)]
    if euler != 0:
        return False
    return _simple(m26)


@njit(cache=True, nogil=True)
def _simple(m26):
    """skimage's simple-point test: the 26 neighbours (centre bit clear) form at most one 26-connected
    component (skimage's octree labelling; paths may not pass through the centre)."""
    if m26 == 0:
        return True
    comp = m26 & (-m26)
    while True:
        nxt = _dilate(comp) & m26
        if nxt == comp:
            break
        comp = nxt
    return comp == m26


@njit(cache=True, nogil=True, inline="always")
def _u(i):
    """An index known to be >= 0, as unsigned: numba then skips its negative-index wrap-around check
    (measured ~20% of the thinning time)."""
    return np.uint64(i)


# Per-voxel state bits (one byte per voxel of the padded box).
FG = 1          # foreground
BORDER = 2      # foreground with a background 6-neighbour (only these can be border points)
ACTIVE = 4      # in the active list or in the pending additions
KNOWN = 8       # the deletability test result below is valid (no neighbour deleted since)
DELOK = 16      # deletable: not an end point, Euler invariant, simple


@njit(cache=True, nogil=True, inline="always")
def _bits(state, x, offs):
    """27-bit neighbourhood code of voxel x (bit k = foreground at x + offs[k])."""
    m = np.int64(0)
    for k in range(27):
        m |= np.int64(state[_u(x + offs[k])] & FG) << k
    return m


# Lowest set bit -> its index: de Bruijn multiplication (numba has no count-trailing-zeros intrinsic).
_DEBRUIJN = 0x03F79D71B4CB0A89
_DEBRUIJN_INDEX = np.zeros(64, np.int64)
for _i in range(64):
    _DEBRUIJN_INDEX[(((1 << _i) * _DEBRUIJN) & ((1 << 64) - 1)) >> 58] = _i


@njit(cache=True, nogil=True)
def _thin(state, n_fg, dir_offs, six, offs, face, lut, octants, debruijn_index, full_recheck):
    """Thin the flat padded state image (FG bit = foreground) in place (see the module docstring).

    ``face[k]`` is BORDER for the six face neighbours k of the 27-neighbourhood, else 0.
    ``full_recheck``: the sequential re-check repeats the whole test (newer scikit-image) or only the
    simple-point test (scikit-image <= 0.26, which can delete end points and isolated voxels there).

    The active list is unordered; the candidates of a sub-iteration are put in raster order through a
    bitmap of the volume (one bit per voxel, read 64 voxels per word between the lowest and highest
    candidate), which costs far less than sorting them.
    """
    n = state.size
    act = np.empty(n_fg, np.int64)
    cand_bits = np.zeros(n // 64 + 1, np.int64)
    n_act = 0
    for x in range(n):
        if state[x] & FG:
            for s in range(6):
                if (state[x + six[s]] & FG) == 0:
                    act[n_act] = x
                    n_act += 1
                    state[x] |= BORDER | ACTIVE
                    break
    n_dirs = dir_offs.size
    unchanged = 0
    while unchanged < n_dirs:
        unchanged = 0
        for j in range(n_dirs):
            d = dir_offs[j]
            # drop deleted and known-undeletable voxels from the list; then
            # 1. candidates: border points in direction d that are deletable in the current image
            t = 0
            lo = n
            hi = -1
            for a in range(n_act):
                x = act[_u(a)]
                st = state[_u(x)]
                if (st & FG) == 0 or (st & (KNOWN | DELOK)) == KNOWN:
                    state[_u(x)] = st & ~ACTIVE
                    continue
                act[_u(t)] = x
                t += 1
                if (state[_u(x + d)] & FG) == 0:
                    if (st & KNOWN) == 0:
                        st |= KNOWN
                        if _deletable(_bits(state, x, offs), lut, octants):
                            st |= DELOK
                        state[_u(x)] = st
                    if st & DELOK:
                        w = x >> 6
                        cand_bits[_u(w)] |= np.int64(1) << (x & 63)
                        lo = min(lo, w)
                        hi = max(hi, w)
            n_act = t
            # 2. sequential re-check in raster order
            changed = False
            for w in range(lo, hi + 1):
                word = cand_bits[_u(w)]
                if word == 0:
                    continue
                cand_bits[_u(w)] = 0
                while word != 0:
                    low = word & -word
                    word ^= low
                    x = (w << 6) + debruijn_index[_u(((low * _DEBRUIJN) >> 58) & 63)]
                    st = state[_u(x)]
                    if (st & KNOWN) == 0:
                        # a neighbour was deleted since the scan: test the image as it is now
                        if full_recheck:
                            st |= KNOWN
                            if _deletable(_bits(state, x, offs), lut, octants):
                                st |= DELOK
                            state[_u(x)] = st
                            if (st & DELOK) == 0:
                                continue
                        elif not _simple(_bits(state, x, offs) & ~_CENTRE):
                            state[_u(x)] = st | KNOWN        # not simple, so not deletable either
                            continue
                    elif (st & DELOK) == 0:
                        continue
                    state[_u(x)] = 0
                    changed = True
                    # neighbours: forget their test result, mark face neighbours as border, list border
                    # voxels that are not in the list (a branch-free version measured slower)
                    for k in range(27):
                        y = x + offs[k]
                        s = state[_u(y)]
                        if s & FG:
                            s = (s | face[k]) & ~(KNOWN | DELOK)
                            if (s & (BORDER | ACTIVE)) == BORDER:
                                s |= ACTIVE
                                act[_u(n_act)] = y
                                n_act += 1
                            state[_u(y)] = s
            if not changed:
                unchanged += 1
    return state


# The two versions of skimage's loop seen so far: (direction order as skimage's border codes 1 N (c-1),
# 2 S (c+1), 3 E (r+1), 4 W (r-1), 5 U (p+1), 6 B (p-1); whether the re-check repeats the whole test).
VARIANTS: dict[str, tuple[tuple[int, ...], bool]] = {
    # scikit-image up to 0.26 (checked against the 0.26.0 source): re-check = simple-point test only
    "W,E,S,N,U,B; simple re-check": ((4, 3, 2, 1, 5, 6), False),
    # scikit-image's development branch after 0.26: ImageJ's order, re-check = the whole test
    "W,S,U,E,N,B; full re-check": ((4, 2, 5, 3, 1, 6), True),
}


def thin(mask: np.ndarray, planar: bool | None = None, variant: str | None = None) -> np.ndarray:
    """Lee skeleton (bool, same shape) of a boolean 3D (z, y, x) mask.

    ``variant``: a key of :data:`VARIANTS`; default: the one the installed scikit-image runs
    (:func:`installed_variant`), so the result equals ``skimage.morphology.skeletonize(mask)``.
    ``planar``: run skimage's four-direction loop, which it uses when the whole image has ONE z slice.
    Default: ``mask.shape[0] == 1``. Pass the original image's answer when thinning a crop of it.
    Raises RuntimeError when numba is missing or no variant reproduces the installed scikit-image.
    """
    if not HAVE_NUMBA:
        raise RuntimeError("numba is not installed")
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) mask, got shape {m.shape}")
    if variant is None:
        variant = installed_variant()
        if variant is None:
            raise RuntimeError("the installed scikit-image thins differently from every known variant")
    order, full = VARIANTS[variant]
    if planar is None:
        planar = m.shape[0] == 1
    n_fg = int(np.count_nonzero(m))
    if n_fg == 0:
        return np.zeros(m.shape, bool)
    img = np.zeros(tuple(k + 2 for k in m.shape), np.uint8)      # one voxel of background around
    img[1:-1, 1:-1, 1:-1] = m
    sz, sy = img.shape[1] * img.shape[2], img.shape[2]
    code = {1: -1, 2: 1, 3: sy, 4: -sy, 5: sz, 6: -sz}
    # skimage runs only the first four directions on a one-slice image
    dirs = np.array([code[b] for b in order], np.int64)[: 4 if planar else 6]
    six = np.array([-sz, -sy, -1, 1, sy, sz], np.int64)
    offs = np.array([dp * sz + dr * sy + dc for dp in (-1, 0, 1) for dc in (-1, 0, 1) for dr in (-1, 0, 1)],
                    np.int64)
    face = np.array([BORDER if abs(k // 9 - 1) + abs(k // 3 % 3 - 1) + abs(k % 3 - 1) == 1 else 0
                     for k in range(27)], np.uint8)
    flat = img.ravel()
    _thin(flat, n_fg, dirs, six, offs, face, EULER_LUT, OCTANT_BYTES, _DEBRUIJN_INDEX, full)
    return (img[1:-1, 1:-1, 1:-1] & FG).view(bool)


def _probe_shapes() -> list[np.ndarray]:
    """Small masks on which the variants differ from each other (and from most plausible bugs)."""
    from scipy import ndimage as ndi
    shapes = [np.array([[[1, 1], [1, 0]]], bool), np.ones((1, 3, 3), bool), np.ones((3, 3, 3), bool),
              np.ones((4, 5, 6), bool)]
    rng = np.random.default_rng(12345)
    for k in range(6):
        shapes.append(ndi.gaussian_filter(rng.random((10 + k, 12, 11)), 1.5) > 0.5)
        shapes.append(rng.random((6, 7, 8)) < 0.6)
    return shapes


_installed: list = []


def installed_variant() -> str | None:
    """The key of :data:`VARIANTS` that reproduces the installed ``skimage.morphology.skeletonize`` voxel
    for voxel on a set of probe masks (checked once per process, a few milliseconds); None if none does."""
    if not _installed:
        from skimage.morphology import skeletonize
        probes = [(s, skeletonize(s)) for s in _probe_shapes()]
        found = None
        for name in VARIANTS:
            if all(np.array_equal(thin(s, variant=name), ref) for s, ref in probes):
                found = name
                break
        _installed.append(found)
    return _installed[0]
