"""KiloNeRF: a grid of thousands of tiny MLPs, one per cell of the scene box (Reiser et al. 2021).

Grid (KiloNeRF, arXiv:2103.13744): the field's ``aabb`` is split into ``resolution`` cells per axis,
the longest axis gets ``cells`` (default 16) and the others as many as keeps cells nearly
cubic (lego's box: 9 x 16 x 10 = 1440 networks). Cell index per axis
``floor((x - min) / cell_size)``; the flat network index is row-major with **z fastest**.
Each network sees its cell's **local** coordinates in [-1, 1]^3, frequency-encoded with
frequencies 2^0 .. 2^9 (no pi, as the reference); view directions stay global (2^0 .. 2^3).

Tiny MLP per cell (the paper's architecture): 63 -> 32 -> 32 (ReLU), sigma head 32 -> 1, linear bottleneck 32 -> 32,
[bottleneck, dir enc] 59 -> 32 (ReLU) -> 3; density = relu(sigma), rgb = sigmoid. 6,212
parameters per network, every network starting from the *same* Kaiming-uniform draw.

Evaluation: points are sorted by network and cut into blocks of at most ``block`` points that
all belong to one network (smaller blocks when points spread thinly); each layer is one ``baddbmm`` over the blocks with the block's
weights gathered *per block* (never per point), then results are scattered back. Points
outside the box are never evaluated and get density 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fieldforge.encoders.frequency import FrequencyEncoding
from fieldforge.fields.base import Field


def grid_resolution(aabb: Tensor, cells: int) -> tuple[int, int, int]:
    """Cells per axis: ``cells`` on the longest axis, the others scaled to keep cells near cubic."""
    ext = (aabb[1] - aabb[0]).tolist()
    longest = max(ext)
    return tuple(max(1, math.ceil(cells * e / longest - 1e-6)) for e in ext)  # type: ignore[return-value]


class MultiLinear(nn.Module):
    """``n_nets`` independent linear layers: weight [n_nets, in, out], bias [n_nets, out].

    All networks share one Kaiming-uniform initialisation (fan_in = ``in_dim``, given gain),
    biases U(+-1/sqrt(fan_in)).
    """

    def __init__(self, n_nets: int, in_dim: int, out_dim: int, gain: float, generator: torch.Generator):
        super().__init__()
        bound = gain * math.sqrt(3.0 / in_dim)
        w = (torch.rand(in_dim, out_dim, generator=generator) * 2 - 1) * bound
        b = (torch.rand(out_dim, generator=generator) * 2 - 1) / math.sqrt(in_dim)
        self.weight = nn.Parameter(w.expand(n_nets, in_dim, out_dim).clone())
        self.bias = nn.Parameter(b.expand(n_nets, out_dim).clone())

    def forward(self, x: Tensor, nets: Tensor) -> Tensor:
        """``x`` [n_blocks, block, in], ``nets`` [n_blocks] network of each block -> [n_blocks, block, out]."""
        return torch.baddbmm(self.bias[nets][:, None], x, self.weight[nets])


class KiloNeRFField(Field):
    """A uniform grid of tiny NeRF MLPs; see the module docstring for conventions."""

    def __init__(self, aabb: Tensor, cells: int = 16, width: int = 32, layers: int = 2, pos_freqs: int = 10,
                 dir_freqs: int = 4, block: int = 64, seed: int = 0):
        super().__init__(aabb)
        if cells < 1 or width < 1 or layers < 1 or block < 1:
            raise ValueError(f"KiloNeRFField: cells, width, layers and block must be >= 1, got "
                             f"{cells}, {width}, {layers}, {block}")
        self.resolution = grid_resolution(self.aabb, cells)
        self.register_buffer("res", torch.tensor(self.resolution, dtype=torch.float32), persistent=False)
        self.n_nets = math.prod(self.resolution)
        self.block = int(block)
        self.pos_enc = FrequencyEncoding(3, pos_freqs, pi_factor=False)
        self.dir_enc = FrequencyEncoding(3, dir_freqs, pi_factor=False)
        g = torch.Generator().manual_seed(int(seed))
        relu, lin = math.sqrt(2.0), 1.0
        n = self.n_nets
        self.hidden = nn.ModuleList([MultiLinear(n, self.pos_enc.out_dim if i == 0 else width, width, relu, g)
                                     for i in range(layers)])
        self.sigma = MultiLinear(n, width, 1, relu, g)
        self.feature = MultiLinear(n, width, width, lin, g)
        self.view = MultiLinear(n, width + self.dir_enc.out_dim, width, relu, g)
        self.rgb = MultiLinear(n, width, 3, lin, g)

    # ------------------------------------------------------------------ routing
    def cell_of(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-point flat network index [P], local coordinates [P, 3] in [-1, 1] and inside mask [P]."""
        xn = self.normalize(x) * self.res
        inside = ((xn >= 0) & (xn < self.res)).all(-1)
        idx3 = xn.floor().clamp(min=torch.zeros_like(self.res), max=self.res - 1)
        local = (xn - idx3) * 2 - 1
        i = idx3.long()
        flat = (i[:, 0] * self.resolution[1] + i[:, 1]) * self.resolution[2] + i[:, 2]
        return flat, local, inside

    def _blocks(self, nets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sort points by network and cut into single-network blocks.

        Returns ``gather`` [n_blocks, block] (point index, or P for padding), ``block_net``
        [n_blocks] and ``valid`` [n_blocks, block].
        """
        p = nets.numel()
        order = torch.argsort(nets, stable=True)
        counts = torch.bincount(nets, minlength=self.n_nets)
        # block size: the mean points per active network rounded up to a power of two, capped at
        # ``block`` (bounds the padding when points spread thinly over many networks)
        mean = p / max(int((counts > 0).sum()), 1)
        b = int(min(self.block, max(8, 2 ** math.ceil(math.log2(max(mean, 1.0))))))
        blocks_per_net = (counts + b - 1) // b
        n_blocks = int(blocks_per_net.sum())
        block_net = torch.repeat_interleave(torch.arange(self.n_nets, device=nets.device), blocks_per_net,
                                            output_size=n_blocks)
        first_block = torch.cumsum(blocks_per_net, 0) - blocks_per_net
        first_point = torch.cumsum(counts, 0) - counts
        j = torch.arange(n_blocks, device=nets.device) - first_block[block_net]  # block number within its net
        pos = (j * b)[:, None] + torch.arange(b, device=nets.device)  # position within the net's segment
        valid = pos < counts[block_net][:, None]
        sorted_pos = (first_point[block_net][:, None] + pos).clamp_max(max(p - 1, 0))
        gather = torch.where(valid, order[sorted_pos], torch.full_like(sorted_pos, p))
        return gather, block_net, valid

    def _evaluate(self, x: Tensor, d: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Raw sigma [P, 1] and rgb logits [P, 3] (None if ``d`` is None); zeros outside the box."""
        flat_x = x.reshape(-1, 3)
        nets, local, inside = self.cell_of(flat_x)
        sel = torch.nonzero(inside)[:, 0]
        sigma = flat_x.new_zeros(flat_x.shape[0], 1)
        rgb = None if d is None else flat_x.new_zeros(flat_x.shape[0], 3)
        if sel.numel() == 0:  # keep the output in the graph so a loss on it can still backpropagate
            return sigma + 0 * self.sigma.bias.sum(), rgb
        gather, block_net, valid = self._blocks(nets[sel])
        pad = local.new_zeros(1, 3)
        h = self.pos_enc(torch.cat([local[sel], pad])[gather])  # encode after the gather: 3 floats moved, not 63
        for layer in self.hidden:
            h = torch.relu(layer(h, block_net))
        rows = sel[gather[valid]]
        sigma = sigma.index_put((rows,), self.sigma(h, block_net)[valid])
        if d is not None:
            dirs = self.dir_enc(torch.cat([d.reshape(-1, 3)[sel], pad])[gather])
            v = torch.relu(self.view(torch.cat([self.feature(h, block_net), dirs], -1), block_net))
            rgb = rgb.index_put((rows,), self.rgb(v, block_net)[valid])
        return sigma, rgb

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        sigma, _ = self._evaluate(x, None)
        return torch.relu(sigma).reshape(*x.shape[:-1], 1)

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        sigma, rgb = self._evaluate(x, d)
        lead = x.shape[:-1]
        return {"density": torch.relu(sigma).reshape(*lead, 1), "rgb": torch.sigmoid(rgb).reshape(*lead, 3)}

    def view_dependent_parameters(self) -> list[nn.Parameter]:
        """Weights and biases of the direction and colour layers (the fine-tuning L2 term's tensors)."""
        return [self.view.weight, self.view.bias, self.rgb.weight, self.rgb.bias]
