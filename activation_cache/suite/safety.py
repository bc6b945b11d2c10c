"""Safety: does a behaviour risk people's safety?

``safety`` (label 1: unsafe): one-sentence scenarios phrased from templates over a
small curated table of standard home-safety facts (``family`` field):

- ``chemicals``: mixing household cleaners. Unsafe: bleach with ammonia, vinegar,
  rubbing alcohol, lemon juice or an acidic toilet bowl cleaner (chloramine,
  chlorine or chloroform gas), hydrogen peroxide with vinegar (peracetic acid).
  Safe: any of them diluted with water, and baking soda, dish soap, vinegar and
  lemon juice with each other. (Poison-control and public-health guidance on
  household chemicals.)
- ``medication``: tablets taken within 24 hours against the adult maximum daily dose
  of the over-the-counter label: acetaminophen 4,000 mg, aspirin 4,000 mg,
  ibuprofen 1,200 mg, naproxen sodium 660 mg, diphenhydramine 300 mg, loratadine
  10 mg, cetirizine 10 mg, fexofenadine 180 mg. Unsafe: more than the maximum.
- ``food``: perishable food left out more than two hours, cooked leftovers eaten
  after a week in the fridge, frozen food thawed on the counter or in hot water
  (the USDA's food-safety rules: the two-hour rule, 3-4 days for leftovers, thaw in
  the fridge, in cold water or in the microwave).
- ``home``: space heaters on extension cords or by curtains, generators and grills
  run indoors (carbon monoxide), mains appliances in the bath or shower, a fuse
  replaced by a higher-rated one, water on a grease fire, metal in a microwave
  (fire-service and consumer-safety guidance).

The same products, foods, devices and numbers appear in safe and unsafe scenarios
(bleach is safe with water; water is unsafe on a grease fire; 10 mg is safe for
loratadine and 30 mg is not), so single words rarely give the label away; the
scenarios are few, though, and repeat with different people and phrasings, so a
probe is tested on new phrasings of known hazards, not on new hazards.
"""

from __future__ import annotations

from itertools import product

from activation_cache.suite._common import Task, finish, pick_balanced

__all__ = ["safety"]

_PEOPLE = (
    "Maria",
    "James",
    "Aiko",
    "David",
    "Fatima",
    "Lucas",
    "Priya",
    "Tom",
    "Elena",
    "Kwame",
    "Sofia",
    "Ben",
    "Mei",
    "Omar",
    "Hannah",
    "Carlos",
    "Nina",
    "Raj",
    "Grace",
    "Ivan",
    "Leila",
    "Sam",
    "Ana",
    "Yusuf",
)

_UNSAFE_MIXES = (
    ("bleach", "ammonia"),
    ("bleach", "vinegar"),
    ("bleach", "rubbing alcohol"),
    ("bleach", "lemon juice"),
    ("bleach", "toilet bowl cleaner"),
    ("hydrogen peroxide", "vinegar"),
)
_SAFE_MIXES = (
    ("bleach", "water"),
    ("ammonia", "water"),
    ("vinegar", "water"),
    ("rubbing alcohol", "water"),
    ("hydrogen peroxide", "water"),
    ("baking soda", "vinegar"),
    ("dish soap", "baking soda"),
    ("lemon juice", "baking soda"),
    ("dish soap", "vinegar"),
    ("lemon juice", "water"),
    ("dish soap", "water"),
)
_ROOMS = ("bathroom", "kitchen floor", "shower", "sink", "countertops", "tiles")
_MIX_TEMPLATES = (
    "{p} mixed {a} with {b} to clean the {r}.",
    "To clean the {r}, {p} combined {a} and {b} in a bucket.",
    "{p} poured {a} into a spray bottle of {b} and used it on the {r}.",
)

# drug -> (maximum adult daily dose in mg on the OTC label, tablet strengths in mg)
_DOSES = {
    "acetaminophen": (4000, (325, 500)),
    "aspirin": (4000, (325,)),
    "ibuprofen": (1200, (200,)),
    "naproxen sodium": (660, (220,)),
    "diphenhydramine": (300, (25, 50)),
    "loratadine": (10, (10,)),
    "cetirizine": (10, (5, 10)),
    "fexofenadine": (180, (60, 180)),
}
_DOSE_TEMPLATES = (
    "{p} took {k} {t} of {s} mg {d} within 24 hours.",
    "Over one day, {p} swallowed {k} {t} of {d} at {s} mg each.",
    "In the last 24 hours {p} has taken {k} {t} of {d}, {s} mg each.",
)

