"""Demo tests keep their embedded servers outside pytest's temporary tree."""

from embedded_home import xdg_data_home

__all__ = ["xdg_data_home"]
