"""Plot every box loss and its gradient magnitude against IoU: `python scripts/plot_losses.py [--out docs/images]`
(default: logs/plot_losses; `--out docs/images` redraws the figures of docs/losses.md).

Two scenarios against a 4 x 4 target box (grid units):
  slide:  a 4 x 4 prediction sliding sideways, from on the target to touching it (IoU 1 -> 0);
  shrink: a concentric square prediction shrinking inside the target (IoU 1 -> 0).
The gradient magnitude is || dL / d(x1, y1, x2, y2) ||_2 of the predicted box. One PNG per family:
iou_losses.png (losses on decoded boxes), recent_losses.png (the losses after 2022 against CIoU; MPDIoU in a
20 x 20 grid-unit image, 640 px at stride 32; NWD with C = 1.6 grid units) and regression_losses.png (coordinate
losses, here on xyxy).
"""

from __future__ import annotations

import argparse
import functools
import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from detector.losses import gaussian as G  # noqa: E402
from detector.losses import iou as L  # noqa: E402
from detector.losses import regression as R  # noqa: E402

SIZE = 4.0
STEPS = 400


def _wiou_v3() -> torch.nn.Module:
    module = L.WIoULoss(version=3).eval()
    module.iou_loss_mean.fill_(0.5)  # a running mean of L_IoU = 0.5 (no update in eval mode)
    return module


IOU_FAMILY: dict[str, Callable[[], torch.nn.Module]] = {
    "IoU (1 - IoU)": L.IoULoss,
    "log IoU (-ln IoU)": lambda: L.IoULoss(mode="log"),
    "GIoU": L.GIoULoss,
    "DIoU": L.DIoULoss,
    "CIoU": L.CIoULoss,
    "EIoU": L.EIoULoss,
    "Focal-EIoU (g 0.5)": L.FocalEIoULoss,
    "alpha-IoU (a 3)": lambda: L.AlphaIoULoss(3.0, "iou"),
    "alpha-CIoU (a 3)": lambda: L.AlphaIoULoss(3.0, "ciou"),
    "rising-gradient IoU (b 0.95)": L.RisingGradientIoULoss,
    "SIoU (theta 4)": L.SIoULoss,
    "WIoU v1": lambda: L.WIoULoss(version=1),
    "WIoU v3 (mean 0.5)": _wiou_v3,
}
RECENT_FAMILY: dict[str, Callable[[], torch.nn.Module]] = {
    "CIoU": L.CIoULoss,
    "MPDIoU (image 20 x 20)": lambda: functools.partial(L.MPDIoULoss(), image_size=torch.tensor([20.0, 20.0])),
    "Shape-IoU (scale 0)": L.ShapeIoULoss,
    "Inner-CIoU (ratio 0.7)": lambda: L.InnerIoULoss(L.CIoULoss(), 0.7),
    "Inner-CIoU (ratio 1.3)": lambda: L.InnerIoULoss(L.CIoULoss(), 1.3),
    "Focaler-CIoU (d 0, u 0.95)": lambda: L.FocalerIoULoss(L.CIoULoss()),
    "Focaler-CIoU (d 0.2, u 0.8)": lambda: L.FocalerIoULoss(L.CIoULoss(), 0.2, 0.8),
    "NWD (C 1.6)": lambda: G.NWDLoss(1.6),
    "ProbIoU (l1)": G.ProbIoULoss,
}
REGRESSION_FAMILY: dict[str, Callable[[], torch.nn.Module]] = {
    "L1": R.L1Loss,
    "L2": R.L2Loss,
    "smooth L1 (b 1)": R.SmoothL1Loss,
    "smooth L1 (b 1/9)": lambda: R.SmoothL1Loss(1 / 9),
    "balanced L1": R.BalancedL1Loss,
}


def scenarios() -> dict[str, torch.Tensor]:
    """(STEPS, 4) predicted boxes for each scenario; the target is [0, 0, SIZE, SIZE]."""
    shift = torch.linspace(0, SIZE, STEPS)
    slide = torch.stack([shift, torch.zeros(STEPS), shift + SIZE, torch.full((STEPS,), SIZE)], -1)
    half = torch.linspace(SIZE / 2, 0.02, STEPS)
    centre = SIZE / 2
    shrink = torch.stack([centre - half, centre - half, centre + half, centre + half], -1)
    return {"sliding away (same size)": slide, "shrinking inside (concentric)": shrink}


def curves(make: Callable[[], torch.nn.Module], pred: torch.Tensor, target: torch.Tensor):
    pred = pred.clone().requires_grad_()
    loss = make()(pred, target)
    loss.sum().backward()
    return loss.detach(), pred.grad.norm(dim=-1)


def plot_family(family: dict[str, Callable[[], torch.nn.Module]], title: str, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    colours = plt.get_cmap("tab10").colors
    for column, (scenario, pred) in enumerate(scenarios().items()):
        target = torch.tensor([[0.0, 0.0, SIZE, SIZE]]).expand_as(pred)
        iou_values = L.iou(pred, target)
        for index, (name, make) in enumerate(family.items()):
            loss, grad = curves(make, pred, target)
            style = dict(color=colours[index % 10], lw=1.5, ls="-" if index < 10 else "--")
            style["label"] = name if column == 0 else None
            axes[0, column].plot(iou_values, loss, **style)
            axes[1, column].plot(iou_values, grad, **{**style, "label": None})
        axes[0, column].set_title(f"{scenario}")
        axes[1, column].set_xlabel("IoU with the target")
    axes[0, 0].set_ylabel("loss")
    axes[1, 0].set_ylabel("|| dL / d box ||")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
    if family is not REGRESSION_FAMILY:
        for ax in axes[0]:
            ax.set_ylim(0, 2.5)
        for ax in axes[1]:
            ax.set_yscale("log")
            ax.set_ylim(1e-3, 20)
    else:
        for ax in axes[1]:
            ax.set_yscale("log")
    fig.legend(loc="center right", fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    # a 256-colour palette keeps the PNG around 100 KB without visible loss for line plots
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "logs" / "plot_losses",
                        help="output folder (default: logs/plot_losses; docs/images holds the documented figures)")
    args = parser.parse_args()
    plot_family(IOU_FAMILY, "IoU-family box losses, 4 x 4 target (grid units)", args.out / "iou_losses.png")
    plot_family(RECENT_FAMILY, "Box losses after 2022 against CIoU, 4 x 4 target (grid units)",
                args.out / "recent_losses.png")
    plot_family(
        REGRESSION_FAMILY, "Coordinate regression losses on xyxy, 4 x 4 target (grid units)",
        args.out / "regression_losses.png",
    )


if __name__ == "__main__":
    main()
