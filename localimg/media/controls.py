"""Control images and their settings → ControlNet units, the same way for every front end.

A front end gathers what the user gave, each setting as a list (the CLI's repeated options, an
HTTP field that is one value or a list), and `control_units` pairs them with the control images:

- no value: every unit leaves the setting unset (the model's YAML or the default decides);
- one value: it applies to every control image;
- one value per control image: matched in order;
- any other count is refused, naming the setting: more ControlNets than control images, or a
  count that is neither one nor one per image, would leave the pairing to a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from localimg.errors import InvalidRequest
from localimg.requests import MAX_CONTROL_UNITS, ControlUnit

if TYPE_CHECKING:
    from PIL.Image import Image

T = TypeVar("T")


@dataclass(frozen=True)
class ControlSettings:
    """A request's control settings, each a list (empty: not given), and the names the front
    end calls them by, for its error messages (`--control-net` or `control_net`)."""

    nets: Sequence[str] = ()
    strengths: Sequence[float] = ()
    starts: Sequence[float] = ()
    ends: Sequence[float] = ()
    preprocess: Sequence[str] = ()
    names: dict[str, str] = field(default_factory=dict)

    def name(self, key: str) -> str:
        return self.names.get(key, key)

    @property
    def given(self) -> list[str]:
        """The settings given, by their front-end names."""
        pairs = (
            ("control_net", self.nets),
            ("control_strength", self.strengths),
            ("control_start", self.starts),
            ("control_end", self.ends),
            ("control_preprocess", self.preprocess),
        )
        return [self.name(key) for key, values in pairs if values]


def as_list(value: T | Sequence[T] | None) -> list[T]:
    """An HTTP field that is one value or a list → a list (None: empty)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]  # type: ignore[list-item]


def _per_unit(values: Sequence[T], count: int, param: str, image_param: str) -> list[T | None]:
    """One value per unit: none given, one for all, or exactly one per control image."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) == count:
        return list(values)
    more = "more than" if len(values) > count else "fewer than"
    raise InvalidRequest(
        f"{len(values)} values of {param} for {count} {image_param}; give one for all of "
        f"them or one per {image_param} ({more} the control images now)",
        param=param,
    )


def control_units(
    images: Sequence[Image], settings: ControlSettings, image_param: str = "control_image"
) -> tuple[ControlUnit, ...]:
    """The ControlNet units of a request: each control image with its settings (see above)."""
    if not images:
        if settings.given:
            raise InvalidRequest(
                f"{', '.join(settings.given)} given without {image_param}: a ControlNet needs "
                "a control image",
                param=image_param,
            )
        return ()
    count = len(images)
    if count > MAX_CONTROL_UNITS:
        raise InvalidRequest(
            f"{count} control images; at most {MAX_CONTROL_UNITS} are accepted", param=image_param
        )
    if len(settings.nets) > count:
        raise InvalidRequest(
            f"{len(settings.nets)} ControlNets ({settings.name('control_net')}) for {count} "
            f"{image_param}: each ControlNet needs its control image",
            param=settings.name("control_net"),
        )

    def each(values: Sequence[T], key: str) -> list[T | None]:
        return _per_unit(values, count, settings.name(key), image_param)

    nets = each(settings.nets, "control_net")
    strengths = each(settings.strengths, "control_strength")
    starts = each(settings.starts, "control_start")
    ends = each(settings.ends, "control_end")
    # The engine checks the names (before anything loads), naming the preprocessors it has.
    preprocess = [
        name.strip() if name is not None else "none"
        for name in each(settings.preprocess, "control_preprocess")
    ]
    from localimg.media.conditioning import as_init

    units = []
    for index, image in enumerate(images):
        net, start, end = nets[index], starts[index], ends[index]
        try:
            unit = ControlUnit(
                image=as_init(image),  # EXIF orientation, alpha over white
                net=net.strip() if net is not None else None,
                strength=strengths[index],
                start=start if start is not None else 0.0,
                end=end if end is not None else 1.0,
                preprocess=preprocess[index],
            )
        except InvalidRequest as exc:
            raise _renamed(exc, settings) from None
        units.append(unit)
    return tuple(units)


def _renamed(exc: InvalidRequest, settings: ControlSettings) -> InvalidRequest:
    """A ControlUnit refusal in the front end's names (`--control-strength`)."""
    message = exc.message
    for key in ("control_strength", "control_start", "control_end", "control_net"):
        message = message.replace(key, settings.name(key))
    return InvalidRequest(message, param=settings.name(exc.param or "control_image"))
