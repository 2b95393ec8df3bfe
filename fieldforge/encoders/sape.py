"""SAPE: spatially-adaptive progressive encoding (Hertz et al. 2021, arXiv:2104.09125).

Wraps a sorted sinusoidal encoding (:class:`FourierFeatures` or :class:`FrequencyEncoding`,
x in [-1, 1]^d, d = 2 or 3) whose features are ``n_passthrough`` always-on channels followed by
``n_blocks`` frequency blocks of ``block_size`` features in ascending frequency. A block is one
frequency (its sin and cos), which is the reference's block in 2-D.

State on a dense grid of res^d cells (flat index sum_j i_j res^j, axis 0 fastest):
``level`` [cells] = number of unlocked blocks (the mask is the prefix of that length), and
``in_progress`` [cells]. Initially only the pass-through channels are on.

Use (the training loop drives the feedback):

    feats = sape(x)                        # masked features, no gradient through the mask
    loss_per_point = ...                   # e.g. MSE averaged over channels, [N]
    sape.accumulate(x, loss_per_point)     # splat the detached loss to the cell corners
    if step % sape.block_iterations(n_steps) == 0: sape.advance()

Mask lookup interpolates a box-blurred copy of the mask grid (k^d box, k = 5 if res^d > 100
else 3, replicate padding) at u = ((x + 1) / 2) * max(res - 2, 1) + 0.5 (half-cell margin), with
lo = floor(u), hi = ceil(u + 1e-6). :meth:`advance` averages the accumulated loss, fills cells
without samples with the mean of their neighbours, box-blurs it, permanently stops cells whose
blurred loss <= eps, and unlocks the next block (a hard 0 -> 1 step) in cells still in progress.
The mask never decreases.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from fieldforge.encoders.base import Encoding, positive


class SAPE(Encoding):
    """Spatially-adaptive progressive mask around a sorted Fourier-type encoding."""

    input_range = (-1.0, 1.0)

    def __init__(self, encoding: Encoding, res: int = 128, eps: float = 1e-3):
        super().__init__(encoding.in_dim)
        if self.in_dim not in (2, 3):
            raise ValueError(f"SAPE: the spatial controller supports 2-D and 3-D inputs, got in_dim={self.in_dim}")
        if not all(hasattr(encoding, a) for a in ("n_passthrough", "block_size", "n_blocks")):
            raise ValueError(f"SAPE: {type(encoding).__name__} has no progressive block layout")
        self.encoding = encoding
        self.res = max(int(res), 3)
        self.eps = positive("eps", eps, "SAPE")
        self.kernel = 5 if self.res ** self.in_dim > 100 else 3
        self.out_dim = encoding.out_dim
        n_cells = self.res ** self.in_dim
        self.register_buffer("level", torch.zeros(n_cells, dtype=torch.int64))
        self.register_buffer("in_progress", torch.ones(n_cells, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.int64))
        self.register_buffer("loss_sum", torch.zeros(n_cells))
        self.register_buffer("weight_sum", torch.zeros(n_cells))
        self._blurred: Tensor | None = None

    def block_iterations(self, n_iterations: int) -> int:
        """Steps between :meth:`advance` calls so every block can unlock by half of training."""
        return max(int(n_iterations / (2 * self.encoding.n_blocks)), 1)

    # -- grid helpers -------------------------------------------------------------------------
    def _grid(self, v: Tensor) -> Tensor:
        """[cells, C] -> [1, C, res, ...] with axis 0 fastest (the last spatial dim)."""
        return v.T.reshape(1, v.shape[1], *[self.res] * self.in_dim)

    def _flat(self, g: Tensor) -> Tensor:
        return g.reshape(g.shape[1], -1).T

    def _box(self, v: Tensor, centre: bool = True) -> Tensor:
        """k^d box filter with replicate padding on a [cells, C] grid (centre excluded if not centre)."""
        k, d = self.kernel, self.in_dim
        g = F.pad(self._grid(v), [k // 2] * (2 * d), mode="replicate")
        w = torch.ones(1, 1, *[k] * d, dtype=v.dtype, device=v.device)
        if not centre:
            w.view(-1)[w.numel() // 2] = 0
        conv = F.conv2d if d == 2 else F.conv3d
        out = conv(g.transpose(0, 1), w).transpose(0, 1)  # channels filtered independently
        return self._flat(out) / w.sum()

    def _corners(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Cell indices and weights [N, 2^d] of the multilinear lookup (half-cell margin)."""
        u = ((x.detach().reshape(-1, self.in_dim) + 1) / 2) * max(self.res - 2, 1) + 0.5
        lo, hi = torch.floor(u), torch.ceil(u + 1e-6)
        ends = [(lo, hi - u), (hi, u - lo)]
        idx, wts = [], []
        for corner in itertools.product((0, 1), repeat=self.in_dim):
            cell = torch.zeros(u.shape[0], dtype=torch.int64, device=x.device)
            w = torch.ones(u.shape[0], dtype=u.dtype, device=x.device)
            for j, c in enumerate(corner):
                pos, wt = ends[c]
                cell += pos[:, j].long().clamp(0, self.res - 1) * self.res ** j
                w = w * wt[:, j]
            idx.append(cell)
            wts.append(w)
        return torch.stack(idx, 1), torch.stack(wts, 1)

    # -- mask ---------------------------------------------------------------------------------
    def block_mask_grid(self) -> Tensor:
        """Blurred per-cell block mask [cells, n_blocks] (cached until the next :meth:`advance`)."""
        if self._blurred is None:
            blocks = torch.arange(self.encoding.n_blocks, device=self.level.device)
            self._blurred = self._box((blocks < self.level[:, None]).float())
        return self._blurred

    def mask(self, x: Tensor) -> Tensor:
        """Feature mask [..., out_dim] in [0, 1] at x (no gradient)."""
        idx, wts = self._corners(x)
        grid = self.block_mask_grid()
        blocks = sum(grid[idx[:, c]] * wts[:, c, None] for c in range(idx.shape[1]))
        enc = self.encoding
        full = torch.cat([blocks.new_ones(blocks.shape[0], enc.n_passthrough),
                          blocks.repeat_interleave(enc.block_size, dim=1)], 1)
        return full.reshape(*x.shape[:-1], self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.encoding(x) * self.mask(x).to(x.dtype)

    # -- feedback -----------------------------------------------------------------------------
    @torch.no_grad()
    def accumulate(self, x: Tensor, loss: Tensor) -> None:
        """Splat per-point losses ``loss`` [...] at ``x`` [..., d] to the lookup corners."""
        idx, wts = self._corners(x)
        self.loss_sum.index_add_(0, idx.reshape(-1), (wts * loss.detach().reshape(-1, 1)).reshape(-1).float())
        self.weight_sum.index_add_(0, idx.reshape(-1), wts.reshape(-1).float())

    @torch.no_grad()
    def advance(self) -> None:
        """One progress step: stop converged cells, unlock the next block elsewhere, reset."""
        visited = self.weight_sum > 0
        avg = self.loss_sum / torch.where(visited, self.weight_sum, torch.ones_like(self.weight_sum))
        fill = self._box(avg[:, None], centre=False)[:, 0]  # mean of the k^d - 1 neighbours
        avg = torch.where(visited, avg, fill)
        self.in_progress &= self._box(avg[:, None])[:, 0] > self.eps
        if self.pointer < self.encoding.n_blocks:
            self.level[self.in_progress] = self.pointer + 1
            self.pointer += 1
        self.loss_sum.zero_()
        self.weight_sum.zero_()
        self._blurred = None
