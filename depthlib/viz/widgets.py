"""Interactive explorers for the notebooks (ipywidgets): sliders that re-render a picture.

Each returns ``VBox([controls, caption, picture])``, drawn once when built and again whenever a
control changes, in the kernel's Python: it builds without a display, and a test can move a
slider and compare pictures. Pictures are ``matplotlib.figure.Figure`` objects, not pyplot ones,
so an inline backend never shows them twice. GitHub's viewer and nbval do not run widgets: every
notebook keeps a static figure with the same content beside its explorer. A new explorer is a
dict of controls plus ``draw(**values) -> (Figure, caption)``, wired by :func:`explorer`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from depthlib.data.rooms import render_room
from depthlib.data.rooms.generate import sample_scene
from depthlib.errors import ConfigError
from depthlib.spark.model import kept_patch_count, make_patch_mask
from depthlib.viz import bare, hwc
from depthlib.viz.data import depth_vmax, show_depth
from depthlib.viz.failure_modes import plot_predictions
from depthlib.viz.masking import show_masked

__all__ = ["KNOB_SLIDERS", "explorer", "knob_explorer", "mask_explorer", "prediction_explorer"]

# Slider range and step per room knob: the default draws' range plus some tail (see RoomKnobs).
KNOB_SLIDERS: dict[str, tuple[float, float, float]] = {
    "light": (0.1, 1.5, 0.05),
    "contrast": (0.0, 1.0, 0.05),
    "object_albedo": (0.1, 1.0, 0.05),
    "size_scale": (0.5, 1.5, 0.05),
    "n_objects": (0, 20, 1),
    "noise": (0.0, 0.05, 0.002),
    "camera_height": (0.8, 2.0, 0.05),
    "pitch_deg": (-10.0, 35.0, 1.0),
    "roll_deg": (-10.0, 10.0, 1.0),
}
DEFAULT_KNOBS = ("light", "contrast", "object_albedo", "size_scale", "camera_height", "pitch_deg")


def _slider(kind: str, **kw):
    """An ipywidgets slider that draws on release (a room takes a tenth of a second to render)."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    return getattr(widgets, kind)(continuous_update=False, style=style, **kw)


def explorer(controls: Mapping[str, object], draw: Callable[..., tuple[Figure, str]]):
    """Wire ``controls`` (name → ipywidgets control) to ``draw(**values) -> (figure, caption)``.

    Returns ``VBox([HBox(controls), HTML(caption), Image(picture)])``, drawn once already.
    """
    import ipywidgets as widgets

    picture = widgets.Image(format="jpeg")  # not PNG: the executed notebook stores the last one
    caption = widgets.HTML()

    def redraw(_change=None) -> None:
        fig, caption.value = draw(**{name: control.value for name, control in controls.items()})
        buffer = io.BytesIO()
        fig.savefig(buffer, format="jpeg", dpi=80, bbox_inches="tight")
        picture.value = buffer.getvalue()

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    return widgets.VBox([row, caption, picture])


def knob_explorer(
    seed: int = 0,
    index: int = 0,
    height: int = 240,
    width: int = 320,
    knobs: Sequence[str] = DEFAULT_KNOBS,
):
    """Sliders for ``knobs`` re-rendering room ``index`` of the rooms set ``seed``: RGB | depth.

    The sliders start at the room's own draws, so the first picture is the room as rendered into
    the file. The caption gives the values the room used (a camera is kept 0.3 m under the
    ceiling) and what the image shows; the depth panel says whether the depth map still equals
    the unforced room's, which is how light, contrast and object_albedo show they move no geometry.
    """
    unknown = [k for k in knobs if k not in KNOB_SLIDERS]
    if unknown or not knobs:
        raise ConfigError(
            f"knob_explorer takes knobs from {', '.join(KNOB_SLIDERS)}; got {unknown}."
        )
    own = sample_scene(seed, index).knobs
    unforced = render_room(seed, index, height, width)["depth"]
    vmax = depth_vmax([unforced])
    controls = {}
    for name in knobs:
        lo, hi, step = KNOB_SLIDERS[name]
        value = min(max(own[name], lo), hi)
        if name == "n_objects":
            kind, extra = "IntSlider", {}
        else:
            kind, extra = "FloatSlider", {"readout_format": ".3f" if step < 0.01 else ".2f"}
        kw = {"value": value, "min": lo, "max": hi, "step": step, "description": name}
        controls[name] = _slider(kind, **kw, **extra)

    def draw(**values) -> tuple[Figure, str]:
        room = render_room(seed, index, height, width, **values)
        fig = Figure(figsize=(8.6, 4.3 * height / width + 0.5), layout="constrained")
        rgb_ax, depth_ax = fig.subplots(1, 2)
        rgb_ax.imshow(room["rgb"])
        rgb_ax.set_title("RGB", fontsize=10)
        image = show_depth(depth_ax, room["depth"], vmax)
        same = np.array_equal(room["depth"], unforced)
        depth_ax.set_title(
            "depth: " + ("identical to the unforced room" if same else "changed"), fontsize=10
        )
        for ax in (rgb_ax, depth_ax):
            bare(ax)
        fig.colorbar(image, ax=depth_ax, shrink=0.85).set_label("m")
        k = room["knobs"]
        shown = {name: int(k[name]) if name == "n_objects" else f"{k[name]:.3g}" for name in knobs}
        caption = (
            f"room {index} of seed {seed}: {', '.join(f'{n} {v}' for n, v in shown.items())}"
            f"<br>the image shows: mean luminance {k['mean_luminance']:.2f}, "
            f"{k['objects_visible']} objects visible, raw-depth holes "
            f"{100 * k['hole_fraction']:.1f}% of pixels"
        )
        return fig, caption

    return explorer(controls, draw)


