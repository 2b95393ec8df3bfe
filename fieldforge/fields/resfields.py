"""ResFields: linear layers with a time-dependent low-rank weight residual (Mihajlovic et al. 2024).

    y = x (W + dW(t))^T + b,   dW(t) = sum_r v_t[r] M_r        (ResFields, arXiv:2309.03160, "vm")

W [out, in] and b [out] are the host layer's (b is static); v [C, R] holds one coefficient row per
time knot, M [R, out * in] the shared spanning set; both start at 0.01 * randn (not zero: a zero
factor would stop the other's gradient). Time lookup:

- ``"interpolation"`` (default): continuous t in [0, 1] (the Field contract's time), mapped to
  [-1, 1]; v is linearly interpolated between its C knots with align-corners semantics (knot k
  at t = k / (C - 1)) and clamped at the ends, so a frame's exact time gives that frame's weights;
- ``"lookup"``: integer frame ids in [0, C).

No weight matrix is built per sample, nor for every knot. One time for all samples: the layer
applies W + dW(t). A few distinct times (at most ``max_groups``, e.g. a training batch drawn from
the frames): one weight per distinct time, samples sorted by time and padded into one batched
matmul. Otherwise (continuous per-sample times) the factorised product
dW(t) x = sum_r v_t[r] (M_r x): one matmul against all of M, then a per-sample sum over r.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.encoders.siren import Siren


class ResFieldLinear(nn.Linear):
    """``nn.Linear`` plus a rank-``rank`` temporal residual over ``capacity`` time knots."""

    def __init__(self, in_features: int, out_features: int, capacity: int, rank: int = 10,
                 mode: str = "interpolation", init_std: float = 0.01, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        if mode not in ("interpolation", "lookup"):
            raise ValueError(f"ResFieldLinear: mode must be interpolation or lookup, got {mode!r}")
        if int(capacity) < 1 or int(rank) < 1:
            raise ValueError(f"ResFieldLinear: capacity and rank must be >= 1, got {capacity}, {rank}")
        self.capacity, self.rank, self.mode = int(capacity), int(rank), mode
        self.max_groups = 64  # distinct times per batch up to which weights are built per time
        self.v = nn.Parameter(torch.randn(self.capacity, self.rank) * init_std)
        self.M = nn.Parameter(torch.randn(self.rank, out_features * in_features) * init_std)

    def coefficients(self, t: Tensor) -> Tensor:
        """v_t [N, R] for times ``t`` [N] (in [0, 1], or frame ids in lookup mode)."""
        if self.mode == "lookup":
            if t.is_floating_point() and not torch.equal(t, t.round()):
                raise ValueError("ResFieldLinear(mode='lookup'): frame ids must be integers")
            ids = t.long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.capacity):
                raise ValueError(f"ResFieldLinear: frame ids must be in [0, {self.capacity}), "
                                 f"got [{int(ids.min())}, {int(ids.max())}]")
            return self.v[ids]
        if self.capacity == 1:
            return self.v.expand(t.shape[0], self.rank)
        pos = t.to(self.v.dtype).clamp(0, 1) * (self.capacity - 1)
        lo = pos.floor().clamp(max=self.capacity - 2).long()
        frac = (pos - lo)[:, None]
        return torch.lerp(self.v[lo], self.v[lo + 1], frac)

    def _grouped(self, x: Tensor, uniq: Tensor, group: Tensor) -> Tensor:
        """One weight per distinct time; samples sorted by time, padded to [U, max count, in]."""
        w = self.weight + (self.coefficients(uniq) @ self.M).reshape(-1, self.out_features, self.in_features)
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=len(uniq))
        pos = torch.arange(len(x), device=x.device) - (torch.cumsum(counts, 0) - counts)[group[order]]
        padded = x.new_zeros(len(uniq), int(counts.max()), self.in_features)
        padded[group[order], pos] = x[order]
        y = torch.bmm(padded, w.transpose(1, 2))[group[order], pos]
        out = torch.empty_like(y).index_copy_(0, order, y)
        return out if self.bias is None else out + self.bias

    def residual(self, t: Tensor) -> Tensor:
        """dW(t) [out, in] for one time ``t`` (0-dim or [1])."""
        return (self.coefficients(t.reshape(1)) @ self.M).reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``x`` [..., in], ``t`` [..., 1] or [...] (one time per sample), or a single time."""
        if t is None:
            raise ValueError("ResFieldLinear: forward needs a time t")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        tt = t.reshape(-1)
        if tt.numel() == 1 or bool((tt == tt[0]).all()):
            w = self.weight + self.residual(tt[:1])
            return nn.functional.linear(flat, w, self.bias).reshape(*lead, self.out_features)
        if tt.numel() != flat.shape[0]:
            raise ValueError(f"ResFieldLinear: {tt.numel()} times for {flat.shape[0]} samples")
        uniq, group = torch.unique(tt, return_inverse=True)
        if len(uniq) <= self.max_groups:
            return self._grouped(flat, uniq, group).reshape(*lead, self.out_features)
        base = nn.functional.linear(flat, self.weight, self.bias)
        mx = (flat @ self.M.reshape(self.rank * self.out_features, self.in_features).T)
        res = torch.einsum("nr,nro->no", self.coefficients(tt), mx.reshape(-1, self.rank, self.out_features))
        return (base + res).reshape(*lead, self.out_features)


class ResFieldSiren(Siren):
    """SIREN on (coordinates, t) in [-1, 1]^d whose hidden-to-hidden layers are ResField layers.

    Time is the input's last coordinate: it enters as an input and, mapped to [0, 1], through
    the residuals (ResFields: layers [1, ..., n_layers - 1], not the first or last).
    The ResField layers keep SIREN's weight initialisation; v and M keep their own.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, n_layers: int, capacity: int, rank: int,
                 omega_0: float = 30.0):
        super().__init__(in_dim, out_dim, hidden, n_layers, omega_0)
        for i in range(1, len(self.hidden)):
            layer = ResFieldLinear(hidden, hidden, capacity, rank)
            with torch.no_grad():
                layer.weight.copy_(self.hidden[i].weight)
                layer.bias.copy_(self.hidden[i].bias)
            self.hidden[i] = layer

    def _linear(self, i: int, h: Tensor, x: Tensor) -> Tensor:
        lin = self.hidden[i]
        return lin(h, (x[..., -1:] + 1) / 2) if isinstance(lin, ResFieldLinear) else lin(h)
