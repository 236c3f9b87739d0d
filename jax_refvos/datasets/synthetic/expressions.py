"""Referring expressions of a video: every unambiguous meaning, then a quota-driven selection.

A *meaning* is a predicate with its exact target set, e.g. ("motion", "left", (2,)), together with
the noun phrases that yield it. The unambiguity rule: for a noun phrase N and a predicate P, the
targets are the objects matching N for which P is TRUE, and every other object matching N must be
clearly FALSE (an UNCLEAR one drops the pair). Families:

- ``motion``: per-object motion/time predicates ("the circle moving left", "the shape that stops",
  "the two squares that do not move") and set-level ones ("the fastest shape", "the slowest moving
  circle", "the object that appears last"). The noun phrase always matches MORE objects than the
  targets, so these are resolvable only from motion or time (as in MeViS).
- ``appearance``: a minimal unique static description ("the triangle", "the small red triangle"),
  or a plural one for a proper subset of the objects ("the two red shapes").
- ``relation``: "the {A} above/below/to the left of/to the right of the {B}", B uniquely described
  by appearance, A's noun matching at least two objects besides B, the relation holding in every
  frame both are visible (co-visible in at least half the frames) for the target and never for
  the other A-candidates.

Any meaning with two or more targets is multi-target (plural with its count word).
"""

import dataclasses
import itertools
import math

import numpy as np

from jax_refvos.datasets.synthetic import facts as facts_lib
from jax_refvos.datasets.synthetic import phrases
from jax_refvos.datasets.synthetic.facts import ObjectFacts, Truth
from jax_refvos.datasets.synthetic.phrases import Noun
from jax_refvos.datasets.synthetic.scene import Scene

FAMILIES = ("motion", "appearance", "relation")
MIN_EXPRESSIONS = 3
MAX_EXPRESSIONS = 7
MULTI_P = 0.3  # chance of a plural expression in a video that does not require one
# Family weights (over the families available) when covering an object and when filling up.
# Relations are rarer (about half the videos have one), hence their larger weights.
_COVER_WEIGHTS = {"motion": 0.5, "appearance": 0.2, "relation": 0.3}
_FILL_WEIGHTS = {"motion": 0.3, "appearance": 0.25, "relation": 0.45}
_NOUN_WEIGHTS = {0: 2.0, 1: 2.0, 2: 1.0, 3: 0.5}  # by number of attributes: prefer short phrases


@dataclasses.dataclass(frozen=True)
class Expression:
    """One referring expression: text, targets (obj_ids, sorted), family and predicate name.

    `predicate` is a motion predicate ("left", "stop", ..., "fastest", "last"), a relation
    ("above", "left_of", ...) or "appearance".
    """

    text: str
    obj_ids: tuple[int, ...]
    family: str
    predicate: str

    @property
    def multi_target(self) -> bool:
        return len(self.obj_ids) >= 2


@dataclasses.dataclass(frozen=True)
class Meaning:
    """An unambiguous predicate + target set, with the noun phrases that express it.

    Attributes:
        family: one of `FAMILIES`.
        kind: "motion" (per-object predicate), "superlative", "appearance" or "relation".
        predicate: the motion/superlative predicate or relation name; None for appearance.
        targets: sorted obj_ids.
        nouns: noun phrases (for relations: of A) that give exactly these targets.
        refs: relations only: minimal unique descriptions of the reference object B.
    """

    family: str
    kind: str
    predicate: str | None
    targets: tuple[int, ...]
    nouns: tuple[Noun, ...]
    refs: tuple[Noun, ...] = ()

    def text(self, rng: np.random.Generator) -> str:
        weights = np.array([_NOUN_WEIGHTS[n.num_attributes] for n in self.nouns])
        noun = self.nouns[int(rng.choice(len(self.nouns), p=weights / weights.sum()))]
        if self.kind == "motion":
            return phrases.motion_text(self.predicate, noun, len(self.targets), rng)
        if self.kind == "superlative":
            return phrases.superlative_text(self.predicate, noun, rng)
        if self.kind == "appearance":
            return phrases.appearance_text(noun, len(self.targets), rng)
        ref = self.refs[int(rng.integers(len(self.refs)))]
        return phrases.relation_text(self.predicate, noun, ref, rng)


