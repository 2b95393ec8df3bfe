"""Deformation field for dynamic Gaussians (GauFRe, arXiv:2312.11458).

An MLP of the canonical centre p (detached) and time t in [0, 1] predicts offsets of position,
log-scale and rotation, applied to the *dynamic* Gaussians only:

    mu_t = mu + d_mu,   log_s_t = log_s + d_s,   q_t = normalize(q x dq)   (Hamilton product, wxyz)

Encodings without pi, frequencies 2^k: [p, sin(2^k p), cos(2^k p)], k < ``pos_freqs`` (63-d for
10) and the same for t with ``time_freqs`` (13-d for 6, the synthetic setting). Trunk: ``depth``
- 1 ReLU layers of ``width``; after layer ``depth // 2`` the encodings are concatenated back in
(the reference's skip). Heads: Linear -> d_mu (3), d_s (3), dq (4). Every weight and bias starts
~ N(0, ``init_std``^2) (1e-3), so the deformation starts near zero.

``rotation="reference"`` uses dq as predicted (near zero at init: normalize(q x dq) is then an
arbitrary rotation shared by all Gaussians, harmless for isotropic initial Gaussians);
``rotation="identity"`` uses normalize([1, 0, 0, 0] + dq), a deviation from the reference that
starts at the canonical rotation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.encoders.frequency import FrequencyEncoding


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


class DeformationMLP(nn.Module):
    def __init__(self, pos_freqs: int = 10, time_freqs: int = 6, width: int = 256, depth: int = 6,
                 init_std: float = 1e-3, rotation: str = "reference"):
        super().__init__()
        if depth < 2:
            raise ValueError(f"DeformationMLP: depth must be >= 2, got {depth}")
        if rotation not in ("reference", "identity"):
            raise ValueError(f"DeformationMLP: rotation must be reference or identity, got {rotation!r}")
        self.rotation = rotation
        self.pos_enc = FrequencyEncoding(3, pos_freqs, pi_factor=False)
        self.time_enc = FrequencyEncoding(1, time_freqs, pi_factor=False)
        enc_dim = self.pos_enc.out_dim + self.time_enc.out_dim
        self.skip = depth // 2
        dims_in = [enc_dim] + [width + (enc_dim if i == self.skip else 0) for i in range(1, depth - 1)]
        self.trunk = nn.ModuleList(nn.Linear(d, width) for d in dims_in)
        self.heads = nn.Linear(width, 10)  # [d_mu (3), d_s (3), dq (4)]
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, init_std)

    def forward(self, means: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Offsets (d_mu [N, 3], d_s [N, 3], dq [N, 4]) at canonical ``means`` [N, 3] and time ``t``
        (a number, 0-dim, or [N, 1])."""
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"DeformationMLP: expected means [N, 3], got {tuple(means.shape)}")
        t = torch.as_tensor(t, dtype=means.dtype, device=means.device).reshape(-1, 1).expand(len(means), 1)
        enc = torch.cat([self.pos_enc(means.detach()), self.time_enc(t)], -1)
        h = enc
        for i, layer in enumerate(self.trunk):
            if i == self.skip:
                h = torch.cat([h, enc], -1)
            h = torch.relu(layer(h))
        out = self.heads(h)
        return out[:, :3], out[:, 3:6], out[:, 6:]

    def deform(self, means: Tensor, log_scales: Tensor, quats: Tensor, t: Tensor | float,
               dynamic: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Means, log-scales and unit quaternions at time ``t`` (a number); Gaussians with
        ``dynamic`` [N] False keep their canonical values (the static cloud). The MLP runs on
        the dynamic Gaussians only."""
        q = torch.nn.functional.normalize(quats, dim=-1)
        idx = torch.nonzero(dynamic).squeeze(1)
        if len(idx) == 0:
            return means, log_scales, q
        d_mu, d_s, dq = self(means[idx], t)
        if self.rotation == "identity":
            dq = dq + dq.new_tensor([1.0, 0.0, 0.0, 0.0])
        dq = torch.nn.functional.normalize(dq, dim=-1)
        q_t = torch.nn.functional.normalize(quat_multiply(q[idx], dq), dim=-1)
        return means.index_add(0, idx, d_mu), log_scales.index_add(0, idx, d_s), q.index_copy(0, idx, q_t)
