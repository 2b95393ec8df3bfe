"""Coordinate and direction encoders (each module cites its paper).

Every encoder is an ``nn.Module`` with ``in_dim``, ``out_dim`` and ``input_range`` (the per-axis
coordinate range it expects); ``forward(x[..., in_dim]) -> [..., out_dim]``. Sinusoidal encoders
use [-1, 1]; grid and shifted-basis encoders use [0, 1]. :class:`Siren` and :func:`rbf_field`
are whole signal models. FreSh lives in :mod:`fieldforge.encoders.fresh`.
"""

from fieldforge.encoders.base import Encoding
from fieldforge.encoders.frequency import FourierFeatures, FrequencyEncoding
from fieldforge.encoders.hashgrid import HashGrid
from fieldforge.encoders.rbf import GaussianRBFLayer, RBFGridEncoding, rbf_field
from fieldforge.encoders.sape import SAPE
from fieldforge.encoders.sh import SHEncoding, sh_basis
from fieldforge.encoders.shifted import ShiftedBasisEncoding, distance_preservation, stable_rank
from fieldforge.encoders.siren import Siren

__all__ = ["Encoding", "FourierFeatures", "FrequencyEncoding", "GaussianRBFLayer", "HashGrid", "RBFGridEncoding",
           "SAPE", "SHEncoding", "ShiftedBasisEncoding", "Siren", "distance_preservation", "rbf_field", "sh_basis",
           "stable_rank"]