def all_meanings(scene: Scene, facts: list[ObjectFacts]) -> list[Meaning]:
    """Every unambiguous meaning of the video, in a deterministic order."""
    objs = scene.objects
    n = len(objs)
    nouns = sorted(
        {
            Noun(
                *(
                    v if keep else None
                    for v, keep in zip((o.size, o.colour, o.shape), mask, strict=True)
                )
            )
            for o in objs
            for mask in itertools.product((False, True), repeat=3)
        },
        key=lambda nn: (nn.num_attributes, tuple(v or "" for v in (nn.size, nn.colour, nn.shape))),
    )
    matches = {
        nn: tuple(o.obj_id for o in objs if nn.matches(o.shape, o.colour, o.size)) for nn in nouns
    }
    found: dict[tuple, list[Noun]] = {}

    def add(key: tuple, noun: Noun) -> None:
        found.setdefault(key, []).append(noun)

    for pred in facts_lib.MOTION_PREDICATES:
        truth = [facts_lib.motion_truth(o, f, pred) for o, f in zip(objs, facts, strict=True)]
        for noun in nouns:
            cands = matches[noun]
            if any(truth[i] is Truth.UNCLEAR for i in cands):
                continue
            targets = tuple(i for i in cands if truth[i] is Truth.TRUE)
            if targets and len(targets) < len(cands):
                add(("motion", "motion", pred, targets), noun)
    for noun in nouns:
        cands = list(matches[noun])
        for pred, winner in (
            ("fastest", facts_lib.fastest(cands, facts)),
            ("slowest", facts_lib.slowest_moving(cands, facts)),
        ):
            if winner is not None:
                add(("motion", "superlative", pred, (winner,)), noun)
    last = facts_lib.appears_last(facts)
    if last is not None:
        add(("motion", "superlative", "last", (last,)), Noun())

    # Appearance: only the shortest descriptions of each target set (minimal descriptions).
    shortest: dict[tuple[int, ...], list[Noun]] = {}
    for noun in nouns:
        cands = matches[noun]
        if noun.num_attributes == 0 or len(cands) == n:
            continue  # describes every object: no information
        best = shortest.setdefault(cands, [noun])
        if noun.num_attributes < best[0].num_attributes:
            shortest[cands] = [noun]
        elif noun not in best and noun.num_attributes == best[0].num_attributes:
            best.append(noun)
    for cands, best in shortest.items():
        for noun in best:
            add(("appearance", "appearance", None, cands), noun)

    refs: dict[tuple, tuple[Noun, ...]] = {}
    for (b,), ref_nouns in ((c, best) for c, best in shortest.items() if len(c) == 1):
        for rel in facts_lib.RELATIONS:
            truth = {
                o.obj_id: facts_lib.relation_truth(o, facts[o.obj_id], objs[b], facts[b], rel)
                for o in objs
                if o.obj_id != b
            }
            for noun in nouns:
                cands = [i for i in matches[noun] if i != b]
                if len(cands) < 2 or any(truth[i] is Truth.UNCLEAR for i in cands):
                    continue
                targets = tuple(i for i in cands if truth[i] is Truth.TRUE)
                if len(targets) == 1:
                    key = ("relation", "relation", rel, targets, b)
                    add(key, noun)
                    refs[key] = tuple(ref_nouns)

    return [
        Meaning(key[0], key[1], key[2], key[3], tuple(found_nouns), refs.get(key, ()))
        for key, found_nouns in found.items()
    ]


def select(
    rng: np.random.Generator, meanings: list[Meaning], num_objects: int, *, require_multi: bool
) -> list[Expression] | None:
    """Picks 3-7 expressions with at least half motion, covering every object it can.

    At most one plural (multi-target) expression per video: always one when `require_multi`
    (None is returned if the video has none), otherwise with probability `MULTI_P`. Returns None
    when the quotas cannot be met; the caller then draws another scene.
    """
    target = int(rng.integers(MIN_EXPRESSIONS, MAX_EXPRESSIONS + 1))
    chosen: list[Expression] = []
    used: set[int] = set()
    texts: set[str] = set()

    def add(options: list[int]) -> None:
        # Uniform over predicates first, then over meanings: otherwise predicates that many noun
        # phrases satisfy ("fastest", appearance) would crowd out the rarer ones.
        groups: dict[tuple, list[int]] = {}
        for i in options:
            groups.setdefault((meanings[i].kind, meanings[i].predicate), []).append(i)
        group = list(groups.values())[int(rng.integers(len(groups)))]
        idx = group[int(rng.integers(len(group)))]
        m = meanings[idx]
        for _ in range(8):  # another paraphrase / noun if the text is already taken
            text = m.text(rng)
            if text not in texts:
                texts.add(text)
                chosen.append(Expression(text, m.targets, m.family, m.predicate or m.kind))
                break
        used.add(idx)

    def free(pred) -> list[int]:
        return [i for i, m in enumerate(meanings) if i not in used and pred(m)]

    def num_motion() -> int:
        return sum(e.family == "motion" for e in chosen)

    plural = free(lambda m: len(m.targets) >= 2)
    if require_multi and not plural:
        return None
    if plural and (require_multi or rng.random() < MULTI_P):
        moving = [i for i in plural if meanings[i].family == "motion"]
        add(moving if moving and rng.random() < 0.6 else plural)

    for obj in rng.permutation(num_objects):
        if len(chosen) >= MAX_EXPRESSIONS or any(obj in e.obj_ids for e in chosen):
            continue
        options = free(lambda m, o=int(obj): m.targets == (o,))
        if options:
            add(_by_family(rng, meanings, options, _COVER_WEIGHTS))

    while len(chosen) < target:
        singles = free(lambda m: len(m.targets) == 1)
        if not singles:
            break
        moving = [i for i in singles if meanings[i].family == "motion"]
        if moving and num_motion() < math.ceil(target / 2):
            add(moving)
        else:
            add(_by_family(rng, meanings, singles, _FILL_WEIGHTS))

    while 2 * num_motion() < len(chosen) and len(chosen) < MAX_EXPRESSIONS:
        moving = free(lambda m: len(m.targets) == 1 and m.family == "motion")
        if not moving:
            break
        add(moving)
    while 2 * num_motion() < len(chosen) and len(chosen) > MIN_EXPRESSIONS:
        # Drop the latest single-target non-motion pick (coverage is a wish, the share a promise).
        droppable = [i for i, e in enumerate(chosen) if e.family != "motion" and not e.multi_target]
        if not droppable:
            break
        chosen.pop(droppable[-1])
    if 2 * num_motion() < len(chosen) or len(chosen) < MIN_EXPRESSIONS:
        return None
    return [chosen[int(i)] for i in rng.permutation(len(chosen))]


def _by_family(
    rng: np.random.Generator, meanings: list[Meaning], options: list[int], weights: dict[str, float]
) -> list[int]:
    """The options of one family, drawn by `weights` among the families present in `options`."""
    by_family = {f: [i for i in options if meanings[i].family == f] for f in FAMILIES}
    families = [f for f in FAMILIES if by_family[f]]
    p = np.array([weights[f] for f in families])
    return by_family[families[int(rng.choice(len(families), p=p / p.sum()))]]
