"""PoseLSTM (Walch et al., ICCV 2017): GoogLeNet trunk, fc 2048 reshaped to a 32×64 grid read by four LSTMs
(up, down, left, right) → position / quaternion. The fc stack is fixed at two stages: fc-1 = the 2048 fc,
fc-2 = the LSTM output."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..base import register_backbone
from ..cnn import CnnBackbone
from ..config import config_error, require_int


def lstm_grid_for(fc_dim: int) -> list[int]:
    """PoseLSTM's grid for an fc of ``fc_dim``: 32×64 for 2048, else the most square h×w with h ≤ w."""
    h = int(math.isqrt(fc_dim))
    while fc_dim % h:
        h -= 1
    return [h, fc_dim // h]


@register_backbone
class PoseLstm(CnnBackbone):
    """``backbone: poselstm``; ``lstm_hidden`` (128), ``lstm_grid`` (auto from ``fc_dim``)."""

    name: ClassVar[str] = "poselstm"
    order: ClassVar[int] = 2
    defaults: ClassVar[dict[str, Any]] = {**CnnBackbone.defaults, "arch": "googlenet", "lstm_hidden": 128,
                                          "lstm_grid": None}

    @classmethod
    def resolve_fc(cls, cfg: dict[str, Any], need_fc: int) -> None:
        """``num_fc`` is fixed at 2; fills ``lstm_grid`` and checks h·w = ``fc_dim``."""
        if cfg["num_fc"] not in (None, 2):
            raise config_error("num_fc", f"is fixed at 2 for poselstm (fc, then the LSTMs), got {cfg['num_fc']!r}")
        cfg["num_fc"] = 2
        require_int(cfg, "lstm_hidden", 1)
        if cfg["lstm_grid"] is None:
            cfg["lstm_grid"] = lstm_grid_for(cfg["fc_dim"])
        g = cfg["lstm_grid"]
        if (not isinstance(g, (list, tuple)) or len(g) != 2 or not all(isinstance(x, int) and x > 0 for x in g)
                or g[0] * g[1] != cfg["fc_dim"]):
            raise config_error("lstm_grid", f"must be [h, w] with h*w == fc_dim ({cfg['fc_dim']}), got {g!r}")
        cfg["lstm_grid"] = list(g)

    @classmethod
    def lstm(cls, cfg: dict[str, Any]) -> tuple[list[int], int] | None:
        return cfg["lstm_grid"], cfg["lstm_hidden"]
