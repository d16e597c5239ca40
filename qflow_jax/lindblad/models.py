"""Named Lindblad problems for configs and the CLI, each with its exact solution
where one exists (docs/physics.md, section 1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import numpy as np

from qflow_jax import operators as ops
from qflow_jax.config import (
    ComplexPair,
    Float,
    NonNegativeFloat,
    PositiveInt,
    Section,
    validate_model,
)

__all__ = [
    "MODELS",
    "DampedCavity",
    "KerrOscillator",
    "LindbladProblem",
    "QubitDecay",
    "build_model",
]


@dataclass(frozen=True)
class LindbladProblem:
    """H, jump operators, initial state and named observables of one model.

    `exact(t)` returns the closed-form expectation values (same names as
    `exp_ops`) at times t, or is None when no closed form is known. `fock_dims`:
    the Fock dimensions of the bosonic modes (the truncation `mesolve` checks),
    None for a system without truncation.
    """

    H: jax.Array
    jump_ops: list[jax.Array]
    rho0: jax.Array
    exp_ops: dict[str, jax.Array]
    exact: Callable[[np.ndarray], dict[str, np.ndarray]] | None
    fock_dims: tuple[int, ...] | None = None


def _damped_cavity(p: Mapping[str, Any]) -> LindbladProblem:
    N, w, g, nth = p["N"], p["omega"], p["gamma"], p["n_thermal"]
    a0 = complex(*p["alpha0"])
    a = ops.destroy(N)
    jumps = [np.sqrt(g * (nth + 1)) * a]
    if nth > 0:
        jumps.append(np.sqrt(g * nth) * ops.create(N))

    def exact(t: np.ndarray) -> dict[str, np.ndarray]:
        at = a0 * np.exp(-(1j * w + g / 2) * t)
        n = abs(a0) ** 2 * np.exp(-g * t) + nth * (1 - np.exp(-g * t))
        return {"n": n, "re_a": at.real, "im_a": at.imag}

    return LindbladProblem(
        H=w * ops.number(N),
        jump_ops=jumps,
        rho0=ops.coherent_dm(N, a0, "analytic"),
        exp_ops={
            "n": ops.number(N),
            "re_a": 0.5 * (a + ops.create(N)),
            "im_a": -0.5j * (a - ops.create(N)),
        },
        exact=exact,
        fock_dims=(N,),
    )


def _kerr_oscillator(p: Mapping[str, Any]) -> LindbladProblem:
    N = p["N"]
    a, ad = ops.destroy(N), ops.create(N)
    H = p["detuning"] * ad @ a + 0.5 * p["kerr"] * ad @ ad @ a @ a
    H = H + p["drive"] * (a + ad)
    return LindbladProblem(
        H=H,
        jump_ops=[np.sqrt(p["kappa"]) * a],
        rho0=ops.coherent_dm(N, complex(*p["alpha0"]), "analytic"),
        exp_ops={"n": ops.number(N), "re_a": 0.5 * (a + ad)},
        exact=None,
        fock_dims=(N,),
    )


def _qubit_decay(p: Mapping[str, Any]) -> LindbladProblem:
    g = p["gamma"]
    return LindbladProblem(
        H=0.5 * p["omega"] * ops.sigmaz(),
        jump_ops=[np.sqrt(g) * ops.sigmam()],
        rho0=ops.fock_dm(2, 0),
        exp_ops={"p_excited": ops.fock_dm(2, 0), "sz": ops.sigmaz()},
        exact=lambda t: {"p_excited": np.exp(-g * t), "sz": 2 * np.exp(-g * t) - 1},
    )


class DampedCavity(Section):
    """H = omega a^dag a, L = sqrt(gamma (n_thermal + 1)) a (and sqrt(gamma
    n_thermal) a^dag), from the coherent state alpha0; exact <n>, <a>."""

    kind: Literal["damped_cavity"]
    N: PositiveInt = 30  # Fock-space truncation
    omega: Float = 1.0
    gamma: NonNegativeFloat = 0.5
    n_thermal: NonNegativeFloat = 0.0
    alpha0: ComplexPair = [2.0, 0.0]

    def build(self) -> LindbladProblem:
        return _damped_cavity(self.model_dump())


class KerrOscillator(Section):
    """H = detuning a^dag a + kerr/2 a^dag^2 a^2 + drive (a + a^dag),
    L = sqrt(kappa) a, from the coherent state alpha0 (no closed form)."""

    kind: Literal["kerr_oscillator"]
    N: PositiveInt = 50  # Fock-space truncation
    detuning: Float = -0.1
    kerr: Float = 0.5
    drive: Float = 2.0
    kappa: NonNegativeFloat = 1.0
    alpha0: ComplexPair = [0.0, 0.0]

    def build(self) -> LindbladProblem:
        return _kerr_oscillator(self.model_dump())


class QubitDecay(Section):
    """H = omega/2 sigma_z, L = sqrt(gamma) sigma_-, from |e>; exact."""

    kind: Literal["qubit_decay"]
    omega: Float = 1.0
    gamma: NonNegativeFloat = 0.5

    def build(self) -> LindbladProblem:
        return _qubit_decay(self.model_dump())


# model name -> its config section (which builds the problem)
MODELS: dict[str, type[Section]] = {
    "damped_cavity": DampedCavity,
    "kerr_oscillator": KerrOscillator,
    "qubit_decay": QubitDecay,
}


def build_model(kind: str, params: Mapping[str, Any]) -> LindbladProblem:
    """Builds the named model from its parameters (checked by its section).

    Examples:
        >>> problem = build_model("qubit_decay", {"gamma": 1.0})
        >>> float(problem.exact(np.array([0.0]))["p_excited"][0])
        1.0
    """
    return validate_model({**params, "kind": kind}, MODELS[kind]).build()
