"""Time-integration methods: one object per method, holding its own settings.

Every solver of qflow_jax takes `method=` as one of these objects or as its name
(`"tsit5"`, `"kvaerno5"`, `"lawson-tsit5"`, ...). Adaptive methods carry `rtol`,
`atol` and `max_steps`; the step-size controller is diffrax's PID controller with
its RMS norm over every real component of the state (the same as dynamiqs), so a
step is accepted when

    sqrt(mean_i (err_i / (atol + rtol max(|y0_i|, |y1_i|)))^2) <= 1.

Fixed-step methods carry `dt` and `max_steps`. Engines map a method to the diffrax
solver that suits their vector field (the network engine's unrolled Tsit5, GMRES
for implicit stages of large states, ...); a method an engine cannot run is
rejected by name.

Examples:
    >>> import qflow_jax as qf
    >>> qf.Tsit5(rtol=1e-8).rtol, qf.method_from("kvaerno5").name
    (1e-08, 'kvaerno5')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import numpy as np

from qflow_jax.core.checks import check_tolerances

__all__ = [
    "ADAPTIVE_NAMES",
    "AbstractAdaptiveMethod",
    "AbstractFixedMethod",
    "AbstractMethod",
    "Auto",
    "DEFAULT_ATOL",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_RTOL",
    "METHOD_NAMES",
    "Dopri5",
    "Dopri8",
    "Euler",
    "Heun",
    "KenCarp4",
    "KenCarp5",
    "Kvaerno3",
    "Kvaerno5",
    "Lawson",
    "RK4",
    "RK4Solver",
    "Solver",
    "Tsit5",
    "method_from",
]

DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-8
DEFAULT_MAX_STEPS = 100_000


class RK4Solver(dfx.AbstractERK):
    """The classical fourth-order Runge-Kutta method (fixed steps)."""

    tableau: ClassVar[dfx.ButcherTableau] = dfx.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls: ClassVar[Callable[..., Any]] = (
        dfx.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms: Any) -> int:
        return 4


class AbstractMethod(eqx.Module):
    """A time integrator and its settings."""

    max_steps: eqx.AbstractVar[int]
    implicit: ClassVar[bool] = False
    imex: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def solver(self) -> dfx.AbstractSolver:
        """diffrax's solver of this method (engines may substitute their own)."""
        raise NotImplementedError(f"{self.name} has no generic diffrax solver")

    def controller(self, span: Any = None) -> dfx.AbstractStepSizeController:
        raise NotImplementedError

    @property
    def dt0(self) -> float | None:
        """The first step (None: diffrax chooses it)."""
        return None


class AbstractAdaptiveMethod(AbstractMethod):
    """A method with error control: `rtol`, `atol` (PID controller, RMS norm)."""

    rtol: eqx.AbstractVar[float]
    atol: eqx.AbstractVar[float]

    def controller(self, span: Any = None) -> dfx.AbstractStepSizeController:
        """PID controller; with the time `span`, a step below 1e-12 span stops the
        solve (a singular or non-finite vector field) instead of creeping on."""
        dtmin = None if span is None else 1e-12 * span
        return dfx.PIDController(
            rtol=self.rtol, atol=self.atol, dtmin=dtmin, force_dtmin=False
        )


class AbstractFixedMethod(AbstractMethod):
    """A method with a fixed step `dt`."""

    dt: eqx.AbstractVar[float]

    def controller(self, span: Any = None) -> dfx.AbstractStepSizeController:
        return dfx.ConstantStepSize()

    @property
    def dt0(self) -> float:
        return self.dt


def _adaptive(name: str, solver_cls: type | None, doc: str, **flags: bool) -> type:
    def __init__(
        self,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        check_tolerances(rtol, atol, max_steps)
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), int(max_steps)

    namespace = {
        "__annotations__": {"rtol": float, "atol": float, "max_steps": int},
        "__init__": __init__,
        "__doc__": doc,
        "__module__": __name__,
        **flags,
    }
    if solver_cls is not None:
        namespace["solver"] = lambda self: solver_cls()
    return type(name, (AbstractAdaptiveMethod,), namespace)


