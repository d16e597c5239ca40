"""The metrics of phase-space solutions against a reference: one definition of
each, used by `qflow run`, `qflow pinn`, the comparison suite (`qflow bench`) and
`qflow collect`, and written into every summary.json (`METRIC_DEFINITIONS`).

Examples:
    >>> errors = n_errors(np.array([1.02, 0.01]), np.array([1.0, 0.0]))
    >>> {k: round(v, 6) for k, v in errors.items()}  # the empty mode: absolute only
    {'max_rel_error_n': 0.02, 'max_abs_error_n': 0.02, 'max_scaled_error_n': 0.02}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "METRIC_DEFINITIONS",
    "MarginalGrid",
    "centroid_errors",
    "compare_marginal",
    "n_errors",
    "record_metrics",
]

# What each metric is, written into summary.json.
METRIC_DEFINITIONS = {
    "max_rel_error_n": "max over save times and modes holding >= 0.05 quanta of "
    "|<n_j>_flow - <n_j>_ref| / <n_j>_ref; <n_j>_flow = E_q|alpha_j|^2 - 1 from "
    "eval_samples flow samples (standard error in records[].n_err)",
    "max_abs_error_n": "max over save times and modes of |<n_j>_flow - <n_j>_ref|",
    "max_scaled_error_n": "max over save times and modes of |<n_j>_flow - "
    "<n_j>_ref| / max(<n_j>_ref, 1): <= x means every <n_j> within a fraction x "
    "of the reference or x quanta",
    "max_scaled_error_n_net": "max_scaled_error_n with twice the reference's "
    "standard error of <n_j> subtracted first (references from quantum "
    "trajectories): max over save times and modes of max(|<n_j>_flow - "
    "<n_j>_ref| - 2 stderr_ref, 0) / max(<n_j>_ref, 1)",
    "max_centroid_error": "max over save times of |E_q[alpha] - <a>_ref|, "
    "Euclidean over all modes (records[].centroid: |E_q[alpha]|, "
    "records[].centroid_ref: |<a>_ref|)",
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
    "Carlo on eval_samples exact samples (final_ and max_ over save times)",
    "kl_flow_ref": "trajectory references with reference.kl_samples: KL(q || Q) "
    "over all 2N coordinates at t_end, Monte Carlo on kl_samples flow samples, Q = "
    "pi^-N mean_i |<alpha|psi_i>|^2 of the trajectories' final kets "
    "(final_kl_flow_ref and its _stderr over the samples)",
    "pde_residual": "flows: the relative TDVP residual E[(sc - Gc theta_dot)^2] / "
    "E[sc^2] at each save time (records[].pde_residual; sc: centred d log Q/dt "
    "from the Q-PDE, Gc theta_dot: the flow's best motion, fitted on the TDVP "
    "batch); records[].pde_residual_test evaluates the same theta_dot on "
    "independent samples (0: the flow follows the PDE, 1: not at all)",
    "normalization": "importance-sampling estimate of the integral of the final "
    "flow density (proposal: Gaussian 25% wider than the flow samples)",
    "grid_mass_ref": "sum Q_ref dA on the grid: the reference mass the grid covers",
}


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

    @classmethod
    def around(
        cls,
        n_ref: np.ndarray,
        points: int,
        mode: int = 0,
        half_width: float | None = None,
    ) -> MarginalGrid:
        """The grid of `mode` whose half-width (default sqrt(max <n> + 1) + 4)
        holds the reference marginal at every time; n_ref: (nt,) its <n>(t)."""
        if half_width is None:
            half_width = float(np.sqrt(np.max(n_ref) + 1) + 4)
        return cls(np.linspace(-half_width, half_width, points), mode)

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


def n_errors(
    n_model: np.ndarray, n_ref: np.ndarray, n_ref_stderr: np.ndarray | None = None
) -> dict[str, float]:
    """max_rel_error_n (over the modes holding at least 0.05 quanta),
    max_abs_error_n and max_scaled_error_n of <n_j>, over arrays of any shape (one
    save time or all); with the reference's standard errors also
    max_scaled_error_n_net.

    Examples:
        >>> err = n_errors(np.array([1.1]), np.array([1.0]), np.array([0.02]))
        >>> round(err["max_scaled_error_n_net"], 12)  # (0.1 - 2 x 0.02) / 1
        0.06
    """
    err = np.abs(n_model - n_ref)
    rel = np.where(n_ref >= 0.05, err / np.maximum(n_ref, 0.05), 0)
    out = {
        "max_rel_error_n": float(np.max(rel)),
        "max_abs_error_n": float(np.max(err)),
        "max_scaled_error_n": float(np.max(err / np.maximum(n_ref, 1.0))),
    }
    if n_ref_stderr is not None:
        net = np.maximum(err - 2 * np.asarray(n_ref_stderr), 0)
        out["max_scaled_error_n_net"] = float(np.max(net / np.maximum(n_ref, 1.0)))
    return out


def centroid_errors(a_model: np.ndarray, a_ref: np.ndarray) -> dict[str, float]:
    """The centroid of Q, E_Q[alpha] (N complex numbers), against the reference's:
    its norm, the reference's norm and the Euclidean distance over all modes.

    Examples:
        >>> centroid_errors(np.array([3.0, 0.0]), np.array([3.0, 4j]))
        {'centroid': 3.0, 'centroid_ref': 5.0, 'centroid_error': 4.0}
    """
    return {
        "centroid": float(np.linalg.norm(a_model)),
        "centroid_ref": float(np.linalg.norm(a_ref)),
        "centroid_error": float(np.linalg.norm(np.asarray(a_model) - a_ref)),
    }


def compare_marginal(
    grid: MarginalGrid,
    Q: np.ndarray,
    q: np.ndarray,
    n_ref: np.ndarray,
    n_model: np.ndarray,
    *,
    n_ref_stderr: np.ndarray | None = None,
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
        n_ref_stderr: (N,) standard errors of n_ref, for a statistical reference.
        floor: smallest q used inside the log of the grid KL.
        noise: the expected L1 of an exact histogram estimate (0 for densities).
    """
    pos = Q > 0
    return {
        "n_ref": n_ref.tolist(),
        **n_errors(n_model, n_ref, n_ref_stderr),
        "l1_q": float(np.sum(np.abs(q - Q)) * grid.dA),
        "l1_q_noise_floor": noise,
        "l2_rel_q": float(np.sqrt(np.sum((q - Q) ** 2) / np.sum(Q**2))),
        "kl_grid": float(
            np.sum(Q[pos] * (np.log(Q[pos]) - np.log(np.maximum(q[pos], floor))))
            * grid.dA
        ),
        "grid_mass_ref": float(np.sum(Q) * grid.dA),
    }


