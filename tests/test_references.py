"""Initial states (`qflow_jax.husimi.initial`) and the references of phase-space
methods (`qflow_jax.references`) against exact solutions."""

import jax
import numpy as np
import pytest

from qflow_jax.husimi import a, adag, cat_q, husimi_q
from qflow_jax.husimi.initial import CatState, CoherentState, FockState, ThermalState
from qflow_jax.husimi.models import DampedChain
from qflow_jax.husimi.states import sample_cat_q
from qflow_jax.lindblad import TruncationError
from qflow_jax.references import ExactDampedChain, FockReference, TrajectoryReference


def test_fock_reference_equals_the_exact_damped_solution():
    w, g, J = 1.0, 0.7, 0.4
    chain = DampedChain(2, w, g, J)
    H, jumps = chain.operators()
    initial = CoherentState([1.0, 0.5j])
    tsave = np.linspace(0.0, 1.5, 4)
    fock = FockReference(H, jumps, initial, tsave, cutoff=12)
    exact = ExactDampedChain(chain, initial, tsave)
    # 12 levels: the top one holds e^-1/11! ~ 1e-8 of |alpha| = 1; mesolve rtol 1e-8
    np.testing.assert_allclose(fock.n_ref, exact.n_ref, atol=1e-7)
    np.testing.assert_allclose(fock.a_ref, exact.a_ref, atol=1e-7)
    alphas = np.array([[0.3 + 0.2j, -0.5 + 1.0j], [1.5 - 0.3j, 0.0]])
    for i in range(len(tsave)):
        for mode in (0, 1):
            np.testing.assert_allclose(
                fock.q_marginal(i, mode, alphas),
                exact.q_marginal(i, mode, alphas),
                atol=1e-7,
            )
    assert fock.info["max_top_population"] < 1e-8


def test_exact_kl_of_the_exact_density_is_zero_and_of_a_shifted_one_known():
    chain = DampedChain(1, 1.0, 0.5)
    exact = ExactDampedChain(chain, CoherentState([1.0]), [0.0, 1.0])
    same = CoherentState(exact.a_ref[1])
    assert exact.kl_exact(1, same.log_q, jax.random.key(0), 1000) == pytest.approx(0)
    # KL of two Gaussians N(m, I/2) shifted by d: |d|^2
    shifted = CoherentState(exact.a_ref[1] + 0.3)
    kl = exact.kl_exact(1, shifted.log_q, jax.random.key(0), 200_000)
    assert kl == pytest.approx(0.09, abs=5e-3)


def test_kl_of_a_flow_against_the_trajectories_final_kets():
    """Pure loss keeps a coherent state coherent on every trajectory, so the
    trajectories' Q at t_end is the exact Gaussian: KL(q || Q) of the exact
    density is 0 and of one shifted by d is |d|^2 (as for kl_exact)."""
    tsave = [0.0, 1.0]
    ref = TrajectoryReference(
        0.5 * adag(0) @ a(0),
        [a(0)],
        CoherentState([1.0]),
        tsave,
        max_excitations=14,
        ntraj=20,
        key=jax.random.key(0),
        keep_final_states=True,
    )
    assert ref.final_kets.shape == (20, 15)
    assert ref.kl_flow(0, np.zeros((4, 2)), np.zeros(4)) is None  # t_end only
    exact = CoherentState(ref.a_ref[1])
    for shift, kl_true in [(0.0, 0.0), (0.3, 0.09)]:
        q = CoherentState(ref.a_ref[1] + shift)
        x = q.sample(jax.random.key(1), 4000)
        kl, err = ref.kl_flow(1, x, q.log_q(x))
        assert abs(kl - kl_true) < 4 * err + 1e-8, (kl, err)
    x = exact.sample(jax.random.key(1), 200)
    assert ref.kl_flow(1, x, exact.log_q(x))[0] == pytest.approx(0.0, abs=1e-8)


def test_a_too_small_cutoff_is_refused():
    H = 0.25 * adag(0) @ adag(0) @ a(0) @ a(0)
    with (
        pytest.raises(TruncationError) as err,
        pytest.warns(UserWarning, match="loses"),
    ):
        FockReference(H, [a(0)], CoherentState([2.0]), [0.0, 0.1], cutoff=8)
    assert err.value.mode == 0 and err.value.population > 1e-4


