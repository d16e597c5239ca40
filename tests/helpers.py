"""Random operators, states and qubit networks shared by the tests (a helper
module, not a test module: tests import from here, never from each other)."""

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import qutip

import qflow_jax as qf
from qflow_jax.cli import main
from qflow_jax.network import QubitNetwork


def rand_herm(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """A random n x n Hermitian matrix, entries of size ~scale / sqrt(n)."""
    A = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    return scale * (A + A.conj().T) / (2 * np.sqrt(n))


def rand_op(rng: np.random.Generator, n: int, scale: float = 0.5) -> np.ndarray:
    """A random complex n x n matrix (a jump operator)."""
    return scale * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / np.sqrt(n)


def rand_dm(rng: np.random.Generator, n: int, rank: int | None = None) -> np.ndarray:
    """A random n x n density matrix of the given rank (full by default)."""
    rank = n if rank is None else rank
    X = rng.normal(size=(n, rank)) + 1j * rng.normal(size=(n, rank))
    rho = X @ X.conj().T
    return rho / np.trace(rho)


def random_network(n: int, seed: int, k: float = 2.0, couplings: bool = True):
    """A QubitNetwork of n qubits with random local Hamiltonians, 0-2 random jumps
    per qubit, a random weighted graph and (when `couplings`) Heisenberg, XY and
    random two-qubit couplings."""
    rng = np.random.default_rng(seed)

    def herm(d):  # A + A^dag of a complex Gaussian A
        return rand_herm(rng, d, scale=2 * np.sqrt(d))

    jumps = [
        [
            0.4 * (rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)))
            for _ in range(j % 3)
        ]
        for j in range(n)
    ]
    pairs = []
    if couplings and n > 1:
        pairs = [(0, n - 1, "heisenberg", 0.3), (n - 1, 0, herm(4) * 0.2)]
        if n > 2:
            pairs.append((1, 2, "XY", 0.5))
    edges = (
        [
            (j, q, rng.uniform(0.5, 1.5))
            for j, q, _ in qf.network.graph_edges("random", n, p=0.6, seed=seed)
        ]
        if n > 1
        else []
    )
    return QubitNetwork(
        n,
        edges,
        k=k,
        H=[0.5 * herm(2) for _ in range(n)],
        jump_ops=jumps,
        couplings=pairs,
    )


def random_state(n: int, seed: int) -> np.ndarray:
    """A random full-rank density matrix of n qubits."""
    return rand_dm(np.random.default_rng(seed + 100), 2**n)


def liouvillian(net) -> np.ndarray:
    """The dense Liouvillian of a network (QuTiP's, column-stacking convention)."""
    H, jumps = net.dense_operators()
    return qutip.liouvillian(qutip.Qobj(H), [qutip.Qobj(L) for L in jumps]).full()


def vec(rho: np.ndarray) -> np.ndarray:
    """Column-stacked vec(rho), QuTiP's convention."""
    return rho.reshape(-1, order="F")


def qflow(args: list[str]) -> tuple[int, str]:
    """Runs the `qflow` CLI in this process: (exit code, stderr)."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse's errors
            code = exit_.code
    return code, err.getvalue()


def assert_refused(args: list[str], message: str) -> None:
    """The CLI refuses `args` with exit code 2 and a one-line `message`."""
    code, err = qflow(args)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err
    # one line (after any progress bar or argparse's usage line)
    assert message in err.strip().splitlines()[-1], err