def record_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """The run's metrics from its records (one per save time, each from
    `compare_marginal` or at least `n_errors`): maxima over time, and the final
    values of the marginal's distances."""
    out = {
        key: max(r[key] for r in records)
        for key in (
            "max_rel_error_n",
            "max_abs_error_n",
            "max_scaled_error_n",
            "max_scaled_error_n_net",
        )
        if key in records[-1]
    }
    if "centroid_error" in records[-1]:
        out["max_centroid_error"] = max(r["centroid_error"] for r in records)
    last = records[-1]
    if "l1_q" in last:
        out.update(
            max_l1_q=max(r["l1_q"] for r in records),
            final_l1_q=last["l1_q"],
            final_l2_rel_q=last["l2_rel_q"],
            max_kl_grid=max(r["kl_grid"] for r in records),
            final_kl_grid=last["kl_grid"],
            min_grid_mass_ref=min(r["grid_mass_ref"] for r in records),
        )
        if any(r["l1_q_noise_floor"] for r in records):
            out["max_l1_q_noise_floor"] = max(r["l1_q_noise_floor"] for r in records)
    if "pde_residual_test" in last:
        out["max_pde_residual_test"] = max(r["pde_residual_test"] for r in records)
    if "kl_exact_flow" in last:
        out["final_kl_exact_flow"] = last["kl_exact_flow"]
        out["max_kl_exact_flow"] = max(r["kl_exact_flow"] for r in records)
    if "kl_flow_ref" in last:
        out["final_kl_flow_ref"] = last["kl_flow_ref"]
        out["final_kl_flow_ref_stderr"] = last["kl_flow_ref_stderr"]
    return out
