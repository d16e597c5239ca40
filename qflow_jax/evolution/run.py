"""`qflow run`: a Q-Flow simulation from a validated config, with checkpoints.

A config chooses the model, the initial state, the flow, the method (TDVP or
Euler-KL) and its settings, the save times, the seed and the output folder. Two
model kinds share one run loop through a small interface (`_Problem`): the compiled
Q-PDE, the reference <n_j>(t) and <a_j>(t) at the save times, and the reference
single-mode marginal Q of one chosen mode on a grid.

- `damped_modes`: damped modes on a chain with hopping from a coherent product; the
  reference is the exact coherent solution (exact samples and log Q as well).
- `expression`: H and the jump operators written as strings in the operator algebra
  (`"U/2 * adag(0)**2 @ a(0)**2"`, `"sqrt(gamma) * a(0)"`) with named constants;
  the reference is the Lindblad equation solved by `mesolve` in a truncated Fock
  basis built from the same expressions (`BosonOp.to_matrix`).

Initial states: coherent (the new flow is exactly Q(0)), cat (one mode), Fock and
thermal products. The last three are pre-trained, by maximum likelihood on exact
samples of Q(0) (the default; cat samples by rejection from the two coherent
Gaussians) or by the reverse KL to the analytic log Q(0).

The default problem is a damped single-mode oscillator from a coherent state,
evolved by TDVP to t = 2/gamma and compared with its exact solution.
"""

from __future__ import annotations

import ast
import cmath
import copy
import json
import math
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from qflow_jax.config import (
    ConfigError,
    Field,
    at_least_two,
    complex_pairs,
    non_negative,
    positive,
    positive_ints,
    validate,
)
from qflow_jax.evolution.euler_kl import EulerKLSettings, evolve_euler_kl
from qflow_jax.evolution.observables import normalization, sample_observables
from qflow_jax.evolution.pretrain import PretrainSettings, pretrain
from qflow_jax.evolution.tdvp import LINEAR_SOLVERS, TDVPSettings, evolve_tdvp
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi import (
    BosonOp,
    a,
    adag,
    alpha_to_real,
    cat_q,
    compile_qpde,
    husimi_q,
)
from qflow_jax.husimi.compiler import QPDE
from qflow_jax.husimi.models import DampedChain
from qflow_jax.husimi.states import sample_cat_q
from qflow_jax.lindblad.mesolve import mesolve
from qflow_jax.operators import coherent, fock_dm, ptrace, thermal_dm
from qflow_jax.runs import (
    ResumeError,
    RunFolder,
    check_fingerprint,
    fingerprint,
    pyplot,
    to_jsonable,
)

__all__ = [
    "DEFAULT_QFLOW_CONFIG",
    "QFLOW_SCHEMA",
    "MarginalGrid",
    "QFlowSetup",
    "compare_marginal",
    "n_errors",
    "parse_operator",
    "run_qflow",
    "setup_qflow",
    "validate_qflow_config",
]

# ------------------------------------------------------------------ config schema


def _counts(value: Any) -> str | None:
    ok = isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )
    return None if ok and value else "must be a list of integers >= 0, one per mode"


def _occupations(value: Any) -> str | None:
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
    )
    return None if ok and value else "must be a list of numbers >= 0, one per mode"


