"""The shape family a sweep's runs belong to, read back off its results table, and whether a recommended
shape is a member: a law fitted on one family says nothing sure about shapes of another (deeper and
narrower, or one layer where the sweep had several)."""

from __future__ import annotations

# A recommended shape whose d_model / n_layers lies outside the swept ones by more than this factor is
# reported as outside the family the law was fitted on (and the ladder looks for a shape within it first).
ASPECT_SLACK = 1.25


def swept_family(table) -> dict | None:
    """The shape family of the table's runs (columns d_model and n_layers, as a sweep writes them): the median
    aspect ratio d_model / n_layers the ladder aims at, its range, and the depths and widths swept. None
    for a table without shapes."""
    runs = table.runs
    if not {"d_model", "n_layers"} <= set(runs.columns):
        return None
    shapes = runs[["d_model", "n_layers"]].dropna()
    if shapes.empty:
        return None
    aspect = shapes["d_model"] / shapes["n_layers"]
    return {"aspect_ratio": float(aspect.median()), "aspect_range": [float(aspect.min()), float(aspect.max())],
            "min_layers": int(shapes["n_layers"].min()), "max_layers": int(shapes["n_layers"].max()),
            "min_d_model": int(shapes["d_model"].min()), "max_d_model": int(shapes["d_model"].max())}


def family_check(family: dict | None, shape: dict | None) -> tuple[dict | None, list[str]]:
    """Where the recommended shape sits against the swept family: `inside` (its aspect ratio within the swept
    range, with ASPECT_SLACK, and at least as deep as the shallowest run) and how far past the swept depth and
    width it goes. Returns (the check, warnings)."""
    if family is None or shape is None:
        return None, []
    aspect = shape["d_model"] / shape["n_layers"]
    low, high = family["aspect_range"]
    inside = low / ASPECT_SLACK <= aspect <= high * ASPECT_SLACK and shape["n_layers"] >= family["min_layers"]
    check = {"swept": family, "aspect_ratio": aspect, "inside": bool(inside),
             "depth_beyond_sweep": shape["n_layers"] / family["max_layers"],
             "width_beyond_sweep": shape["d_model"] / family["max_d_model"]}
    warnings = []
    if not inside:
        warnings.append(
            f"recommend: the shape (d_model {shape['d_model']}, {shape['n_layers']} layers, aspect ratio {aspect:.3g}) "
            f"is outside the swept family (aspect ratios {low:.3g} to {high:.3g}, {family['min_layers']} to "
            f"{family['max_layers']} layers): the law was fitted on other shapes")
    return check, warnings
