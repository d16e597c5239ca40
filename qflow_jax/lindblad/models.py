"""Named Lindblad problems for configs and the CLI, each with its exact solution
where one exists (docs/physics.md, section 1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from qflow_jax import operators as ops
from qflow_jax.config import Field, non_negative, positive

__all__ = ["MODELS", "LindbladProblem", "build_model"]


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


def _complex_pair(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) == 2
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    return None if ok else "must be a list [real, imag] of two numbers"


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


_N = Field(int, 30, check=positive, doc="Fock-space truncation")
_ALPHA0 = Field(list, [0.0, 0.0], check=_complex_pair, doc="initial coherent amplitude")

MODELS: dict[
    str, tuple[dict[str, Field], Callable[[Mapping[str, Any]], LindbladProblem]]
] = {
    "damped_cavity": (
        {
            "N": _N,
            "omega": Field(float, 1.0, doc="cavity frequency"),
            "gamma": Field(float, 0.5, check=non_negative, doc="energy decay rate"),
            "n_thermal": Field(float, 0.0, check=non_negative, doc="bath occupation"),
            "alpha0": Field(
                list,
                [2.0, 0.0],
                check=_complex_pair,
                doc="initial coherent amplitude [re, im]",
            ),
        },
        _damped_cavity,
    ),
    "kerr_oscillator": (
        {
            "N": Field(int, 50, check=positive, doc="Fock-space truncation"),
            "detuning": Field(float, -0.1),
            "kerr": Field(float, 0.5),
            "drive": Field(float, 2.0),
            "kappa": Field(float, 1.0, check=non_negative),
            "alpha0": _ALPHA0,
        },
        _kerr_oscillator,
    ),
    "qubit_decay": (
        {
            "omega": Field(float, 1.0),
            "gamma": Field(float, 0.5, check=non_negative),
        },
        _qubit_decay,
    ),
}


def build_model(kind: str, params: Mapping[str, Any]) -> LindbladProblem:
    """Builds the named model from validated parameters."""
    return MODELS[kind][1](params)