_FOODS_OUT = (
    "cooked rice",
    "raw chicken",
    "potato salad",
    "cooked pasta",
    "a pot of soup",
    "sliced ham",
    "a jug of milk",
    "cut melon",
    "scrambled eggs",
    "cooked beans",
)
_OUT_SAFE = ("thirty minutes", "one hour", "an hour and a half")
_OUT_UNSAFE = ("four hours", "six hours", "the whole night")
_LEFTOVERS = (
    "leftover lasagna",
    "leftover curry",
    "leftover stew",
    "leftover fried rice",
    "leftover chili",
    "leftover pizza",
)
_DAYS_SAFE = ("one day", "two days", "three days")
_DAYS_UNSAFE = ("seven days", "nine days", "twelve days")
_FROZEN = (
    "a frozen turkey",
    "frozen chicken breasts",
    "frozen ground beef",
    "a frozen pork roast",
    "frozen shrimp",
)
_THAW_SAFE = (
    "in the refrigerator overnight",
    "in a bowl of cold water, changing the water every thirty minutes",
    "in the microwave and cooked it right away",
)
_THAW_UNSAFE = (
    "on the kitchen counter all day",
    "in a sink of hot water all afternoon",
    "on the sunny porch until dinner",
)

# (template, safe completions, unsafe completions); {p} is the person
_HOME = (
    (
        "{p} plugged the space heater into {x}.",
        ("a wall outlet", "the outlet on the wall"),
        ("a thin extension cord", "a power strip behind the sofa"),
    ),
    (
        "{p} set the space heater {x} and went to sleep.",
        (
            "three feet away from the bed and curtains",
            "on the bare floor in the middle of the room",
        ),
        ("right next to the curtains", "under the desk beside a pile of papers"),
    ),
    (
        "During the power outage, {p} ran a gasoline generator {x}.",
        ("outdoors, far from doors and windows", "outside, twenty feet from the house"),
        ("in the garage with the door half open", "in the basement"),
    ),
    (
        "To keep warm, {p} lit a charcoal grill {x}.",
        ("outside on the open patio", "in the backyard, away from the house"),
        ("in the living room", "inside the closed garage"),
    ),
    (
        "{p} used a plugged-in hair dryer {x}.",
        ("at the bedroom mirror", "while sitting at the dressing table"),
        ("while sitting in a full bathtub", "while standing in the running shower"),
    ),
    (
        "{p} replaced a blown {x}.",
        (
            "15-amp fuse with a new 15-amp fuse",
            "20-amp fuse with a new 20-amp fuse",
            "10-amp fuse with a new 10-amp fuse",
        ),
        (
            "15-amp fuse with a 30-amp fuse",
            "10-amp fuse with a 20-amp fuse",
            "20-amp fuse with a 30-amp fuse",
        ),
    ),
    (
        "When a pan of oil caught fire, {p} {x}.",
        (
            "slid a lid over the pan and turned off the burner",
            "smothered the flames with baking soda",
        ),
        ("threw a cup of water on it", "carried the burning pan outside"),
    ),
    (
        "{p} heated leftovers in the microwave {x}.",
        ("in a glass bowl", "on a ceramic plate"),
        ("wrapped in aluminum foil", "in a metal tin"),
    ),
)


def _scenarios() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(family, text) candidates: safe and unsafe."""
    safe, unsafe = [], []
    for (pairs, out), template, room, p in product(
        ((_SAFE_MIXES, safe), (_UNSAFE_MIXES, unsafe)), _MIX_TEMPLATES, _ROOMS, _PEOPLE
    ):
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                out.append(("chemicals", template.format(p=p, a=x, b=y, r=room)))
    for (drug, (limit, strengths)), template, p in product(
        _DOSES.items(), _DOSE_TEMPLATES, _PEOPLE
    ):
        for s in strengths:
            most = limit // s
            for k in range(max(1, most - 3), most + 5):
                t = "tablet" if k == 1 else "tablets"
                text = template.format(p=p, k=k, t=t, s=s, d=drug)
                (safe if k * s <= limit else unsafe).append(("medication", text))
    for p in _PEOPLE:
        for food, (times, out) in product(
            _FOODS_OUT, ((_OUT_SAFE, safe), (_OUT_UNSAFE, unsafe))
        ):
            for t in times:
                text = f"{p} left {food} out on the counter for {t} before eating it."
                out.append(("food", text))
        for food, (days, out) in product(
            _LEFTOVERS, ((_DAYS_SAFE, safe), (_DAYS_UNSAFE, unsafe))
        ):
            for d in days:
                text = f"{p} ate {food} that had been in the fridge for {d}."
                out.append(("food", text))
        for food, (ways, out) in product(
            _FROZEN, ((_THAW_SAFE, safe), (_THAW_UNSAFE, unsafe))
        ):
            for w in ways:
                out.append(("food", f"{p} thawed {food} {w}."))
        for template, ok, risky in _HOME:
            for options, out in ((ok, safe), (risky, unsafe)):
                for x in options:
                    out.append(("home", template.format(p=p, x=x)))
    return safe, unsafe


def safety(size: int, seed: int) -> Task:
    """``safety`` (label 1: unsafe), with a ``family`` field."""
    safe, unsafe = _scenarios()
    texts, labels, families = pick_balanced("safety", unsafe, safe, size, seed)
    return finish("safety", texts, labels, seed, {"family": families})
