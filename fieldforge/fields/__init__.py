"""Fields: coordinate networks behind the small :class:`Field` contract."""

from fieldforge.fields.base import Field

__all__ = ["Field"]
