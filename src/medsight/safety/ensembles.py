"""Deep ensembles: the same input through several independently trained members (e.g. cross-validation folds).

Why: disagreement between members trained from different initialisations / data folds is a stronger
uncertainty signal than MC dropout (Lakshminarayanan et al., 2017), and the fold models exist anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from medsight.errors import ConfigError


@torch.no_grad()
def ensemble_predict(models: Sequence[nn.Module] | Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
                     transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Stack of member outputs, shape ``(n_members, *output.shape)``; ``nn.Module`` members run in eval mode.

    Members may also be plain callables (e.g. a sliding-window predictor for one fold), so segmentation
    ensembles reuse this function.
    """
    if len(models) == 0:
        raise ConfigError("an ensemble needs at least one member model")
    outs = []
    for m in models:
        if isinstance(m, nn.Module):
            was = m.training
            m.eval()
            y = m(x)
            m.train(was)
        else:
            y = m(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        outs.append(transform(y) if transform is not None else y)
    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) != 1:
        raise ConfigError(f"ensemble members disagree on the output shape: {sorted(shapes)}")
    return torch.stack(outs)
