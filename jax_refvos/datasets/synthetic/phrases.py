"""The expression grammar: noun phrases, count words and the paraphrases of every predicate.

All texts are lowercase without a final period. A noun phrase is built from a `Noun`, a partial
description (size, colour, shape); the word for a missing shape is "shape" or "object":
``Noun(size="small", colour="red", shape="triangle")`` -> "small red triangle",
``Noun(colour="red")`` -> "red shape" / "red object", ``Noun()`` -> "shape" / "object".
"""

import dataclasses

import numpy as np

from jax_refvos.datasets.synthetic import appearance

COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

# Per-object motion predicates: (singular, plural) suffixes of "the {noun} ...".
MOTION_SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "left": (
        ("moving left", "moving left"),
        ("going to the left", "going to the left"),
        ("that moves left", "that move left"),
    ),
    "right": (
        ("moving right", "moving right"),
        ("going to the right", "going to the right"),
        ("that moves right", "that move right"),
    ),
    "up": (
        ("moving up", "moving up"),
        ("going upward", "going upward"),
        ("that moves up", "that move up"),
    ),
    "down": (
        ("moving down", "moving down"),
        ("going downward", "going downward"),
        ("that moves down", "that move down"),
    ),
    "stop": (
        ("that stops", "that stop"),
        ("that comes to a stop", "that come to a stop"),
        ("that stops moving", "that stop moving"),
    ),
    "start": (
        ("that starts moving", "that start moving"),
        ("that begins to move", "that begin to move"),
        ("that is still at first and then moves", "that are still at first and then move"),
    ),
    "still": (
        ("that does not move", "that do not move"),
        ("that stays still", "that stay still"),
        ("that is not moving", "that are not moving"),
    ),
    "turn": (
        ("that turns around", "that turn around"),
        ("that reverses direction", "that reverse direction"),
        ("that goes back the way it came", "that go back the way they came"),
    ),
    "enter": (
        ("that enters the frame", "that enter the frame"),
        ("that moves into the frame", "that move into the frame"),
        ("coming into view from the edge", "coming into view from the edge"),
    ),
    "leave": (
        ("that leaves the frame", "that leave the frame"),
        ("that exits the frame", "that exit the frame"),
        ("that moves out of view", "that move out of view"),
    ),
}

# Set-level (superlative / temporal) predicates, singular only.
SUPERLATIVE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "fastest": ("the fastest {np}", "the {np} moving the fastest", "the {np} that moves fastest"),
    "slowest": (
        "the slowest moving {np}",
        "the {np} moving the slowest",
        "the {np} that moves most slowly",
    ),
    "last": (
        "the {np} that appears last",
        "the last {np} to appear",
        "the {np} that shows up last",
    ),
}

RELATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "above": (
        "the {a} above the {b}",
        "the {a} that is above the {b}",
        "the {a} located above the {b}",
    ),
    "below": (
        "the {a} below the {b}",
        "the {a} that is below the {b}",
        "the {a} underneath the {b}",
    ),
    "left_of": (
        "the {a} to the left of the {b}",
        "the {a} on the left of the {b}",
        "the {a} that is left of the {b}",
    ),
    "right_of": (
        "the {a} to the right of the {b}",
        "the {a} on the right of the {b}",
        "the {a} that is right of the {b}",
    ),
}

APPEARANCE_TEMPLATES = ("the {np}", "the {np} in the video", "the {np} in the scene")
PLURAL_APPEARANCE_TEMPLATES = ("the {count} {np}", "the {count} {np} in the video")


@dataclasses.dataclass(frozen=True, order=True)
class Noun:
    """A partial static description; None = not mentioned."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None

    @property
    def num_attributes(self) -> int:
        return sum(v is not None for v in (self.size, self.colour, self.shape))

    def matches(self, shape: str, colour: str, size: str) -> bool:
        return (
            (self.shape is None or self.shape == shape)
            and (self.colour is None or self.colour == colour)
            and (self.size is None or self.size == size)
        )


def noun_phrase(noun: Noun, rng: np.random.Generator, *, plural: bool = False) -> str:
    """E.g. "small red triangle", "red shapes", "object"."""
    head = noun.shape or ("shape" if rng.random() < 0.6 else "object")
    if plural:
        head = appearance.PLURALS[head]
    return " ".join(w for w in (noun.size, noun.colour, head) if w is not None)


def motion_text(predicate: str, noun: Noun, count: int, rng: np.random.Generator) -> str:
    """A per-object motion predicate; `count` >= 2 gives the plural with its count word."""
    singular, plural = MOTION_SUFFIXES[predicate][int(rng.integers(3))]
    if count == 1:
        return f"the {noun_phrase(noun, rng)} {singular}"
    return f"the {COUNT_WORDS[count]} {noun_phrase(noun, rng, plural=True)} {plural}"


def superlative_text(predicate: str, noun: Noun, rng: np.random.Generator) -> str:
    templates = SUPERLATIVE_TEMPLATES[predicate]
    return templates[int(rng.integers(len(templates)))].format(np=noun_phrase(noun, rng))


def appearance_text(noun: Noun, count: int, rng: np.random.Generator) -> str:
    if count == 1:
        template = APPEARANCE_TEMPLATES[int(rng.integers(len(APPEARANCE_TEMPLATES)))]
        return template.format(np=noun_phrase(noun, rng))
    template = PLURAL_APPEARANCE_TEMPLATES[int(rng.integers(len(PLURAL_APPEARANCE_TEMPLATES)))]
    return template.format(count=COUNT_WORDS[count], np=noun_phrase(noun, rng, plural=True))


def relation_text(relation: str, noun: Noun, ref: Noun, rng: np.random.Generator) -> str:
    templates = RELATION_TEMPLATES[relation]
    template = templates[int(rng.integers(len(templates)))]
    return template.format(a=noun_phrase(noun, rng), b=noun_phrase(ref, rng))
