"""Monte Carlo with piecewise-linear control variates, and residual ratio tracking.

Control variate (pl_integration.md section 5): with x_i ~ p, i = 1..N, and a CPWL network g
whose integral G over the same domain is exact,

    F_hat = alpha G + mean_i (f(x_i) - alpha g(x_i)) / p(x_i)

is unbiased as long as alpha and g do not depend on the x_i: estimate alpha from a separate
batch (:func:`optimal_alpha`) and train g on earlier samples (:class:`OnlineControlVariate`).
Shapes: B independent integrals (e.g. pixels), N samples each, C channels: f, g [B, N, C],
pdf [B, N], G [B, C]. The network is evaluated in its own dtype while G comes from float64
geometry; the mismatch is at rounding level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fieldforge.fields.piecewise import as_layers, evaluate, integrate, integrate_rays, single_thread


@dataclass
class Estimate:
    value: Tensor  # [B, C]
    variance: Tensor  # [B, C] estimated variance of ``value`` (sample variance / N)
    alpha: Tensor | None = None  # [B, C] control-variate coefficient used


def mc_estimate(f: Tensor, pdf: Tensor) -> Estimate:
    """Plain Monte Carlo: mean(f / p) with its variance estimate."""
    y = f / pdf[..., None]
    return Estimate(y.mean(1), y.var(1) / y.shape[1])


def optimal_alpha(f: Tensor, g: Tensor, pdf: Tensor) -> Tensor:
    """alpha* = Cov(f/p, g/p) / Var(g/p) per integral and channel [B, C] (0 where Var(g/p) = 0).
    Use samples that are *not* the ones of the estimate, or the estimator is biased."""
    fy, gy = f / pdf[..., None], g / pdf[..., None]
    fc, gc = fy - fy.mean(1, keepdim=True), gy - gy.mean(1, keepdim=True)
    var = (gc * gc).sum(1)
    return torch.where(var > 0, (fc * gc).sum(1) / torch.where(var > 0, var, 1.0), 0.0)


def cv_estimate(f: Tensor, g: Tensor, pdf: Tensor, G: Tensor, alpha: Tensor | float = 1.0) -> Estimate:
    """alpha G + mean((f - alpha g) / p) with its variance estimate; alpha and G broadcast to [B, C]."""
    B, _, C = f.shape
    alpha = torch.as_tensor(alpha, dtype=f.dtype).expand(B, C)
    y = (f - alpha[:, None] * g) / pdf[..., None]
    return Estimate(alpha * G + y.mean(1), y.var(1) / y.shape[1], alpha)


def cv_integrate(f_fn, sampler, g: nn.Module, lo, hi, n: int, n_alpha: int = 0,
                 condition: Tensor | None = None) -> Estimate:
    """Control-variate estimate of the integral of ``f_fn`` over the box [lo, hi] (2-D or 3-D).

    ``sampler(n) -> (x [B, n, d], pdf [B, n])`` draws in the box (pdf > 0 wherever f - alpha g
    is not 0); ``f_fn(x) -> [B, n, C]``; g takes [x, condition] and its exact integral is used.
    alpha is fitted on ``n_alpha`` separate samples (alpha = 1 when n_alpha = 0).
    """
    layers = as_layers(g)
    with torch.no_grad():
        G = integrate(layers, lo, hi, condition)
        G = G if condition is not None else G[None]

        def g_at(x: Tensor) -> Tensor:
            if condition is not None:
                x = torch.cat([x, condition[:, None].expand(-1, x.shape[1], -1).to(x)], -1)
            return evaluate(layers, x)
        alpha = torch.ones_like(G)
        if n_alpha:
            xa, pa = sampler(n_alpha)
            alpha = optimal_alpha(f_fn(xa), g_at(xa).to(pa.dtype), pa)
        x, p = sampler(n)
        return cv_estimate(f_fn(x), g_at(x).to(p.dtype), p, G.to(p.dtype), alpha.to(p.dtype))


class OnlineControlVariate:
    """Trains g online on past samples, in the style of neural control variates.

    ``update(x, f, pdf)`` adds samples to a replay buffer (the newest ``capacity`` kept) and
    takes ``steps`` Adam steps on minibatches from it, minimising the residual's second moment
    mean(((f - g(x)) / p)^2) normalised by mean((f / p)^2), on one intra-op thread (small
    networks). Samples used to train g must not be reused in the estimate that g serves.
    """

    def __init__(self, g: nn.Module, lr: float = 5e-3, capacity: int = 1 << 20, batch: int = 8192,
                 generator: torch.Generator | None = None):
        self.g, self.capacity, self.batch, self.generator = g, capacity, batch, generator
        self.opt = torch.optim.Adam(g.parameters(), lr=lr)
        self.x = self.f = self.pdf = None

    @single_thread()
    def update(self, x: Tensor, f: Tensor, pdf: Tensor, steps: int = 50) -> float:
        """x [M, n_in], f [M, C], pdf [M]; returns the last training loss."""
        def push(old, new):
            return new if old is None else torch.cat([old, new])[-self.capacity:]
        self.x, self.f, self.pdf = push(self.x, x.detach()), push(self.f, f.detach()), push(self.pdf, pdf.detach())
        scale = (self.f / self.pdf[:, None]).square().mean().clamp_min(1e-30)
        loss = torch.zeros(())
        for _ in range(steps):
            idx = torch.randint(len(self.x), (min(self.batch, len(self.x)),), generator=self.generator)
            r = (self.f[idx] - self.g(self.x[idx]).to(self.f.dtype)) / self.pdf[idx, None]
            loss = r.square().mean() / scale
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return float(loss.detach())


def residual_ratio_tracking(sigma_fn, control: nn.Module, origins: Tensor, directions: Tensor,
                            t_near: Tensor | float, t_far: Tensor | float, majorant: Tensor | float,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Unbiased transmittance exp(-int sigma dt) along rays by residual ratio tracking.

    ``control`` is a CPWL network whose output 0 is the control density sigma_c (its optical
    depth is exact via :func:`integrate_rays`); ``majorant`` lambda > 0 (float or [R]) is the
    constant rate of the Poisson process of tentative collisions on [t_near, t_far]:

        T_hat = exp(-int sigma_c) prod_i (1 - (sigma(x_i) - sigma_c(x_i)) / lambda)

    Unbiased for any lambda > 0; low variance when 0 <= sigma - sigma_c <= lambda.
    ``sigma_fn(x [M, 3]) -> [M] or [M, 1]``. Returns T_hat [R] and the number of sigma
    evaluations per ray [R].
    """
    R = origins.shape[0]
    dtype = origins.dtype
    lam = torch.as_tensor(majorant, dtype=dtype).expand(R)
    if not bool((lam > 0).all()):
        raise ValueError("the majorant must be > 0 on every ray")
    t0 = torch.as_tensor(t_near, dtype=dtype).expand(R)
    t1 = torch.as_tensor(t_far, dtype=dtype).expand(R)
    layers = as_layers(control)
    with torch.no_grad():
        tau_c = integrate_rays(layers, origins, directions, t0, t1)[:, 0].to(dtype)
        count = torch.poisson(lam * (t1 - t0), generator=generator).long()
        k = int(count.max()) if R else 0
        u = torch.rand(R, k, dtype=dtype, generator=generator)
        live = torch.arange(k) < count[:, None]
        ray, j = torch.nonzero(live, as_tuple=True)
        t = t0[ray] + u[ray, j] * (t1 - t0)[ray]
        x = origins[ray] + t[:, None] * directions[ray]
        resid = sigma_fn(x).reshape(-1).to(dtype) - evaluate(layers, x)[:, 0].to(dtype)
        factor = torch.ones(R, k, dtype=dtype)
        factor[ray, j] = 1 - resid / lam[ray]
        return torch.exp(-tau_c) * factor.prod(1), count