def _fixed(name: str, solver_cls: type, doc: str) -> type:
    def __init__(self, dt: float, max_steps: int = DEFAULT_MAX_STEPS):
        check_tolerances(1.0, 1.0, max_steps)
        if isinstance(dt, bool) or not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"`dt` must be a number > 0, got {dt!r}")
        self.dt, self.max_steps = float(dt), int(max_steps)

    namespace = {
        "__annotations__": {"dt": float, "max_steps": int},
        "__init__": __init__,
        "__doc__": doc,
        "__module__": __name__,
        "solver": lambda self: solver_cls(),
    }
    return type(name, (AbstractFixedMethod,), namespace)


_ARGS = "Args: rtol, atol (tolerances), max_steps (step limit)."
Tsit5 = _adaptive("Tsit5", dfx.Tsit5, f"Tsitouras 5(4), explicit, adaptive. {_ARGS}")
Dopri5 = _adaptive(
    "Dopri5", dfx.Dopri5, f"Dormand-Prince 5(4), explicit, adaptive. {_ARGS}"
)
Dopri8 = _adaptive(
    "Dopri8", dfx.Dopri8, f"Dormand-Prince 8(7), explicit, adaptive. {_ARGS}"
)
Kvaerno3 = _adaptive(
    "Kvaerno3",
    dfx.Kvaerno3,
    f"Kvaerno 3(2) ESDIRK, implicit (stiff problems). {_ARGS}",
    implicit=True,
)
Kvaerno5 = _adaptive(
    "Kvaerno5",
    dfx.Kvaerno5,
    f"Kvaerno 5(4) ESDIRK, implicit (stiff problems). {_ARGS}",
    implicit=True,
)
KenCarp4 = _adaptive(
    "KenCarp4",
    None,
    f"Kennedy-Carpenter 4(3) IMEX: engines with a stiff part (the network's swap "
    f"term) take it implicitly. {_ARGS}",
    implicit=True,
    imex=True,
)
KenCarp5 = _adaptive(
    "KenCarp5",
    None,
    f"Kennedy-Carpenter 5(4) IMEX, as `KenCarp4`. {_ARGS}",
    implicit=True,
    imex=True,
)
Auto = _adaptive(
    "Auto",
    None,
    f"The engine's default adaptive method (mesolve: 'lawson-tsit5' when the "
    f"generator has a static diagonal, else 'tsit5'). {_ARGS}",
)
Euler = _fixed("Euler", dfx.Euler, "Explicit Euler, fixed step `dt`.")
Heun = _fixed("Heun", dfx.Heun, "Heun's second-order method, fixed step `dt`.")
RK4 = _fixed("RK4", RK4Solver, "Classical fourth-order Runge-Kutta, fixed `dt`.")


