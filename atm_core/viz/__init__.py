"""What the ATM blocks compute, as figures: cues, similarity volumes and residuals over the frames.

Three modules, each a function of tensors (no configuration, no files read):

    capture   hooks that record every ATMBlock's input, cue and branch in a forward pass
    maps      captured tensors -> numpy maps (cue norms, displacement fields, similarity patches)
    figures   maps and frames -> matplotlib Figures

    with capture_atm(model) as captures:      # or: captures = run_capture(model, clip)
        model(clip[None])
    fig = plot_block(denormalize(clip, mean, std), captures[0])
    image = figure_to_rgb(fig)                # (H, W, 3) uint8

Loading a recipe's model and one of its clips is the workbook's job
(``workbook.load_clip``, ``workbook.load_model``, ``workbook.clip_stats``).

Per operation:
  * ``add`` / ``sub`` / ``div``: the cue between frame ``t`` and its neighbour ``t + o`` is a
    ``D``-channel map; its L2 norm over channels is drawn as a heat map on frame ``t``, one row
    per offset ``o``.
  * ``mul``: the cue is a similarity volume, one ``W x W`` patch of cosine similarities per
    position. Its arg-max is the displacement at which the neighbour frame looks most like the
    anchor (where the content went), drawn as colour (hue = direction, saturation = length)
    with the peak similarity as brightness, plus arrows; :func:`plot_similarity_patches` shows
    the raw patch at a few points on the moving content (:func:`moving_points`), window cells
    outside the map as no data.
  * every block: the residual branch it adds back to the features (:func:`plot_residuals`, one
    colour scale per block).
Offset 0 (a frame paired with itself) carries nothing temporal and is left out of the cue figures.

Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so they render
in notebooks, save with :func:`save_figure` and rasterise with :func:`figure_to_rgb`.
"""
from .capture import BlockCapture, atm_blocks, capture_atm, plain_cue, run_capture
from .figures import (
    feature_map_figures,
    figure_to_rgb,
    op_heat,
    op_title,
    plot_block,
    plot_cue,
    plot_displacement,
    plot_frames,
    plot_residuals,
    plot_similarity_patches,
    save_figure,
    save_figures,
    shown_offsets,
)
from .maps import (cue_norms, denormalize, displacement_colours, displacement_field, motion_gain,
                   moving_points, residual_norms, similarity_patch)

__all__ = [
    "BlockCapture", "atm_blocks", "capture_atm", "cue_norms", "denormalize", "displacement_colours",
    "displacement_field", "feature_map_figures", "figure_to_rgb", "motion_gain", "moving_points",
    "op_heat", "op_title", "plain_cue", "plot_block", "plot_cue", "plot_displacement", "plot_frames",
    "plot_residuals", "plot_similarity_patches", "residual_norms", "run_capture", "save_figure",
    "save_figures", "shown_offsets", "similarity_patch",
]