@pytest.mark.parametrize(
    ("state", "n_mean"), [(FockState([2]), 2.0), (ThermalState([1.5]), 1.5)]
)
def test_exact_initial_samplers_follow_q0(state, n_mean):
    x = state.sample(jax.random.key(0), 200_000)
    n = np.mean(np.sum(np.asarray(x) ** 2, -1)) - 1  # <n> = E|alpha|^2 - 1
    np.testing.assert_allclose(n, n_mean, atol=0.02)
    # the analytic log Q(0) is the Husimi function of the Fock-basis state
    y = np.array([[0.3, -0.4], [1.2, 0.5]])
    Q = husimi_q(state.density_matrix(40), (y[:, 0] + 1j * y[:, 1])[:, None])
    # (rtol: the thermal state truncated at 40 levels misses (1.5/2.5)^40 ~ 1e-9)
    np.testing.assert_allclose(np.exp(state.log_q(y)), Q, rtol=1e-7)


def test_cat_state_log_q_is_the_husimi_function_of_its_density_matrix():
    state = CatState([1.5], -1)
    y = np.array([[0.3, -0.4], [1.2, 0.5], [0.0, 0.01]])
    Q = husimi_q(state.density_matrix(40), (y[:, 0] + 1j * y[:, 1])[:, None])
    np.testing.assert_allclose(np.exp(state.log_q(y)), Q, rtol=1e-9)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FockState([1.5]), "integers"),
        (lambda: ThermalState([-1.0]), ">= 0"),
        (lambda: CoherentState([]), "non-empty"),
        (lambda: CatState([1.0, 2.0]), "one mode"),
        (lambda: CatState([0.0], -1), "nonzero"),
        (lambda: CatState([1.0], 2), "`sign`"),
    ],
)
def test_bad_initial_states_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cat_samples_follow_q_with_its_fringes(sign):
    n = 400_000
    x = np.asarray(sample_cat_q(jax.random.key(3), 2.0, sign, n))
    # <n> = |a0|^2 tanh(|a0|^2) (even) or coth (odd); E|alpha|^2 = <n> + 1
    n_cat = 4.0 * np.tanh(4.0) ** sign
    se = np.std(np.sum(x**2, -1)) / np.sqrt(n)
    assert abs(np.mean(np.sum(x**2, -1)) - 1 - n_cat) < 4 * se
    # the interference term doubles Q near the origin for the even cat and almost
    # empties it for the odd one, relative to the mixture of the two Gaussians
    r = 0.3
    inside = np.mean(np.sum(x**2, -1) < r**2)
    rho, phi = np.meshgrid(
        np.linspace(0, r, 201)[1:] - r / 400, np.arange(64) * np.pi / 32
    )
    y = np.stack([rho * np.cos(phi), rho * np.sin(phi)], -1)
    expected = np.sum(cat_q(2.0, sign)(y) * rho) * (r / 200) * (np.pi / 32)
    mixture = np.exp(-4.0) * (1 - np.exp(-(r**2)))  # the same without interference
    assert abs(expected - mixture) > 0.5 * mixture
    assert abs(inside - expected) < 4 * np.sqrt(expected / n)


@pytest.mark.parametrize(
    "state",
    [CoherentState([1.0 + 0.5j]), FockState([1]), ThermalState([0.5]), CatState([1.0])],
)
def test_initial_states_run_inside_traced_functions(state):
    y = np.array([[0.3, -0.4], [1.2, 0.5]])
    np.testing.assert_allclose(jax.jit(state.log_q)(y), state.log_q(y), rtol=1e-12)
    x = jax.jit(state.sample, static_argnums=1)(jax.random.key(0), 8)
    assert x.shape == (8, 2) and np.all(np.isfinite(np.asarray(x)))


# two Bose-Hubbard sites with Kerr, hopping and loss: interacting, so only a Fock
# computation gives the answer
BH_H = 0.5 * (adag(0) ** 2 @ a(0) ** 2 + adag(1) ** 2 @ a(1) ** 2) - 0.5 * (
    adag(0) @ a(1) + adag(1) @ a(0)
)
BH_JUMPS = [np.sqrt(0.3) * a(0), np.sqrt(0.3) * a(1)]


