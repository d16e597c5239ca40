"""Operator expressions (`parse_operator`, `model_operators`): the algebra they
build and the errors that name the key and the token."""

import numpy as np
import pytest

from qflow_jax.config import ConfigError
from qflow_jax.husimi import a, adag
from qflow_jax.husimi.expressions import model_operators, parse_operator


def test_parse_operator_builds_the_algebra():
    c = {"U": 0.5, "g": 0.25, "J": 0.1}
    H = parse_operator("U/2 * adag(0)**2 @ a(0)**2", c, 1, "H")
    assert H.terms == (0.25 * adag(0) @ adag(0) @ a(0) @ a(0)).terms
    L = parse_operator("sqrt(g) * a(0)", c, 1, "L")
    assert L.terms == (0.5 * a(0)).terms
    # complex literals, unary minus, exp, pi, `*` between operators
    hop = parse_operator("1j*J*(adag(0)*a(1) - adag(1)@a(0)) + -pi*exp(0)", c, 2, "H")
    ref = 0.1j * (adag(0) @ a(1) - adag(1) @ a(0)) - np.pi
    assert hop.terms.keys() == ref.terms.keys()
    for key, value in ref.terms.items():
        assert hop.terms[key] == pytest.approx(value)
    assert hop.is_hermitian()


@pytest.mark.parametrize(
    ("hamiltonian", "jumps", "key", "token"),
    [
        ("U * a(0)", [], "m.hamiltonian", "Hermitian"),
        ("adag(0) @ a(0)", ["a(0)", "U"], "m.jump_ops[1]", "`U`"),
    ],
)
def test_model_operators_check_the_physics(hamiltonian, jumps, key, token):
    with pytest.raises(ConfigError) as err:
        model_operators(hamiltonian, jumps, {"U": 0.5}, 1, key="m")
    assert f"`{key}`" in str(err.value) and token in str(err.value)