class Lawson(AbstractAdaptiveMethod):
    """Integrating-factor (Lawson) Runge-Kutta: the diagonal of the static part of
    the generator is integrated exactly, an explicit method (`inner`: "tsit5",
    "dopri5" or "dopri8") steps the rest. Dense Lindblad engine only.

    Args: inner, rtol, atol, max_steps.
    """

    inner: str = eqx.field(static=True)
    rtol: float
    atol: float
    max_steps: int

    def __init__(
        self,
        inner: str = "tsit5",
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        if inner not in _LAWSON_INNER:
            raise ValueError(
                f"`inner` must be one of {', '.join(_LAWSON_INNER)}, got {inner!r}"
            )
        check_tolerances(rtol, atol, max_steps)
        self.inner, self.rtol, self.atol = inner, float(rtol), float(atol)
        self.max_steps = int(max_steps)

    @property
    def name(self) -> str:
        return f"lawson-{self.inner}"


class Solver(AbstractAdaptiveMethod):
    """Any diffrax solver, adaptive with `rtol`/`atol` (or with `dt` fixed steps
    when `dt` is given).

    Args: solver, rtol, atol, max_steps, dt.
    """

    diffrax_solver: dfx.AbstractSolver
    rtol: float
    atol: float
    max_steps: int
    dt: float | None

    def __init__(
        self,
        solver: dfx.AbstractSolver,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_steps: int = DEFAULT_MAX_STEPS,
        dt: float | None = None,
    ):
        if not isinstance(solver, dfx.AbstractSolver):
            raise TypeError(
                f"`solver` must be a diffrax solver, got {type(solver).__name__}"
            )
        check_tolerances(rtol, atol, max_steps)
        self.diffrax_solver, self.rtol, self.atol = solver, float(rtol), float(atol)
        self.max_steps, self.dt = int(max_steps), dt

    @property
    def name(self) -> str:
        return type(self.diffrax_solver).__name__.lower()

    @property
    def implicit(self) -> bool:  # type: ignore[override]
        return isinstance(self.diffrax_solver, dfx.AbstractImplicitSolver)

    @property
    def imex(self) -> bool:  # type: ignore[override]
        return isinstance(
            self.diffrax_solver, dfx.KenCarp3 | dfx.KenCarp4 | dfx.KenCarp5
        )

    def solver(self) -> dfx.AbstractSolver:
        return self.diffrax_solver

    def controller(self, span: Any = None) -> dfx.AbstractStepSizeController:
        if self.dt is not None:
            return dfx.ConstantStepSize()
        return super().controller(span)

    @property
    def dt0(self) -> float | None:
        return self.dt


_LAWSON_INNER = ("tsit5", "dopri5", "dopri8")
_BY_NAME: dict[str, Callable[[], AbstractMethod]] = {
    "auto": Auto,
    "tsit5": Tsit5,
    "dopri5": Dopri5,
    "dopri8": Dopri8,
    "kvaerno3": Kvaerno3,
    "kvaerno5": Kvaerno5,
    "kencarp4": KenCarp4,
    "kencarp5": KenCarp5,
    **{
        f"lawson-{inner}": (lambda inner=inner: Lawson(inner))
        for inner in _LAWSON_INNER
    },
}


def method_from(
    method: str | AbstractMethod | dfx.AbstractSolver,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    allowed: tuple[str, ...] | None = None,
) -> AbstractMethod:
    """The method object for `method` (a name, a method object or a diffrax solver),
    with `rtol`, `atol`, `max_steps` overriding its own where given.

    `allowed` lists the names an engine runs (None: all); anything else raises a
    ValueError that names them.
    """
    names = METHOD_NAMES if allowed is None else allowed
    if isinstance(method, str):
        if method in _FIXED and method in names:
            raise ValueError(
                f"`method` {method!r} has a fixed step: pass "
                f"qf.{_FIXED[method]}(dt=...)"
            )
        if method not in _BY_NAME or method not in names:
            raise ValueError(
                f"`method` must be one of {', '.join(names)}, a qflow_jax method "
                f"object or a diffrax solver, got {method!r}"
            )
        obj = _BY_NAME[method]()
    elif isinstance(method, AbstractMethod):
        obj = method
    elif isinstance(method, dfx.AbstractSolver):
        obj = Solver(method)
    else:
        raise TypeError(
            "`method` must be a name, a qflow_jax method object (e.g. qf.Tsit5()) or "
            f"a diffrax solver, got {type(method).__name__}"
        )
    if not isinstance(obj, Solver) and obj.name not in names:
        raise ValueError(
            f"`method` {obj.name!r} is not available here; use one of "
            f"{', '.join(names)}"
        )
    given = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    if given and not isinstance(obj, AbstractAdaptiveMethod):
        raise ValueError(
            f"{', '.join(given)} do not apply to the fixed-step {obj.name}"
        )
    if max_steps is not None:
        given["max_steps"] = max_steps
    if given:
        check_tolerances(
            given.get("rtol", getattr(obj, "rtol", 1.0)),
            given.get("atol", getattr(obj, "atol", 1.0)),
            given.get("max_steps", obj.max_steps),
        )
        for key, value in given.items():
            obj = eqx.tree_at(lambda m, key=key: getattr(m, key), obj, value)
    return obj


_FIXED = {"euler": "Euler", "heun": "Heun", "rk4": "RK4"}
ADAPTIVE_NAMES = tuple(_BY_NAME)
METHOD_NAMES = (*ADAPTIVE_NAMES, *_FIXED)
