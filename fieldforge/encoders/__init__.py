"""Coordinate and direction encoders (spec: /work/shared/specs/encodings.md, rbf_fields.md).

Every encoder is an ``nn.Module`` with ``in_dim``, ``out_dim`` and ``input_range``;
``forward(x[..., in_dim]) -> [..., out_dim]``.
"""

from fieldforge.encoders.base import Encoding
from fieldforge.encoders.frequency import FourierFeatures, FrequencyEncoding
from fieldforge.encoders.hashgrid import HashGrid
from fieldforge.encoders.sh import SHEncoding, sh_basis

__all__ = ["Encoding", "FourierFeatures", "FrequencyEncoding", "HashGrid", "SHEncoding", "sh_basis"]