def mask_explorer(
    image: torch.Tensor,
    patches: Sequence[int] = (8, 16, 32),
    *,
    patch: int | None = None,
    ratio: float = 0.6,
    seed: int = 0,
):
    """Sliders for mask ratio, patch size and seed over one (3, H, W) image in [0, 1]: the image
    with its masked patches dark, and the kept count SparK's rule fixes, round(n·(1−ratio)).

    ``patches`` must divide the image's height and width; ``patch`` (default: the largest) is the
    starting patch size.
    """
    height, width = image.shape[-2:]
    patches = sorted(int(p) for p in patches)
    bad = [p for p in patches if p < 1 or height % p or width % p]
    if bad or not patches:
        raise ConfigError(
            f"patch sizes {bad or patches} do not divide the {height}x{width} image; "
            "pick divisors of both sides (e.g. 16 and 32 for 224x320)."
        )
    start = patches[-1] if patch is None else int(patch)
    if start not in patches:
        raise ConfigError(f"patch {start} is not one of the patch sizes {patches}.")
    controls = {
        "ratio": _slider(
            "FloatSlider", value=ratio, min=0.05, max=0.95, step=0.05, description="mask ratio"
        ),
        "patch": _slider("SelectionSlider", options=patches, value=start, description="patch (px)"),
        "seed": _slider("IntSlider", value=seed, min=0, max=20, description="seed"),
    }

    def draw(ratio: float, patch: int, seed: int) -> tuple[Figure, str]:
        ratio = round(float(ratio), 4)  # slider floats such as 0.6000000000000001
        fig = Figure(figsize=(6.0, 6.0 * height / width + 0.4), layout="constrained")
        ax = fig.subplots()
        gh, gw = height // patch, width // patch
        n = gh * gw
        try:
            keep = kept_patch_count(n, ratio)
        except ConfigError as err:  # so high a ratio that no patch is left
            ax.imshow(hwc(image.reshape(3, height, width)))
            bare(ax)
            return fig, str(err)
        mask = make_patch_mask(1, height, width, patch, ratio, seed=seed)
        kept = show_masked(ax, image, mask, patch)
        ax.set_title(f"patch {patch} · mask ratio {ratio:g} · seed {seed}", fontsize=10)
        caption = (
            f"{gh}×{gw} = {n} patches of {patch}×{patch} px; SparK's rule keeps "
            f"round({n} × {1 - ratio:.2f}) = {keep}; this mask keeps <b>{kept}</b> "
            f"(the other {n - kept} are masked)"
        )
        return fig, caption

    return explorer(controls, draw)


def prediction_explorer(row_for: Callable[[int], Mapping], n_images: int, index: int = 0):
    """A slider over the test images in the Figures 5-6 layout (``plot_predictions``: the models
    must include the mean-depth baseline). ``row_for(i)`` returns image ``i``'s row in the format
    of ``depthlib.course.failure_modes.prediction_rows``; the caption ranks the models on it."""
    n, index = int(n_images), int(index)
    if n < 1 or not 0 <= index < n:
        raise ConfigError(f"need 0 <= index < n_images, got index {index} of {n} images.")
    slider = _slider("IntSlider", value=index, min=0, max=n - 1, description="test image")

    def draw(image: int) -> tuple[Figure, str]:
        row = row_for(int(image))
        fig = Figure()
        plot_predictions([row], figure=fig)
        ranked = sorted(row["predictions"].items(), key=lambda kv: kv[1][1])
        caption = f"test image {row['index']}, AbsRel: " + ", ".join(
            f"{name} {abs_rel:.3f}" for name, (_, abs_rel) in ranked
        )
        return fig, caption

    return explorer({"image": slider}, draw)
