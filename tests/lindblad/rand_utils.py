"""Random Hermitian operators, jump operators and mixed states for tests."""

import numpy as np


def rand_herm(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    A = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    return scale * (A + A.conj().T) / (2 * np.sqrt(n))


def rand_op(rng: np.random.Generator, n: int, scale: float = 0.5) -> np.ndarray:
    return scale * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / np.sqrt(n)


def rand_dm(rng: np.random.Generator, n: int, rank: int | None = None) -> np.ndarray:
    rank = n if rank is None else rank
    X = rng.normal(size=(n, rank)) + 1j * rng.normal(size=(n, rank))
    rho = X @ X.conj().T
    return rho / np.trace(rho)
