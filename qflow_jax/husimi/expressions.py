"""Operator expressions: H and jump operators written as strings in the operator
algebra (`"U/2 * adag(0)**2 @ a(0)**2"`, `"sqrt(gamma) * a(0)"`), parsed with `ast`
into `BosonOp`s and never executed.

Examples:
    >>> H, jumps = model_operators("w * adag(0) @ a(0)", ["sqrt(g) * a(0)"],
    ...                            {"w": 1.0, "g": 0.5}, n_modes=1)
    >>> H, jumps
    (BosonOp(a0^dag a0), [BosonOp(0.707107 a0)])
"""

from __future__ import annotations

import ast
import cmath
import math
from collections.abc import Mapping, Sequence
from typing import Any

from qflow_jax.config import ConfigError
from qflow_jax.husimi.algebra import BosonOp, a, adag

__all__ = ["RESERVED", "model_operators", "parse_operator"]

RESERVED = frozenset({"a", "adag", "sqrt", "exp", "pi"})
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
            if node.id in RESERVED:
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


def model_operators(
    hamiltonian: str,
    jump_ops: Sequence[str],
    constants: Mapping[str, float],
    n_modes: int,
    key: str = "model",
) -> tuple[BosonOp, list[BosonOp]]:
    """H and the jump operators from their expressions, checked: H Hermitian, every
    L_k an operator (a number dissipates nothing). Errors name `KEY.hamiltonian`
    and `KEY.jump_ops[k]`.

    Raises:
        ConfigError: naming the expression at fault.
    """
    H = parse_operator(hamiltonian, constants, n_modes, f"{key}.hamiltonian")
    tol = 1e-12 * max([1.0, *map(abs, H.terms.values())])
    if not H.is_hermitian(tol=tol):
        raise ConfigError(
            f"`{key}.hamiltonian` must be Hermitian, got H - H^dag = {H - H.dag()}"
        )
    jumps = []
    for k, text in enumerate(jump_ops):
        L = parse_operator(text, constants, n_modes, f"{key}.jump_ops[{k}]")
        if L.n_modes == 0:  # a multiple of the identity dissipates nothing
            raise ConfigError(
                f"`{key}.jump_ops[{k}]` must involve a(j) or adag(j), got the "
                f"number `{text}`"
            )
        jumps.append(L)
    return H, jumps
