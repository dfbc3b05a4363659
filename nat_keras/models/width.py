"""Width multipliers for the reference networks.

`width` scales the filters of every convolution of a reference network (the
`alpha` of MobileNet's paper and `keras.applications.MobileNetV2`), so the same
topology comes in sizes that fit a CPU: half the width is about a quarter of
the MACs. Channel counts are rounded as MobileNetV2 rounds them: to a
multiple of 8, at least 8, and never below 90% of the exact product.

Example:
  >>> scale_filters(64, 0.25), scale_filters(24, 0.5), scale_filters(16, 1.0)
  (16, 16, 16)
"""

from __future__ import annotations

from nat_keras.errors import ConfigError

DIVISOR = 8


def check_width(width: float, model: str) -> float:
    """`width` as a float, or a ConfigError naming `model` if it is not positive.

    Example:
      >>> check_width(0.5, "vgg16")
      0.5
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(
            f"{model}: width must be a positive number (1.0 is the published network); got {width!r}."
        )
    return float(width)


def scale_filters(filters: int, width: float) -> int:
    """`filters * width`, rounded to a multiple of 8 (at least 8, at least 90% of the product).

    Example:
      >>> scale_filters(512, 0.25)
      128
    """
    if width == 1.0:
        return filters
    exact = filters * width
    rounded = max(DIVISOR, int(exact + DIVISOR / 2) // DIVISOR * DIVISOR)
    if rounded < 0.9 * exact:  # rounding down must not lose more than 10%
        rounded += DIVISOR
    return rounded