@pytest.fixture(scope="module")
def bose_hubbard_refs():
    initial = CoherentState([1.0, 0.5j])
    tsave = np.linspace(0.0, 1.5, 4)
    fock = FockReference(BH_H, BH_JUMPS, initial, tsave, cutoff=12)
    traj = TrajectoryReference(
        BH_H,
        BH_JUMPS,
        initial,
        tsave,
        max_excitations=12,
        ntraj=400,
        key=jax.random.key(0),
        marginal_modes=(0, 1),
    )
    return fock, traj


def test_trajectory_reference_agrees_with_the_fock_reference(bose_hubbard_refs):
    fock, traj = bose_hubbard_refs
    # 1.25 quanta on average: P(N > 12) = 9.2e-10 for a Poisson total
    assert 5e-10 < traj.info["truncated_weight"] < 1e-9
    assert traj.info["dimension"] == 91  # C(2 + 12, 12)
    # within 4 standard errors (16 numbers each: 1 in ~2000 falls outside 4 sigma),
    # plus mcsolve's tolerance for t = 0, where the spread is 0
    np.testing.assert_array_less(
        np.abs(traj.n_ref - fock.n_ref), 4 * traj.n_stderr + 1e-5
    )
    np.testing.assert_array_less(
        np.abs(traj.a_ref - fock.a_ref), 4 * traj.a_stderr + 1e-5
    )
    assert traj.info["max_n_stderr"] > 1e-3  # the trajectories do spread (5e-3)
    # Q marginals from the averaged reduced states of 400 trajectories (measured
    # 1.4e-3 at most, for Q up to 0.28)
    alphas = np.array([0.3 + 0.2j, -0.5 + 1.0j, 1.2 - 0.3j, 0.0])
    for i in range(4):
        for mode in (0, 1):
            np.testing.assert_allclose(
                traj.q_marginal(i, mode, alphas),
                fock.q_marginal(i, mode, alphas),
                atol=4e-3,
            )


def test_trajectory_reference_refuses_what_it_cannot_do(bose_hubbard_refs):
    _, traj = bose_hubbard_refs
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="leaves out .* raise `max_excitations`"):
        TrajectoryReference(
            BH_H,
            BH_JUMPS,
            CoherentState([2.0, 0.0]),
            [0.0, 1.0],
            max_excitations=3,
            ntraj=2,
            key=key,
        )
    with pytest.raises(ValueError, match="below the 3 quanta"):
        TrajectoryReference(
            BH_H,
            BH_JUMPS,
            FockState([2, 1]),
            [0.0, 1.0],
            max_excitations=2,
            ntraj=2,
            key=key,
        )
    with pytest.raises(TypeError, match="CoherentState or FockState"):
        TrajectoryReference(
            BH_H,
            BH_JUMPS,
            ThermalState([0.5, 0.5]),
            [0.0, 1.0],
            max_excitations=6,
            ntraj=2,
            key=key,
        )
    with pytest.raises(ValueError, match="modes \\(0, 1\\) only, not of mode 2"):
        traj.q_marginal(0, 2, [0.0])


def test_trajectory_reference_is_read_back_from_its_cache(tmp_path, capsys):
    cache = tmp_path / "reference.npz"
    args = (adag(0) @ a(0), [a(0)], FockState([2]), [0.0, 0.5, 1.0])
    kw = {"max_excitations": 2, "ntraj": 50, "key": jax.random.key(3), "cache": cache}
    first = TrajectoryReference(*args, **kw, progress=True)  # mcsolve's bar
    assert "mcsolve: 100%" in capsys.readouterr().err
    assert cache.is_file() and "cached" not in first.info
    again = TrajectoryReference(*args, **kw)
    assert again.info["cached"] == str(cache)
    np.testing.assert_array_equal(again.n_ref, first.n_ref)
    np.testing.assert_array_equal(again.reduced, first.reduced)
    # other inputs (another key) solve again, and replace the cache
    other = TrajectoryReference(*args, **(kw | {"key": jax.random.key(4)}))
    assert "cached" not in other.info
    assert not np.array_equal(other.n_ref, first.n_ref)