def _strings(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else "must be a list of operator expressions (strings)"


def _constants(value: Any) -> str | None:
    for name, v in value.items():
        if not (isinstance(name, str) and name.isidentifier()):
            return f"names must be identifiers, got {name!r}"
        if name in _RESERVED:
            return f"name {name!r} is reserved ({', '.join(sorted(_RESERVED))})"
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"values must be real numbers, got {name}: {v!r}"
    return None


QFLOW_SCHEMA: dict[str, Any] = {
    "name": Field(str, "qflow", doc="run name (default output folder runs/NAME)"),
    "model": {
        "kind": Field(
            str,
            "damped_modes",
            choices=("damped_modes", "expression"),
            doc="model family",
        ),
        "modes": Field(int, 1, check=positive, doc="number of modes N"),
        "omega": Field(float, 1.0, doc="mode frequency (damped_modes)"),
        "gamma": Field(
            float, 1.0, check=positive, doc="energy decay rate per mode (damped_modes)"
        ),
        "hopping": Field(float, 0.0, doc="hopping J on a chain (damped_modes)"),
        "hamiltonian": Field(str, None, doc="H as an expression (expression)"),
        "jump_ops": Field(list, None, check=_strings, doc="jump operators L_k"),
        "constants": Field(dict, None, check=_constants, doc="names used in H, L_k"),
    },
    "initial": {
        "kind": Field(str, "coherent", choices=("coherent", "cat", "fock", "thermal")),
        "alpha": Field(list, None, check=complex_pairs, doc="amplitude per mode"),
        "sign": Field(int, 1, choices=(1, -1), doc="cat parity: +1 even, -1 odd"),
        "n": Field(list, None, check=_counts, doc="Fock number per mode"),
        "nth": Field(list, None, check=_occupations, doc="thermal <n> per mode"),
    },
    "pretrain": {
        "objective": Field(
            str,
            "max_likelihood",
            choices=("max_likelihood", "reverse_kl"),
            doc="ML on exact samples of Q(0), or reverse KL to the analytic log Q(0)",
        ),
        "max_steps": Field(int, 3000, check=positive),
        "batch_size": Field(int, 1024, check=positive),
        "learning_rate": Field(float, 3e-3, check=positive),
        "kl_tol": Field(float, 2e-3, check=positive),
        "check_every": Field(int, 100, check=positive),
        "check_samples": Field(int, 20_000, check=positive),
        "schedule": Field(str, "constant", choices=("constant", "cosine")),
    },
    "flow": {
        "layers": Field(int, 2, check=positive),
        "coupling": Field(str, "affine", choices=("affine", "spline")),
        "hidden": Field(list, [8], check=positive_ints),
        "bins": Field(int, 8, check=positive),
        "lu_mixing": Field(bool, False),
    },
    "method": Field(str, "tdvp", choices=("tdvp", "euler-kl")),
    "tdvp": {
        "batch_size": Field(int, 1024, check=positive),
        "s_builder": Field(str, "dense", choices=("dense", "matrix_free")),
        "linear_solver": Field(str, "pinv", choices=tuple(LINEAR_SOLVERS)),
        "diag_shift": Field(float, 1e-6, check=non_negative),
        "rcond": Field(float, 1e-10, check=non_negative),
        "snr_cutoff": Field(float, 2.0, check=non_negative),
        "cg_maxiter": Field(int, 200, check=positive),
        "ode_solver": Field(str, "rk4", choices=("heun", "rk4", "tsit5")),
        "dt": Field(float, 0.02, check=positive),
        "rtol": Field(float, 1e-4, check=positive),
        "atol": Field(float, 1e-6, check=positive),
    },
    "euler_kl": {
        "dt": Field(float, 0.02, check=positive),
        "batch_size": Field(int, 512, check=positive),
        "learning_rate": Field(float, 3e-3, check=positive),
        "schedule": Field(str, "cosine", choices=("constant", "cosine")),
        "max_inner_steps": Field(int, 50, check=positive),
        "min_inner_steps": Field(int, 50, check=positive),
        "window": Field(int, 10, check=positive),
        "loss_tol": Field(float, 1e-6, check=positive),
        "objective": Field(str, "reverse", choices=("forward", "reverse")),
        "scheme": Field(str, "midpoint", choices=("euler", "midpoint")),
    },
    "reference": {
        "cutoff": Field(int, 30, check=positive, doc="Fock levels per mode"),
        "rtol": Field(float, 1e-8, check=positive, doc="mesolve tolerance"),
        "atol": Field(float, 1e-10, check=positive, doc="mesolve tolerance"),
        "max_top_population": Field(
            float,
            1e-4,
            check=positive,
            doc="largest allowed population of the top Fock level of any mode",
        ),
    },
    "metrics": {
        "mode": Field(int, 0, check=non_negative, doc="mode of the Q marginal"),
        "grid_points": Field(int, 101, check=at_least_two, doc="grid points per axis"),
        "grid_half_width": Field(
            float,
            None,
            check=positive,
            doc="grid [-w, w]^2 (default sqrt(max <n> + 1) + 4)",
        ),
        "snapshots": Field(int, 5, check=at_least_two, doc="Q snapshots plotted"),
    },
    "times": {
        "t_end": Field(float, 2.0, check=positive, doc="final time"),
        "n_save": Field(int, 11, check=at_least_two),
    },
    "seed": Field(int, 0),
    "eval_samples": Field(
        int,
        400_000,
        check=positive,
        doc="samples per observable estimate (error ~ 1/sqrt)",
    ),
    "checkpoint_every": Field(int, 1, check=positive, doc="intervals per checkpoint"),
    "output": {"dir": Field(str, None, doc="output folder (default runs/NAME)")},
}

DEFAULT_QFLOW_CONFIG: dict[str, Any] = {
    "name": "damped_1mode",
    "model": {"kind": "damped_modes", "modes": 1, "omega": 1.0, "gamma": 1.0},
    "initial": {"kind": "coherent", "alpha": [[2.0, 0.0]]},
    "method": "tdvp",
    "times": {"t_end": 2.0, "n_save": 11},
}

_MODEL_KEYS = {
    "damped_modes": ("omega", "gamma", "hopping"),
    "expression": ("hamiltonian", "jump_ops", "constants"),
}
_INITIAL_KEYS = {
    "coherent": ("alpha",),
    "cat": ("alpha", "sign"),
    "fock": ("n",),
    "thermal": ("nth",),
}
_MAX_FOCK_DIM = 2048

# What each metric is, written into summary.json.
METRIC_DEFINITIONS = {
    "max_rel_error_n": "max over save times and modes holding >= 0.05 quanta of "
    "|<n_j>_flow - <n_j>_ref| / <n_j>_ref; <n_j>_flow = E_q|alpha_j|^2 - 1 from "
    "eval_samples flow samples (standard error in records[].n_err)",
    "max_abs_error_n": "max over save times and modes of |<n_j>_flow - <n_j>_ref|",
    "l1_q": "L1 distance sum |q - Q_ref| dA of the single-mode Q marginal of mode "
    "`metrics.mode` on the grid (midpoint rule on [-w, w]^2); one mode: q is the "
    "flow density at the grid points; several modes: q is a 2D histogram of "
    "eval_samples flow samples with the grid points as bin centres, which adds "
    "a sampling floor (records[].l1_q_noise_floor, its expected value for exact "
    "samples)",
    "l2_rel_q": "relative L2 distance (sum (q - Q_ref)^2 / sum Q_ref^2)^(1/2) on "
    "the same grid and marginal as l1_q",
    "kl_grid": "KL(Q_ref || q) = sum Q_ref log(Q_ref / q) dA on the same grid and "
    "marginal as l1_q; with a histogram, empty bins count as half a sample",
    "kl_exact_flow": "damped_modes only: KL(Q || q) over all 2N coordinates, Monte "
    "Carlo on eval_samples exact samples",
    "normalization": "importance-sampling estimate of the integral of the final "
    "flow density (proposal: Gaussian 25% wider than the flow samples)",
    "grid_mass_ref": "sum Q_ref dA on the grid: the reference mass the grid covers",
}


# ------------------------------------------------------------ operator expressions

_RESERVED = frozenset({"a", "adag", "sqrt", "exp", "pi"})
_MAX_POWER = 32
_ALLOWED = "numbers, constants, a(j), adag(j), sqrt, exp, pi, + - * / ** @"


def parse_operator(
    text: str, constants: Mapping[str, float], n_modes: int, key: str
) -> BosonOp:
    """Evaluates an operator expression such as `"U/2 * adag(0)**2 @ a(0)**2"`.

    Only numbers (complex literals like `0.5j` included), the names in `constants`,
    `pi`, `a(j)`, `adag(j)` with 0 <= j < n_modes, `sqrt(.)` and `exp(.)` of numbers,
    and the operators + - * / ** @ (unary minus too) are allowed; `*` between
    operators is the operator product, like `@`. The string is parsed with `ast`
    and never executed.

    Args:
        text: the expression.
        constants: numbers the expression may name.
        n_modes: number of modes; mode indices must lie in [0, n_modes).
        key: the config key shown in errors, e.g. "model.hamiltonian".

    Raises:
        ConfigError: naming `key` and the offending token.

    Examples:
        >>> parse_operator("g * a(0) + 1j", {"g": 0.5}, 1, "L")
        BosonOp(1i + 0.5 a0)
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(
            f"`{key}` is not a valid expression ({err.msg} at column {err.offset}): "
            f"{text!r}"
        ) from None
    value = _Evaluator(text.strip(), dict(constants), n_modes, key).eval(tree.body)
    return BosonOp._lift(value)


class _Evaluator:
    """Walks an expression's syntax tree, allowing only `_ALLOWED`."""

    def __init__(self, text: str, constants: dict, n_modes: int, key: str):
        self.text, self.constants, self.n_modes, self.key = (
            text,
            constants,
            n_modes,
            key,
        )

    def error(self, node: ast.AST, why: str) -> ConfigError:
        token = ast.get_source_segment(self.text, node) or type(node).__name__
        return ConfigError(f"`{self.key}`: {why}: `{token}` in {self.text!r}")

    def number(self, node: ast.AST, what: str) -> complex | float:
        value = self.eval(node)
        if isinstance(value, BosonOp):
            raise self.error(node, f"{what} must be a number, not an operator")
        return value

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int | float | complex):
                raise self.error(node, f"only numbers are allowed ({_ALLOWED})")
            return complex(v) if isinstance(v, complex) else float(v)
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return float(self.constants[node.id])
            if node.id == "pi":
                return math.pi
            if node.id in _RESERVED:
                raise self.error(node, f"`{node.id}` must be called, e.g. {node.id}(0)")
            known = ", ".join(sorted(self.constants)) or "none"
            raise self.error(node, f"unknown name (constants: {known})")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = self.eval(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.error(node, f"not allowed (only {_ALLOWED})")

    def binop(self, node: ast.BinOp) -> Any:
        op = node.op
        if isinstance(op, ast.Div):
            left, right = self.eval(node.left), self.number(node.right, "a divisor")
            if right == 0:
                raise self.error(node, "division by zero")
            return left / right
        if isinstance(op, ast.Pow):
            left, right = self.eval(node.left), self.number(node.right, "an exponent")
            if isinstance(left, BosonOp):
                if right != int(right.real) or not 0 <= right.real <= _MAX_POWER:
                    raise self.error(
                        node, f"operator powers must be integers in [0, {_MAX_POWER}]"
                    )
                return left ** int(right.real)
            try:
                return left**right
            except (OverflowError, ZeroDivisionError) as err:
                raise self.error(node, str(err)) from None
        if isinstance(op, ast.Add | ast.Sub | ast.Mult | ast.MatMult):
            left, right = self.eval(node.left), self.eval(node.right)
            if isinstance(op, ast.Add):
                return left + right
            if isinstance(op, ast.Sub):
                return left - right
            if isinstance(left, BosonOp) or isinstance(right, BosonOp):
                return BosonOp._lift(left) @ right
            return left * right
        raise self.error(node, f"operator not allowed (only {_ALLOWED})")

    def call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in ("a", "adag", "sqrt", "exp"):
            raise self.error(node.func, "only a(j), adag(j), sqrt(x), exp(x) are calls")
        if node.keywords or len(node.args) != 1:
            raise self.error(node, f"`{name}` takes exactly one positional argument")
        arg = self.number(node.args[0], f"the argument of `{name}`")
        if name in ("sqrt", "exp"):
            value = (cmath.sqrt if name == "sqrt" else cmath.exp)(complex(arg))
            return value.real if value.imag == 0 else value
        if complex(arg).imag != 0 or arg.real != int(arg.real):
            raise self.error(node, "a mode index must be an integer")
        j = int(arg.real)
        if not 0 <= j < self.n_modes:
            raise self.error(
                node,
                f"mode index {j} out of range [0, {self.n_modes - 1}] "
                f"(`model.modes` is {self.n_modes})",
            )
        return a(j) if name == "a" else adag(j)


def _model_operators(model: dict[str, Any]) -> tuple[BosonOp, list[BosonOp]]:
    """H and the jump operators of an `expression` model (checked)."""
    N, consts = model["modes"], model["constants"] or {}
    H = parse_operator(model["hamiltonian"], consts, N, "model.hamiltonian")
    tol = 1e-12 * max([1.0, *map(abs, H.terms.values())])
    if not H.is_hermitian(tol=tol):
        raise ConfigError(
            f"`model.hamiltonian` must be Hermitian, got H - H^dag = {H - H.dag()}"
        )
    jumps = []
    for k, text in enumerate(model["jump_ops"] or []):
        L = parse_operator(text, consts, N, f"model.jump_ops[{k}]")
        if L.n_modes == 0:  # a multiple of the identity dissipates nothing
            raise ConfigError(
                f"`model.jump_ops[{k}]` must involve a(j) or adag(j), got the "
                f"number `{text}`"
            )
        jumps.append(L)
    return H, jumps


# ------------------------------------------------------------------ initial states


@dataclass(frozen=True)
class _Initial:
    """Q(0) of the configured initial state: log density, exact sampler (if any),
    Fock-basis density matrix, and the Gaussian a new flow starts from."""

    kind: str
    N: int
    alpha: np.ndarray  # (N,) complex (coherent, cat)
    sign: int
    n: np.ndarray  # (N,) Fock numbers
    nth: np.ndarray  # (N,) thermal occupations

    @staticmethod
    def from_config(init: dict[str, Any], N: int) -> _Initial:
        alpha = np.array([complex(*p) for p in init["alpha"] or []])
        return _Initial(
            kind=init["kind"],
            N=N,
            alpha=alpha,
            sign=init["sign"],
            n=np.asarray(init["n"] or [], int),
            nth=np.asarray(init["nth"] or [], float),
        )

    @property
    def exact_flow(self) -> bool:
        """A coherent product is N(alpha0, I/2): a new flow is exactly Q(0)."""
        return self.kind == "coherent"

    def mean(self) -> np.ndarray:
        if self.kind == "coherent":
            return np.asarray(alpha_to_real(self.alpha))
        return np.zeros(2 * self.N)  # <a> = 0 for cat, Fock and thermal states

    def scale(self) -> float:
        """Standard deviation per real coordinate of Q(0), the widest mode's."""
        if self.kind == "coherent":
            return float(np.sqrt(0.5))
        if self.kind == "fock":
            return float(np.sqrt((self.n.max() + 1) / 2))
        if self.kind == "thermal":
            return float(np.sqrt((self.nth.max() + 1) / 2))
        r2 = float(np.sum(np.abs(self.alpha) ** 2))
        n = r2 * (np.tanh(r2) if self.sign > 0 else 1 / np.tanh(r2))
        return float(np.sqrt((n + 1) / 2))

    def logq(self) -> Callable[[jax.Array], jax.Array]:
        """y (2N,) -> log Q(0)(y)."""
        N = self.N
        if self.kind == "coherent":
            mean = jnp.asarray(self.mean())
            return lambda y: -jnp.sum((y - mean) ** 2, -1) - N * jnp.log(jnp.pi)
        if self.kind == "thermal":
            s = jnp.asarray(np.repeat(1.0 + self.nth, 2))
            return lambda y: -jnp.sum(y**2 / s + jnp.log(jnp.pi * s) / 2, -1)
        if self.kind == "fock":
            n = jnp.asarray(self.n, float)

            def logq(y):
                r2 = y[..., 0::2] ** 2 + y[..., 1::2] ** 2
                return jnp.sum(
                    -r2
                    + n * jnp.log(r2)
                    - jax.scipy.special.gammaln(n + 1)
                    - jnp.log(jnp.pi),
                    -1,
                )

            return logq
        q = cat_q(self.alpha, float(self.sign))
        return lambda y: jnp.log(q(y))

    def sampler(self) -> Callable[[jax.Array, int], jax.Array]:
        """(key, n) -> (n, 2N) exact samples of Q(0)."""
        N = self.N
        if self.kind == "coherent":
            mean = jnp.asarray(self.mean())
            return lambda key, n: (
                mean + jnp.sqrt(0.5) * jax.random.normal(key, (n, 2 * N))
            )
        if self.kind == "thermal":
            s = jnp.asarray(np.repeat(np.sqrt((1.0 + self.nth) / 2), 2))
            return lambda key, n: s * jax.random.normal(key, (n, 2 * N))
        if self.kind == "fock":
            # Q = |alpha|^(2n) exp(-|alpha|^2) / (pi n!): |alpha|^2 ~ Gamma(n + 1, 1)
            # with a uniform phase
            shape = jnp.asarray(self.n + 1.0)

            def sample(key, n):
                k1, k2 = jax.random.split(key)
                r = jnp.sqrt(jax.random.gamma(k1, shape, (n, N)))
                phi = jax.random.uniform(k2, (n, N), maxval=2 * jnp.pi)
                return alpha_to_real(r * jnp.exp(1j * phi))

            return sample
        alpha, sign = jnp.asarray(self.alpha), float(self.sign)
        return lambda key, n: sample_cat_q(key, alpha, sign, n)

    def rho0(self, cutoff: int) -> jax.Array:
        """Fock-basis density matrix (D, D), D = cutoff^N, trace 1."""
        if self.kind == "cat":
            psi = coherent(cutoff, self.alpha[0], method="analytic") + self.sign * (
                coherent(cutoff, -self.alpha[0], method="analytic")
            )
            rho = psi @ psi.conj().T
        else:
            per_mode = {
                "coherent": lambda j: _ket_dm(
                    coherent(cutoff, self.alpha[j], method="analytic")
                ),
                "fock": lambda j: fock_dm(cutoff, int(self.n[j])),
                "thermal": lambda j: thermal_dm(cutoff, float(self.nth[j])),
            }[self.kind]
            rho = reduce(jnp.kron, [per_mode(j) for j in range(self.N)])
        return rho / jnp.trace(rho).real


def _ket_dm(psi: jax.Array) -> jax.Array:
    return psi @ psi.conj().T


# ------------------------------------------------------------- models + references


class _Problem:
    """What the run loop needs from a model: the Q-PDE on R^{2N}, reference <n_j>
    and <a_j> at the save times, and the reference single-mode marginal Q."""

    N: int
    pde: QPDE
    n_ref: np.ndarray  # (nt, N)
    a_ref: np.ndarray  # (nt, N) complex
    reference: str  # what the reference is
    info: dict[str, Any]

    def q_marginal(self, i: int, mode: int, alphas: jax.Array) -> np.ndarray:
        """Reference Q marginal of `mode` at save time i at complex points."""
        raise NotImplementedError

    def kl_exact(self, i: int, logq: Callable, key: jax.Array, n: int) -> float | None:
        """KL(Q || q) over all coordinates from exact samples, if the model has them."""
        return None


class _DampedModes(_Problem):
    """H = sum_j omega a_j^dag a_j + J sum_j (a_j^dag a_j+1 + h.c.), L_j = sqrt(g) a_j,
    coherent start: exact coherent product alpha(t) = expm(-(iM + g/2) t) alpha0."""

    def __init__(self, cfg: dict[str, Any], initial: _Initial, tsave: np.ndarray):
        self.chain = DampedChain(
            cfg["modes"], cfg["omega"], cfg["gamma"], cfg["hopping"]
        )
        self.alpha0, self.N = initial.alpha, cfg["modes"]
        self.pde = self.chain.pde()
        self.a_ref = np.stack([self.alpha(t) for t in tsave])
        self.n_ref = np.abs(self.a_ref) ** 2
        self.reference = "exact coherent-product solution"
        self.info = {}

    def alpha(self, t: float) -> np.ndarray:
        return self.chain.alpha(t, self.alpha0)

    def q_marginal(self, i: int, mode: int, alphas: jax.Array) -> np.ndarray:
        return np.exp(-(np.abs(np.asarray(alphas) - self.a_ref[i, mode]) ** 2)) / np.pi

    def kl_exact(self, i: int, logq: Callable, key: jax.Array, n: int) -> float:
        mean = jnp.asarray(alpha_to_real(self.a_ref[i]))
        y = mean + jnp.sqrt(0.5) * jax.random.normal(key, (n, 2 * self.N))
        exact = -jnp.sum((y - mean) ** 2, -1) - self.N * jnp.log(jnp.pi)
        return float(jnp.mean(exact - logq(y)))


class _FockReference(_Problem):
    """H and L_k from operator expressions; the reference solves the Lindblad
    equation by `mesolve` in the Fock basis truncated at `cutoff` levels per mode."""

    def __init__(
        self,
        model: dict[str, Any],
        ref: dict[str, Any],
        initial: _Initial,
        tsave: np.ndarray,
        mode: int,
    ):
        N, cutoff = model["modes"], ref["cutoff"]
        H, jumps = _model_operators(model)
        self.N, self.pde = N, compile_qpde(H, jumps, n_modes=N)
        dims = [cutoff] * N
        rho0 = initial.rho0(cutoff).astype(jnp.complex128)
        self._check_cutoff(_top_populations(rho0[None], dims), tsave, ref)
        started = time.perf_counter()
        res = mesolve(
            H.to_matrix(dims),
            [L.to_matrix(dims) for L in jumps],
            rho0,
            jnp.asarray(tsave),
            rtol=ref["rtol"],
            atol=ref["atol"],
        )
        states = res.states
        reduced = _reduced_states(states, dims)
        diag = jnp.real(jnp.diagonal(reduced, axis1=-2, axis2=-1))  # (nt, N, c)
        lower = jnp.diag(jnp.sqrt(jnp.arange(1.0, cutoff)), 1)
        self.n_ref = np.asarray(diag @ jnp.arange(cutoff, dtype=float))
        self.a_ref = np.asarray(jnp.einsum("tjmn,nm->tj", reduced, lower))
        self.reduced = reduced[:, mode]
        top = np.asarray(diag[..., -1])
        self.reference = (
            f"mesolve in the Fock basis, {cutoff} levels per mode (D = {cutoff**N}), "
            f"rtol {ref['rtol']:g}, atol {ref['atol']:g}"
        )
        self.info = {
            "cutoff": cutoff,
            "dimension": cutoff**N,
            "solve_s": time.perf_counter() - started,
            "mesolve_steps": int(res.stats["num_steps"]),
            "max_top_population": float(top.max()),
            "max_trace_error": float(
                np.max(np.abs(np.asarray(jnp.trace(states, axis1=-2, axis2=-1)) - 1))
            ),
        }
        self._check_cutoff(top, tsave, ref)

    @staticmethod
    def _check_cutoff(top: np.ndarray, tsave: np.ndarray, ref: dict) -> None:
        """top: (nt, N) populations of the highest Fock level of each mode."""
        if top.max() > ref["max_top_population"]:
            t_idx, j = np.unravel_index(np.argmax(top), top.shape)
            raise ConfigError(
                f"`reference.cutoff` = {ref['cutoff']} is too small: the top Fock "
                f"level of mode {j} holds {top.max():.2e} at t = {tsave[t_idx]:.3g} "
                f"(allowed: `reference.max_top_population` = "
                f"{ref['max_top_population']:g})"
            )

    def q_marginal(self, i: int, mode: int, alphas: jax.Array) -> np.ndarray:
        return np.asarray(husimi_q(self.reduced[i], jnp.asarray(alphas)[..., None]))


def _reduced_states(states: jax.Array, dims: list[int]) -> jax.Array:
    """(nt, D, D) -> (nt, N, c, c): the reduced state of every mode."""
    if len(dims) == 1:
        return states[:, None]
    return jnp.stack([ptrace(states, j, dims) for j in range(len(dims))], 1)


def _top_populations(states: jax.Array, dims: list[int]) -> np.ndarray:
    """(nt, D, D) -> (nt, N): population of each mode's highest Fock level."""
    return np.asarray(jnp.real(_reduced_states(states, dims)[..., -1, -1]))


# ------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class MarginalGrid:
    """Square grid [-w, w]^2 of the (x, p) plane of one mode, where single-mode Q
    marginals are compared; points are also the bin centres of histogram estimates.

    Examples:
        >>> grid = MarginalGrid(np.linspace(-6, 6, 101), mode=0)
        >>> grid.points.shape
        (10201, 2)
    """

    axis: np.ndarray  # (G,)
    mode: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.axis), len(self.axis))

    @property
    def dA(self) -> float:
        return float((self.axis[1] - self.axis[0]) ** 2)

    @property
    def alphas(self) -> np.ndarray:  # (G, G) complex, [x index, p index]
        return self.axis[:, None] + 1j * self.axis[None, :]

    @property
    def points(self) -> np.ndarray:  # (G * G, 2)
        X, P = np.meshgrid(self.axis, self.axis, indexing="ij")
        return np.stack([X.ravel(), P.ravel()], -1)

    @property
    def edges(self) -> np.ndarray:
        h = self.axis[1] - self.axis[0]
        return np.concatenate([self.axis - h / 2, [self.axis[-1] + h / 2]])

    def histogram(
        self, xp: np.ndarray, Q: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Density estimate on the grid from samples xp (n, 2) of the marginal
        (optionally importance-weighted), with what `compare_marginal` needs to
        read it: the KL floor (half a sample per bin) and the L1 noise floor (the
        expected L1 of a histogram of n exact samples of Q, the reference)."""
        n = len(xp)
        w = None if weights is None else weights / np.sum(weights) * n
        counts, _, _ = np.histogram2d(
            xp[:, 0], xp[:, 1], bins=[self.edges] * 2, weights=w
        )
        if w is not None:  # the effective sample size of the weighted samples
            n = float(np.sum(w) ** 2 / np.sum(w**2))
        p = np.clip(Q * self.dA, 0, 1)
        noise = float(np.sqrt(2 / np.pi) * np.sum(np.sqrt(p * (1 - p) / n)))
        q = counts / (len(xp) * self.dA)
        return q, {"floor": 0.5 / (n * self.dA), "noise": noise}


def n_errors(n_model: np.ndarray, n_ref: np.ndarray) -> dict[str, float]:
    """max_rel_error_n (over the modes holding at least 0.05 quanta) and
    max_abs_error_n of <n_j>, over arrays of any shape (one save time or all)."""
    rel = np.where(n_ref >= 0.05, np.abs(n_model - n_ref) / np.maximum(n_ref, 0.05), 0)
    return {
        "max_rel_error_n": float(np.max(rel)),
        "max_abs_error_n": float(np.max(np.abs(n_model - n_ref))),
    }


def compare_marginal(
    grid: MarginalGrid,
    Q: np.ndarray,
    q: np.ndarray,
    n_ref: np.ndarray,
    n_model: np.ndarray,
    *,
    floor: float = 1e-300,
    noise: float = 0.0,
) -> dict[str, Any]:
    """The metrics of METRIC_DEFINITIONS that compare a model with the reference:
    <n_j> errors, and L1, relative L2 and KL of the single-mode Q marginal on
    `grid`. Shared by `qflow run` and the comparison suite (`qflow bench`), so that
    every method is measured the same way.

    Args:
        Q, q: (G, G) reference and model marginals on the grid.
        n_ref, n_model: (N,) reference and model <n_j>.
        floor: smallest q used inside the log of the grid KL.
        noise: the expected L1 of an exact histogram estimate (0 for densities).
    """
    pos = Q > 0
    return {
        "n_ref": n_ref.tolist(),
        **n_errors(n_model, n_ref),
        "l1_q": float(np.sum(np.abs(q - Q)) * grid.dA),
        "l1_q_noise_floor": noise,
        "l2_rel_q": float(np.sqrt(np.sum((q - Q) ** 2) / np.sum(Q**2))),
        "kl_grid": float(
            np.sum(Q[pos] * (np.log(Q[pos]) - np.log(np.maximum(q[pos], floor))))
            * grid.dA
        ),
        "grid_mass_ref": float(np.sum(Q) * grid.dA),
    }


def _evaluate(
    flow, params, problem: _Problem, grid: MarginalGrid, i: int, t: float, key, cfg
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of the flow at save time i against the reference; also the flow's
    Q marginal on the grid."""
    n_samples, m = cfg["eval_samples"], grid.mode
    k1, k2 = jax.random.split(key)
    x, _ = flow.apply(params, k1, n_samples, method=NormalizingFlow.sample_and_log_prob)
    obs = sample_observables(x)
    n_flow = np.asarray(obs["n"])
    Q = problem.q_marginal(i, m, grid.alphas)
    nonfinite = 0
    if problem.N == 1:
        q = np.exp(np.asarray(flow.apply(params, jnp.asarray(grid.points))))
        # an affine coupling may overflow far out on the grid; such points count
        # as q = 0 (the reference mass there then adds to the L1 distance)
        nonfinite = int(np.sum(~np.isfinite(q)))
        q = np.where(np.isfinite(q), q, 0.0).reshape(grid.shape)
        histogram = {}
    else:
        q, histogram = grid.histogram(np.asarray(x[:, 2 * m : 2 * m + 2]), Q)
    record = {
        "t": float(t),
        "n": n_flow.tolist(),
        "n_err": np.asarray(obs["n_err"]).tolist(),
        "a": to_jsonable(np.asarray(obs["a"])),
        "a_ref": to_jsonable(problem.a_ref[i]),
        **compare_marginal(grid, Q, q, problem.n_ref[i], n_flow, **histogram),
        "grid_nonfinite_points": nonfinite,
    }
    kl = problem.kl_exact(i, lambda y: flow.apply(params, y), k2, n_samples)
    if kl is not None:
        record["kl_exact_flow"] = kl
    return record, q


# --------------------------------------------------------------------- checkpoints


# what only says where and how often a run writes: not part of its fingerprint
_NOT_FINGERPRINTED = ("name", "output", "checkpoint_every")


def _save_checkpoint(
    run: RunFolder, interval: int, params: Any, state: dict, q_flow: list, cfg: dict
) -> None:
    blob = np.frombuffer(flax.serialization.to_bytes(params), dtype=np.uint8)
    run.save_arrays(
        "checkpoint.npz",
        fingerprint=np.asarray(json.dumps(fingerprint(cfg, _NOT_FINGERPRINTED))),
        interval=np.asarray(interval),
        params=blob,
        state=np.asarray(json.dumps(to_jsonable(state))),
        q_flow=np.stack(q_flow),
    )


def _read_checkpoint(path: Path, cfg: dict) -> dict[str, Any]:
    """The checkpoint's fields, after checking that it is whole and that it was
    written by this run (`ResumeError` otherwise, naming what differs)."""
    try:
        with np.load(path) as data:
            fields = {k: data[k] for k in ("interval", "params", "state", "q_flow")}
            stored = data["fingerprint"] if "fingerprint" in data else None
            stored = None if stored is None else json.loads(str(stored))
        fields["state"] = json.loads(str(fields["state"]))
        fields["interval"] = int(fields["interval"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ResumeError(
            f"{path} is damaged ({type(err).__name__}: {err}); run without --resume "
            "to start again"
        ) from None
    check_fingerprint(stored, fingerprint(cfg, _NOT_FINGERPRINTED), path)
    return fields


def _restore_params(path: Path, template: Any, blob: np.ndarray) -> Any:
    try:
        return flax.serialization.from_bytes(template, blob.tobytes())
    except Exception as err:  # msgpack and flax raise several types
        raise ResumeError(
            f"{path} is damaged: its flow parameters do not load "
            f"({type(err).__name__}: {err}); run without --resume to start again"
        ) from None


# ---------------------------------------------------------------------- validation


def _given(raw: Any, section: str) -> set[str]:
    part = raw.get(section) if isinstance(raw, Mapping) else None
    return set(part) if isinstance(part, Mapping) else set()


def validate_qflow_config(data: dict[str, Any]) -> dict[str, Any]:
    """Checks a `qflow run` config against `QFLOW_SCHEMA` and across sections
    (keys of the chosen kinds, one entry per mode, parseable expressions)."""
    cfg = validate(copy.deepcopy(data), QFLOW_SCHEMA)
    _check_model(cfg, _given(data, "model"))
    _check_initial(cfg, _given(data, "initial"))
    N = cfg["model"]["modes"]
    if cfg["metrics"]["mode"] >= N:
        raise ConfigError(
            f"`metrics.mode` must be a mode index below {N}, "
            f"got {cfg['metrics']['mode']}"
        )
    return cfg


def _check_model(cfg: dict[str, Any], given: set[str]) -> None:
    model, N = cfg["model"], cfg["model"]["modes"]
    for kind, keys in _MODEL_KEYS.items():
        for key in keys:
            if kind != model["kind"] and key in given:
                raise ConfigError(
                    f"`model.{key}` belongs to model kind {kind!r}, not "
                    f"{model['kind']!r}"
                )
    if model["kind"] == "damped_modes":
        if cfg["initial"]["kind"] != "coherent":
            raise ConfigError(
                "model kind 'damped_modes' has an exact reference only for "
                f"`initial.kind: coherent`, got {cfg['initial']['kind']!r}; write "
                "the model as kind 'expression' (Fock-space reference) instead"
            )
        return
    if model["hamiltonian"] is None:
        raise ConfigError("missing `model.hamiltonian` for model kind 'expression'")
    _model_operators(model)
    D = cfg["reference"]["cutoff"] ** N
    if D > _MAX_FOCK_DIM:
        raise ConfigError(
            f"`reference.cutoff` = {cfg['reference']['cutoff']} gives a Fock "
            f"space of dimension {D} for {N} modes; the dense reference allows "
            f"at most {_MAX_FOCK_DIM}"
        )


def _check_initial(cfg: dict[str, Any], given: set[str]) -> None:
    init, N = cfg["initial"], cfg["model"]["modes"]
    takes = _INITIAL_KEYS[init["kind"]]
    for key in sorted(given & {"alpha", "sign", "n", "nth"} - set(takes)):
        raise ConfigError(
            f"`initial.{key}` is not used by initial kind {init['kind']!r} "
            f"(it takes {', '.join(takes)})"
        )
    if init["kind"] == "cat" and N != 1:
        raise ConfigError(
            f"`initial.kind: cat` is implemented for one mode, got `model.modes` = {N}"
        )
    if init[takes[0]] is None:
        raise ConfigError(
            f"missing `initial.{takes[0]}` for initial kind {init['kind']!r}"
        )
    if len(init[takes[0]]) != N:
        raise ConfigError(
            f"`initial.{takes[0]}` has {len(init[takes[0]])} entries but "
            f"`model.modes` is {N}"
        )
    if init["kind"] == "cat" and init["alpha"] == [[0.0, 0.0]] and init["sign"] < 0:
        raise ConfigError("`initial.alpha` must be nonzero for an odd cat state")


# ---------------------------------------------------------------------------- run


def _settings(cfg: dict[str, Any]) -> EulerKLSettings | TDVPSettings:
    if cfg["method"] == "tdvp":
        return TDVPSettings(**cfg["tdvp"])
    return EulerKLSettings(**cfg["euler_kl"])


def _problem(cfg: dict[str, Any], initial: _Initial, tsave: np.ndarray) -> _Problem:
    if cfg["model"]["kind"] == "damped_modes":
        return _DampedModes(cfg["model"], initial, tsave)
    return _FockReference(
        cfg["model"], cfg["reference"], initial, tsave, cfg["metrics"]["mode"]
    )


def _grid(cfg: dict[str, Any], problem: _Problem) -> MarginalGrid:
    w = cfg["metrics"]["grid_half_width"]
    if w is None:
        w = float(np.sqrt(problem.n_ref[:, cfg["metrics"]["mode"]].max() + 1) + 4)
    m = cfg["metrics"]["mode"]
    return MarginalGrid(np.linspace(-w, w, cfg["metrics"]["grid_points"]), m)


def _pretrain_flow(flow, params, initial: _Initial, cfg: dict) -> dict[str, Any]:
    """Fits the flow to Q(0); returns the parameters and what was measured."""
    settings = dict(cfg["pretrain"])
    ml = settings.pop("objective") == "max_likelihood"
    params, info = pretrain(
        flow,
        params,
        jax.random.key(cfg["seed"] + 5),
        initial.logq(),
        initial.sampler() if ml else None,
        PretrainSettings(**settings),
    )
    return {
        **info,
        "params": params,
        "objective": "maximum likelihood on exact samples of Q(0)"
        if ml
        else "reverse KL to the analytic log Q(0)",
        "kl_kind": "KL(Q0 || q) on exact samples"
        if ml
        else "KL(q || Q0) on flow samples",
    }


@dataclass(frozen=True)
class QFlowSetup:
    """A validated `qflow run` config with its problem: the compiled Q-PDE and the
    reference at the save times, and the grid where Q marginals are compared.

    Attributes:
        cfg: the config with defaults filled in.
        initial: the initial state.
        problem: PDE (`problem.pde`), reference <n_j> (`problem.n_ref`) and <a_j>,
            reference marginals (`problem.q_marginal`), exact KL where known.
        tsave: save times.
        grid: the `MarginalGrid` of `metrics.mode`.
    """

    cfg: dict[str, Any]
    initial: _Initial
    problem: _Problem
    tsave: np.ndarray
    grid: MarginalGrid


def setup_qflow(config: dict[str, Any]) -> QFlowSetup:
    """Validates a `qflow run` config and builds its problem and reference (for the
    `expression` models this solves the Fock-space reference).

    Examples:
        >>> setup = setup_qflow(DEFAULT_QFLOW_CONFIG)
        >>> print(np.round(setup.problem.n_ref[-1], 4))  # exact <n>(t_end) = 4 e^-2
        [0.5413]
    """
    return _setup(validate_qflow_config(config))


def _setup(cfg: dict[str, Any]) -> QFlowSetup:
    tsave = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    initial = _Initial.from_config(cfg["initial"], cfg["model"]["modes"])
    problem = _problem(cfg, initial, tsave)
    return QFlowSetup(cfg, initial, problem, tsave, _grid(cfg, problem))


def run_qflow(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs Q-Flow on the configured problem; writes summary.json, observables.npz,
    checkpoint.npz and PNG plots (observables, Q snapshots, errors).

    With `resume`, continues from checkpoint.npz (written after pre-training and
    after every `checkpoint_every` save intervals) to the same final result as an
    uninterrupted run with the same seed: pre-training draws from the seed, every
    interval from fold_in(seed, interval).
    """
    started = time.perf_counter()
    cfg = validate_qflow_config(config)
    run = RunFolder(out_dir or cfg["output"]["dir"] or Path("runs") / cfg["name"])
    ckpt = run.path / "checkpoint.npz"
    saved = _read_checkpoint(ckpt, cfg) if resume and ckpt.exists() else None
    if resume and saved is None:
        print(
            f"qflow run: nothing to resume in {run.path} (no checkpoint.npz); "
            "starting from the beginning",
            file=sys.stderr,
        )
    setup = _setup(cfg)
    initial, problem, tsave, grid = (
        setup.initial,
        setup.problem,
        setup.tsave,
        setup.grid,
    )
    reference_s = time.perf_counter() - started
    N = cfg["model"]["modes"]
    fcfg = cfg["flow"]
    flow = NormalizingFlow(
        dim=2 * N,
        n_layers=fcfg["layers"],
        coupling=fcfg["coupling"],
        hidden=tuple(fcfg["hidden"]),
        n_bins=fcfg["bins"],
        lu_mixing=fcfg["lu_mixing"],
        init_mean=tuple(float(v) for v in initial.mean()),
        init_scale=initial.scale(),
    )
    params = flow.init(jax.random.key(cfg["seed"]), jnp.zeros((1, flow.dim)))
    settings = _settings(cfg)
    evolve = evolve_tdvp if cfg["method"] == "tdvp" else evolve_euler_kl
    base = jax.random.key(cfg["seed"] + 1)
    eval_key = jax.random.key(cfg["seed"] + 2)
    if saved is not None:
        start, state = saved["interval"], saved["state"]
        params = _restore_params(ckpt, params, saved["params"])
        q_flow = list(saved["q_flow"])
    else:
        start, state = 0, {"records": [], "infos": [], "pretrain": None}
        state["timings"] = {"pretrain_s": 0.0, "evolution_s": 0.0, "evaluation_s": 0.0}
        if not initial.exact_flow:
            began = time.perf_counter()
            state["pretrain"] = _pretrain_flow(flow, params, initial, cfg)
            params = state["pretrain"].pop("params")
            state["timings"]["pretrain_s"] = time.perf_counter() - began
        began = time.perf_counter()
        record, q0 = _evaluate(flow, params, problem, grid, 0, 0.0, eval_key, cfg)
        state["timings"]["evaluation_s"] += time.perf_counter() - began
        state["records"], q_flow = [record], [q0]
        _save_checkpoint(run, 0, params, state, q_flow, cfg)
    timings = state["timings"]
    bar = tqdm(
        range(start, len(tsave) - 1),
        disable=not progress,
        desc=cfg["name"],
        initial=start,
        total=len(tsave) - 1,
    )
    for i in bar:
        began = time.perf_counter()
        try:
            res = evolve(
                problem.pde,
                flow,
                params,
                tsave[i : i + 2],
                key=jax.random.fold_in(base, i),
                settings=settings,
            )
        except FloatingPointError as err:
            raise RuntimeError(
                f"{cfg['method']} failed on save interval {i} "
                f"[{tsave[i]:.4g}, {tsave[i + 1]:.4g}]: {err}; checkpoint.npz holds "
                "the last good state"
            ) from err
        timings["evolution_s"] += time.perf_counter() - began
        params = res.final_state
        state["infos"].append(res.infos[0])
        began = time.perf_counter()
        record, q = _evaluate(
            flow,
            params,
            problem,
            grid,
            i + 1,
            tsave[i + 1],
            jax.random.fold_in(eval_key, i + 1),
            cfg,
        )
        timings["evaluation_s"] += time.perf_counter() - began
        if not np.isfinite(record["max_abs_error_n"]):
            raise RuntimeError(
                f"{cfg['method']} gave a non-finite flow at t = {tsave[i + 1]:.4g} "
                f"(interval info: {res.infos[0]}); checkpoint.npz holds the last good "
                "state"
            )
        state["records"].append(record)
        q_flow.append(q)
        loss = res.infos[0].get("residual", res.infos[0].get("loss", float("nan")))
        bar.set_postfix(
            t=f"{tsave[i + 1]:.3g}",
            loss=f"{loss:.2e}",
            rel_err_n=f"{record['max_rel_error_n']:.2e}",
            l1_q=f"{record['l1_q']:.2e}",
        )
        if (i + 1) % cfg["checkpoint_every"] == 0 or i + 2 == len(tsave):
            _save_checkpoint(run, i + 1, params, state, q_flow, cfg)

    records = state["records"]
    # proposal: a Gaussian 25% wider than the flow's samples in every direction
    xs, _ = flow.apply(
        params,
        jax.random.key(cfg["seed"] + 3),
        10_000,
        method=NormalizingFlow.sample_and_log_prob,
    )
    norm, norm_err = normalization(
        lambda y: flow.apply(params, y),
        jax.random.key(cfg["seed"] + 4),
        flow.dim,
        xs.mean(0),
        1.25 * float(xs.std(0).max()),
    )
    metrics = {
        "max_rel_error_n": max(r["max_rel_error_n"] for r in records),
        "max_abs_error_n": max(r["max_abs_error_n"] for r in records),
        "max_l1_q": max(r["l1_q"] for r in records),
        "final_l1_q": records[-1]["l1_q"],
        "final_l2_rel_q": records[-1]["l2_rel_q"],
        "max_kl_grid": max(r["kl_grid"] for r in records),
        "final_kl_grid": records[-1]["kl_grid"],
        "min_grid_mass_ref": min(r["grid_mass_ref"] for r in records),
        "normalization": float(norm),
        "normalization_stderr": float(norm_err),
    }
    if "kl_exact_flow" in records[-1]:
        metrics["final_kl_exact_flow"] = records[-1]["kl_exact_flow"]
    if N > 1:
        metrics["max_l1_q_noise_floor"] = max(r["l1_q_noise_floor"] for r in records)
    if state["pretrain"] is not None:
        metrics["pretrain_kl"] = state["pretrain"]["kl"]
    notes = []
    if fcfg["coupling"] == "spline" and problem.pde.max_order >= 2:
        notes.append(
            "rational-quadratic splines are only C^1: grad log q jumps at the "
            "knots, so the pointwise second derivatives in d log Q/dt miss the "
            "knots' delta terms (E_q[Lap Q / Q] != 0) and TDVP/Euler-KL follow a "
            "biased PDE; prefer affine couplings for second-order Q-PDEs"
        )
    if any(r["grid_nonfinite_points"] for r in records):
        notes.append(
            "the flow density overflowed at some far grid points, counted as q = 0"
        )
    extra = {
        "reference": {"kind": problem.reference, **problem.info},
        "metric_definitions": {
            "marginal_mode": cfg["metrics"]["mode"],
            "grid": f"[-{grid.axis[-1]:.4g}, {grid.axis[-1]:.4g}]^2, "
            f"{len(grid.axis)} x {len(grid.axis)} points",
            **METRIC_DEFINITIONS,
        },
        "pretrain": state["pretrain"],
        "notes": notes,
        "records": records,
        "intervals": state["infos"],
    }
    t = np.array([r["t"] for r in records])
    n_flow = np.array([r["n"] for r in records])
    n_ref = np.array([r["n_ref"] for r in records])
    q_ref = np.stack(
        [
            problem.q_marginal(i, cfg["metrics"]["mode"], grid.alphas)
            for i in range(len(t))
        ]
    )
    run.save_arrays(
        "observables.npz",
        t=t,
        n=n_flow,
        n_ref=n_ref,
        n_err=np.array([r["n_err"] for r in records]),
        a=np.array(
            [np.add(r["a"]["real"], 1j * np.array(r["a"]["imag"])) for r in records]
        ),
        a_ref=problem.a_ref,
        l1_q=np.array([r["l1_q"] for r in records]),
        kl_grid=np.array([r["kl_grid"] for r in records]),
        grid=grid.axis,
        q_flow=np.stack(q_flow),
        q_ref=q_ref,
    )
    _plot(run, cfg, t, n_flow, n_ref, records, grid, np.stack(q_flow), q_ref, N)
    timings_s = {
        "reference_this_session": reference_s,
        **timings,
        "wall_this_session": time.perf_counter() - started,
    }
    return run.write_summary("run", cfg, metrics, timings_s, **extra)


def _plot(run, cfg, t, n_flow, n_ref, records, grid, q_flow, q_ref, N) -> None:
    shown = range(min(N, 6))
    n_err = np.array([r["n_err"] for r in records])
    title = f"{cfg['name']}: Q-Flow ({cfg['method']})"
    run.plot_curves(
        "observables.png",
        t,
        {f"<n_{j}> flow": n_flow[:, j] for j in shown},
        {f"<n_{j}> reference": n_ref[:, j] for j in shown},
        bands={f"<n_{j}> flow": n_err[:, j] for j in shown},
        ylabel="<a^dag a> (band: +-1 standard error)",
        title=f"{title} vs reference",
    )
    run.plot_curves(
        "errors.png",
        t[1:],
        {
            "max rel. error <n>": [r["max_rel_error_n"] for r in records[1:]],
            f"L1 of Q marginal (mode {cfg['metrics']['mode']})": [
                r["l1_q"] for r in records[1:]
            ],
            "KL(Q_ref || q) on the grid": [r["kl_grid"] for r in records[1:]],
        },
        ylabel="error",
        title=f"{title}: errors against the reference",
        logy=True,
    )
    _plot_snapshots(run, cfg, t, grid, q_flow, q_ref, N)


def _plot_snapshots(run, cfg, t, grid, q_flow, q_ref, N) -> None:
    """Q marginal (x_m, p_m) of the flow (top) next to the reference (bottom)."""
    m = cfg["metrics"]["mode"]
    picks = np.unique(np.round(np.linspace(0, len(t) - 1, cfg["metrics"]["snapshots"])))
    # zoom on the square that holds every reference value above 1e-3 of the peak
    seen = np.max(q_ref, 0) > 1e-3 * q_ref.max()
    w = float(np.max(np.abs(grid.axis[np.nonzero(seen.any(0) | seen.any(1))])))
    w = min(w + 0.5, float(grid.axis[-1]))
    fig, axes = pyplot().subplots(
        2,
        len(picks),
        figsize=(3.0 * len(picks), 5.4),
        dpi=110,
        squeeze=False,
        layout="constrained",
    )
    flow_label = "flow density" if N == 1 else "flow (histogram)"
    for col, i in enumerate(picks.astype(int)):
        vmax = float(max(q_flow[i].max(), q_ref[i].max()))
        for row, (q, label) in enumerate(
            ((q_flow[i], flow_label), (q_ref[i], "reference"))
        ):
            ax = axes[row, col]
            edge = float(grid.axis[-1])
            image = ax.imshow(
                q.T,
                origin="lower",
                extent=(-edge, edge, -edge, edge),
                vmin=0,
                vmax=vmax,
                cmap="viridis",
            )
            ax.set_xlim(-w, w)
            ax.set_ylim(-w, w)
            ax.set_title(f"{label}, t = {t[i]:.3g}", fontsize=8)
            ax.set_xlabel(f"x_{m}", fontsize=8)
            ax.set_ylabel(f"p_{m}", fontsize=8)
            ax.tick_params(labelsize=7)
        bar = fig.colorbar(image, ax=axes[:, col], shrink=0.8)
        bar.ax.tick_params(labelsize=6)
    fig.suptitle(f"{cfg['name']}: Q marginal of mode {m}", fontsize=9)
    run.save_figure("q_snapshot.png", fig)
