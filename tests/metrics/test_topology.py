"""Betti numbers (26/6 connectivity) on shapes with known topology, cross-checked with skimage and gudhi."""
import numpy as np
import pytest

from metrics import topology as T
from shapes import ball, blob, cube, hollow_sphere, torus, vessel_tree_with_loops


def gudhi_betti(m):
    gudhi = pytest.importorskip("gudhi")
    cc = gudhi.CubicalComplex(top_dimensional_cells=np.where(m, 0.0, 1.0))
    cc.compute_persistence(homology_coeff_field=2, min_persistence=0)
    b = list(cc.persistent_betti_numbers(0.0, 0.0)) + [0, 0, 0]
    return tuple(int(x) for x in b[:3])


def test_solid_torus_has_one_loop():
    b = T.betti_numbers(torus())
    assert (b.b0, b.b1, b.b2, b.euler) == (1, 1, 0, 0)


def test_hollow_sphere_has_one_cavity():
    b = T.betti_numbers(hollow_sphere())
    assert (b.b0, b.b1, b.b2, b.euler) == (1, 0, 1, 2)


def test_separate_balls_and_single_voxel():
    m = ball((20, 20, 40), (10, 10, 10), 5) | ball((20, 20, 40), (10, 10, 30), 5)
    assert T.betti_numbers(m) == T.Betti(2, 0, 0, 2)
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    assert T.betti_numbers(one) == T.Betti(1, 0, 0, 1)


def test_corner_touching_voxels_are_one_component():
    m = np.zeros((4, 4, 4), bool)
    m[1, 1, 1] = m[2, 2, 2] = True           # share only a corner: 26-connected
    assert T.betti_numbers(m).b0 == 1


def test_vessel_tree_loops():
    assert T.betti_numbers(vessel_tree_with_loops(n_loops=2)).b1 == 2
    assert T.betti_numbers(vessel_tree_with_loops(n_loops=0)).b1 == 0


def test_empty_mask_is_all_zero():
    assert T.betti_numbers(np.zeros((5, 5, 5), bool)) == T.Betti(0, 0, 0, 0)


def test_mask_touching_the_array_edge():
    m = cube((10, 10, 10), (0, 0, 0), (10, 10, 10)) & ~cube((10, 10, 10), (3, 3, 3), (4, 4, 4))
    assert T.betti_numbers(m) == T.Betti(1, 0, 1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_euler_equals_skimage(seed):
    from skimage.measure import euler_number
    m = blob((20, 22, 24), seed, sigma=1.5)
    assert T.euler_characteristic(m) == euler_number(m, connectivity=3)


@pytest.mark.parametrize("name", ["torus", "hollow", "tree", "blob"])
def test_betti_equals_gudhi_cubical_homology(name):
    m = {"torus": torus(), "hollow": hollow_sphere(), "tree": vessel_tree_with_loops(),
         "blob": blob((20, 22, 24), 7, sigma=1.5)}[name]
    b = T.betti_numbers(m)
    assert (b.b0, b.b1, b.b2) == gudhi_betti(m)


def test_betti_errors():
    e = T.betti_errors(T.betti_numbers(torus()), T.betti_numbers(hollow_sphere()))
    assert e == {"betti0_error": 0.0, "betti1_error": 1.0, "betti2_error": 1.0, "euler_error": 2.0}
