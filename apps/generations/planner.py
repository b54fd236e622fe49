"""The shot planner: a trend's cinematic defaults plus the user's free text become a shot plan.

    plan = plan_shot(defaults=ShotDefaults(...), user_text="make it feel premium", model_family="wan22",
                     subject="the person in the photo", duration_seconds=5, aspect_ratio="PORTRAIT_9_16")
    generation.plan = dataclasses.asdict(plan)          # JSON-ready; ShotPlan.from_dict reads it back

Pure Python (no Django, no models): plain dataclasses in and out, driven by the tables below, and
deterministic: the same input always gives the same plan, and the order of words in the user's text
never changes which adjustments apply.

How a field is chosen (precedence, highest first):

1. explicit camera words in the user's text: a movement ("orbit", "drone shot", "dolly in", "360",
   "fpv", "handheld", "static"/"locked-off", ...; the first row of `EXPLICIT_MOVEMENTS` that matches
   wins) and a speed ("slow", "fast", ...: sets the movement strength and the pacing);
2. intents found in the text ("premium", "dramatic", "dreamy", ...), in the order of `INTENTS`: for each
   field, the first matched intent that sets it wins. The lens, focal length and aperture come together
   from one intent. Strength is the exception: every matched intent adds its `strength_delta` to the
   trend's strength, and the sum is clamped to 0..1. Prompt keywords and negative terms of every matched
   intent are all kept, in table order;
3. the trend's defaults (`ShotDefaults`);
4. the planner's fallbacks (`FALLBACK_*`), so a free-prompt generation without a trend works too.

Then the lens kind (from the winning intent, or guessed from the trend's lens text and focal length)
clamps the focal length and aperture to a realistic range, and long clips slow the pacing down a step.

Matching is English-only, case-insensitive, on whole words (a phrase's spaces and hyphens are
interchangeable: "push in" = "push-in"). A simple negation right before a word turns it off: "not
dramatic", "no handheld", "without drone", "not too dramatic", "non-dramatic".

The user's text in the prompt: control and invisible format characters are dropped, the text is
NFKC-normalised, whitespace collapsed, and it is capped at `USER_TEXT_MAX_CHARS` on a word boundary.
Anything from a negative-prompt marker on ("negative prompt: ...", "--no ...", "--neg ...") is cut: the
user's text never reaches the negative prompt, and such terms are not planted in the positive one. Text
that is only direction ("make it feel more dramatic, slow orbit") is fully captured by the plan and is
left out of the prompt when there is something else to describe (the trend's template or the subject);
any other text is kept as written, after the main action.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from apps.trends.prompts import template_problems, template_render
from gpu_worker.contract import FAMILY_LTX, FAMILY_TINY_WAN, FAMILY_WAN22

PLAN_VERSION = 1

# Pipeline family (gpu_worker.contract) -> prompt style. "wan" is accepted as an alias of wan22.
PROMPT_STYLES: dict[str, str] = {FAMILY_TINY_WAN: "wan", FAMILY_WAN22: "wan", "wan": "wan", FAMILY_LTX: "ltx"}

# The trend's CameraMovement choices (apps.trends.models), in the same spelling.
MOVEMENTS: tuple[str, ...] = (
    "static",
    "dolly_in",
    "dolly_out",
    "drone",
    "orbit",
    "roll_360",
    "fpv_arc",
    "handheld",
    "crane",
)
PACINGS: tuple[str, ...] = ("slow", "medium", "fast")

# API.md AspectRatio values and the contract's spelling, both accepted.
FRAMINGS: dict[str, str] = {
    "PORTRAIT_9_16": "vertical 9:16 framing",
    "SQUARE_1_1": "square 1:1 framing",
    "LANDSCAPE_16_9": "widescreen 16:9 framing",
    "9:16": "vertical 9:16 framing",
    "1:1": "square 1:1 framing",
    "16:9": "widescreen 16:9 framing",
}

FALLBACK_CAMERA_BODY = "digital cinema camera"
FALLBACK_MOVEMENT = "static"
FALLBACK_STRENGTH = 0.5
FALLBACK_LIGHTING = "soft natural light"
FALLBACK_MOOD = "natural, with true-to-life colours"
FALLBACK_PACING = "medium"

# Clips this long or longer are paced one step slower (and two steps from the second threshold).
SLOWER_PACING_FROM_SECONDS: tuple[float, ...] = (8.0, 15.0)

USER_TEXT_MAX_CHARS = 400
SUBJECT_MAX_CHARS = 200
# Length limits of the final prompt per style: Wan reads a dense sentence (UMT5, 512 tokens); LTX a
# paragraph of under 200 words (T5, 256 tokens in our pipeline). Both stay far below the job contract's
# MAX_PROMPT_CHARS.
PROMPT_MAX_WORDS: dict[str, int] = {"wan": 120, "ltx": 180}
PROMPT_MAX_CHARS = 1500
MAX_STYLE_KEYWORDS = 8
MIN_ACTION_WORDS = 30  # style keywords give way before the main action is cut below this
NEGATIVE_MAX_CHARS = 1500

# Each style's negative base, before the trend's and the intents' terms. Wan's is an English rendering
# of the list Wan's authors ship; LTX's follows the negative prompt of Lightricks' examples.
NEGATIVE_BASE: dict[str, tuple[str, ...]] = {
    "wan": (
        "blurry",
        "low quality",
        "worst quality",
        "jpeg artifacts",
        "distorted face",
        "deformed",
        "disfigured",
        "poorly drawn face",
        "poorly drawn hands",
        "extra fingers",
        "fused fingers",
        "malformed limbs",
        "extra limbs",
        "watermark",
        "text",
        "subtitles",
        "garish colours",
        "overexposed",
        "static frame",
        "messy background",
        "crowded background",
        "walking backwards",
    ),
    "ltx": (
        "worst quality",
        "low quality",
        "inconsistent motion",
        "blurry",
        "jittery",
        "distorted",
        "distorted face",
        "deformed",
        "extra fingers",
        "watermark",
        "text",
    ),
}


# --- Lenses -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LensSpec:
    """A kind of lens: how the prompt names it and the realistic focal length and aperture ranges."""

    name: str
    focal_range: tuple[int, int]
    aperture_range: tuple[float, float]
    default_focal: int
    default_aperture: float


LENSES: dict[str, LensSpec] = {
    "ultra_wide": LensSpec("ultra-wide lens", (10, 20), (2.8, 16.0), 16, 4.0),
    "wide": LensSpec("wide-angle lens", (20, 35), (1.4, 16.0), 24, 2.8),
    "standard": LensSpec("standard prime lens", (35, 60), (1.2, 16.0), 50, 2.0),
    "portrait": LensSpec("portrait lens", (70, 135), (1.2, 16.0), 85, 1.8),
    "telephoto": LensSpec("telephoto lens", (135, 600), (2.8, 22.0), 200, 4.0),
    "anamorphic": LensSpec("anamorphic lens", (28, 135), (1.8, 16.0), 50, 2.0),
    "macro": LensSpec("macro lens", (50, 105), (2.8, 32.0), 100, 2.8),
}
# Words in a trend's free lens text -> lens kind, first match wins; else the focal length decides.
LENS_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("anamorphic", ("anamorphic",)),
    ("macro", ("macro",)),
    ("ultra_wide", ("ultra wide", "ultrawide", "fisheye", "fish eye")),
    ("telephoto", ("telephoto", "tele", "long lens", "supertele")),
    ("portrait", ("portrait",)),
    ("wide", ("wide", "wide angle")),
    ("standard", ("standard", "normal")),
)


def _lens_kind_for_focal(focal_mm: int) -> str:
    if focal_mm < 20:
        return "ultra_wide"
    if focal_mm < 35:
        return "wide"
    if focal_mm <= 60:
        return "standard"
    if focal_mm <= 135:
        return "portrait"
    return "telephoto"


# --- Intents ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intent:
    """What a word of direction ("premium", "dreamy") changes. None leaves a field to the next layer."""

    name: str
    synonyms: tuple[str, ...]
    camera_body: str | None = None
    lens: str | None = None  # a key of LENSES; the focal length and aperture go with it
    focal_length_mm: int | None = None
    aperture: float | None = None
    movement: str | None = None
    strength_delta: float = 0.0
    lighting: str | None = None
    color_mood: str | None = None
    pacing: str | None = None
    keywords: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()


# In priority order: where two matched intents set the same field, the earlier one wins.
INTENTS: tuple[Intent, ...] = (
    Intent(
        "premium",
        ("premium", "luxury", "luxurious", "high end", "upscale", "expensive", "elegant", "classy", "sleek"),
        camera_body="ARRI Alexa 35",
        lens="anamorphic",
        focal_length_mm=50,
        aperture=2.0,
        movement="dolly_in",
        strength_delta=-0.15,
        lighting="a soft key light with polished specular highlights",
        color_mood="refined and luxurious, with rich colours and deep blacks",
        pacing="slow",
        keywords=("luxury commercial look", "polished", "shallow depth of field"),
        negatives=("cheap look", "cluttered background"),
    ),
    Intent(
        "dramatic",
        ("dramatic", "drama", "epic", "intense", "powerful", "heroic"),
        lens="wide",
        focal_length_mm=24,
        aperture=2.8,
        movement="crane",
        strength_delta=0.2,
        lighting="hard low-key side light with deep shadows",
        color_mood="intense and high-contrast, with teal and orange tones",
        pacing="medium",
        keywords=("epic scale", "high contrast", "low angle"),
        negatives=("flat lighting", "dull colours"),
    ),
    Intent(
        "dreamy",
        (
            "dreamy",
            "dreamlike",
            "dream",
            "ethereal",
            "hazy",
            "whimsical",
            "magical",
            "fairytale",
            "fairy tale",
        ),
        lens="portrait",
        focal_length_mm=85,
        aperture=1.4,
        movement="orbit",
        strength_delta=-0.2,
        lighting="soft diffused backlight with a gentle bloom",
        color_mood="dreamy and ethereal, with pastel tones and a hazy glow",
        pacing="slow",
        keywords=("dreamlike", "soft focus", "floating light particles"),
        negatives=("harsh shadows", "oversharpened"),
    ),
    Intent(
        "energetic",
        (
            "energetic",
            "high energy",
            "hype",
            "hyped",
            "dynamic",
            "upbeat",
            "exciting",
            "party",
            "action packed",
        ),
        lens="wide",
        focal_length_mm=20,
        aperture=4.0,
        movement="fpv_arc",
        strength_delta=0.3,
        lighting="punchy bright light with vivid highlights",
        color_mood="vibrant and high-energy, with saturated colours",
        pacing="fast",
        keywords=("dynamic motion", "high energy"),
        negatives=("sluggish motion",),
    ),
    Intent(
        "moody",
        ("moody", "noir", "dark mood", "gritty", "brooding", "mysterious", "somber", "sombre"),
        lens="standard",
        focal_length_mm=35,
        aperture=1.8,
        movement="dolly_in",
        strength_delta=-0.2,
        lighting="a single hard light with deep shadows and haze",
        color_mood="dark and moody, with desaturated cool tones and crushed blacks",
        pacing="slow",
        keywords=("film noir atmosphere", "chiaroscuro"),
        negatives=("bright cheerful colours", "flat lighting"),
    ),
    Intent(
        "cinematic",
        ("cinematic", "filmic", "movie", "blockbuster", "hollywood"),
        camera_body="ARRI Alexa Mini LF",
        lens="anamorphic",
        focal_length_mm=40,
        aperture=2.8,
        lighting="motivated cinematic lighting",
        color_mood="cinematic, with a teal and orange grade",
        keywords=("cinematic composition", "film grain"),
        negatives=("amateur footage",),
    ),
    Intent(
        "vintage",
        (
            "vintage",
            "retro",
            "analog",
            "analogue",
            "film look",
            "film grain",
            "shot on film",
            "16mm",
            "super 8",
            "nostalgic",
            "70s",
            "80s",
            "90s",
        ),
        camera_body="16mm film camera",
        lens="standard",
        focal_length_mm=35,
        aperture=2.8,
        movement="handheld",
        strength_delta=-0.1,
        lighting="warm natural window light",
        color_mood="nostalgic, with faded warm film colours",
        keywords=("vintage film look", "film grain", "light leaks"),
        negatives=("digital look", "oversharpened"),
    ),
    Intent(
        "romantic",
        ("romantic", "romance", "in love", "loving", "tender", "intimate"),
        lens="portrait",
        focal_length_mm=85,
        aperture=1.8,
        movement="orbit",
        strength_delta=-0.2,
        lighting="warm golden-hour backlight",
        color_mood="romantic and tender, with warm rosy tones",
        pacing="slow",
        keywords=("romantic atmosphere", "creamy bokeh"),
        negatives=("harsh light",),
    ),
    Intent(
        "playful",
        ("playful", "fun", "funny", "cute", "quirky", "silly", "cheerful", "joyful"),
        lens="wide",
        focal_length_mm=28,
        aperture=4.0,
        movement="handheld",
        strength_delta=0.1,
        lighting="bright cheerful daylight",
        color_mood="playful and bright, with candy colours",
        pacing="fast",
        keywords=("playful", "lively"),
        negatives=("gloomy",),
    ),
    Intent(
        "calm",
        ("calm", "peaceful", "serene", "relaxing", "relaxed", "tranquil", "chill", "zen", "minimal"),
        lens="standard",
        focal_length_mm=50,
        aperture=2.8,
        movement="static",
        strength_delta=-0.3,
        lighting="soft even natural light",
        color_mood="calm and serene, with muted natural tones",
        pacing="slow",
        keywords=("serene", "tranquil"),
        negatives=("shaky camera", "chaotic motion"),
    ),
    Intent(
        "golden_hour",
        ("golden hour", "sunset", "sunrise", "warm light", "magic hour"),
        lighting="low golden-hour sunlight with long shadows",
        color_mood="warm and golden, with amber tones",
        keywords=("golden hour",),
    ),
    Intent(
        "neon",
        ("neon", "cyberpunk", "futuristic", "synthwave", "night city"),
        lens="anamorphic",
        focal_length_mm=35,
        aperture=1.8,
        lighting="neon signs with magenta and cyan rim light",
        color_mood="electric, with magenta and cyan neon colours",
        keywords=("neon-lit night", "reflections on wet streets"),
        negatives=("daylight",),
    ),
    Intent(
        "fashion",
        ("fashion", "editorial", "runway", "catwalk", "vogue", "glamour", "glam"),
        camera_body="ARRI Alexa Mini",
        lens="portrait",
        focal_length_mm=85,
        aperture=2.0,
        movement="dolly_out",
        lighting="a crisp beauty-dish key light",
        color_mood="sleek and editorial, with clean true colours",
        keywords=("high-fashion editorial", "flawless styling"),
        negatives=("wrinkled clothes",),
    ),
    Intent(
        "documentary",
        ("documentary", "realistic", "naturalistic", "raw", "candid", "authentic", "real life"),
        lens="standard",
        focal_length_mm=35,
        aperture=2.8,
        movement="handheld",
        lighting="natural available light",
        color_mood="natural and authentic, with true-to-life colours",
        keywords=("documentary realism", "candid moment"),
        negatives=("artificial look", "cgi"),
    ),
    Intent(
        "horror",
        ("horror", "scary", "creepy", "spooky", "eerie", "haunted"),
        lens="wide",
        focal_length_mm=24,
        aperture=2.0,
        movement="dolly_in",
        strength_delta=-0.2,
        lighting="harsh underlighting with flickering shadows",
        color_mood="unsettling, with cold sickly green tones",
        pacing="slow",
        keywords=("unsettling atmosphere",),
        negatives=("cheerful", "bright colours"),
    ),
)

# Explicit camera words, in priority order (the first row that matches wins; "fpv drone" is an FPV
# arc, "360 orbit" an orbit, "dolly in and out" a dolly out).
EXPLICIT_MOVEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("static", ("static", "locked off", "lock off", "tripod", "still camera", "no camera movement")),
    ("fpv_arc", ("fpv", "fpv arc", "first person view", "fpv drone")),
    ("dolly_out", ("dolly out", "dolly back", "pull out", "pull back", "zoom out")),
    ("dolly_in", ("dolly in", "dolly", "push in", "zoom in")),
    ("orbit", ("orbit", "orbits", "orbiting", "circle around", "circling", "arc around", "revolve around")),
    ("roll_360", ("360", "360 degree", "360 roll", "barrel roll", "camera roll", "roll shot", "spin shot")),
    ("drone", ("drone", "drone shot", "aerial", "bird's eye", "birds eye", "overhead shot")),
    ("crane", ("crane", "crane shot", "jib", "boom up")),
    ("handheld", ("handheld", "hand held", "shaky cam", "shakycam")),
)
# Explicit speed words: (name, synonyms, movement strength, pacing), the first row that matches wins.
EXPLICIT_SPEEDS: tuple[tuple[str, tuple[str, ...], float, str], ...] = (
    ("slow", ("slow", "slowly", "subtle", "gentle", "gently", "slow motion", "slo mo"), 0.25, "slow"),
    ("fast", ("fast", "quick", "quickly", "rapid", "rapidly", "whip", "aggressive"), 0.85, "fast"),
)

# Words that carry no content of their own in a direction like "make it feel a bit more dramatic".
_FILLER = """
    a an the and or but with without please make it its feel feels feeling look looks looking more much
    very really super so too quite bit little lot slightly extra some add give me us like kind sort of
    style styled vibe vibes mood tone atmosphere aesthetic shot shots camera movement move moving motion
    in to be is less way not no never don t dont avoid non also plus go do let lets than that this for on
"""
FILLER_WORDS = frozenset(_FILLER.split())

_NEGATION = re.compile(
    r"(?:\b(?:not|no|never|without|avoid|don'?t)\s+(?:(?:too|so|very|overly|a|any|that|be)\s+)?|\bnon-)$",
    re.IGNORECASE,
)
_NEGATIVE_MARKER = re.compile(r"(?:\bnegative(?:\s+prompt)?\s*[:=]|(?<!\w)--(?:no|neg|negative)\b)", re.I)


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in re.split(r"[\s-]+", phrase.strip())]
    return re.compile(r"(?<!\w)" + r"[\s-]+".join(parts) + r"(?!\w)", re.IGNORECASE)


def _compile(
    rows: Sequence[tuple[str, Sequence[str]]],
) -> tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]:
    return tuple((name, tuple(_phrase_pattern(s) for s in synonyms)) for name, synonyms in rows)


_INTENT_PATTERNS = _compile([(intent.name, intent.synonyms) for intent in INTENTS])
_MOVEMENT_PATTERNS = _compile(EXPLICIT_MOVEMENTS)
_SPEED_PATTERNS = _compile([(name, synonyms) for name, synonyms, _, _ in EXPLICIT_SPEEDS])
_LENS_PATTERNS = _compile(LENS_WORDS)
_INTENTS_BY_NAME = {intent.name: intent for intent in INTENTS}
_SPEEDS_BY_NAME = {name: (strength, pacing) for name, _, strength, pacing in EXPLICIT_SPEEDS}


# --- Phrases per movement and style -----------------------------------------------------------------
# Wan: a noun phrase in the dense sentence; LTX: a sentence that says what the camera does.
_MOVEMENT_WAN = {
    "static": "static locked-off camera",
    "dolly_in": "{adj} dolly-in toward the subject",
    "dolly_out": "{adj} dolly-out away from the subject",
    "drone": "{adj} aerial drone shot rising over the scene",
    "orbit": "{adj} orbit around the subject",
    "roll_360": "{adj} 360-degree camera roll",
    "fpv_arc": "{adj} FPV drone arc around the subject",
    "handheld": "handheld camera with {shake} shake",
    "crane": "{adj} crane shot rising upward",
}
_MOVEMENT_LTX = {
    "static": "The camera is locked off and static.",
    "dolly_in": "The camera {adv} dollies in toward the subject.",
    "dolly_out": "The camera {adv} dollies out, pulling away from the subject.",
    "drone": "The camera {adv} rises as an aerial drone shot over the scene.",
    "orbit": "The camera {adv} orbits around the subject.",
    "roll_360": "The camera {adv} rolls a full 360 degrees around its axis.",
    "fpv_arc": "The camera {adv} sweeps around the subject in an FPV drone arc.",
    "handheld": "The camera is handheld, with {shake} shake.",
    "crane": "The camera {adv} cranes upward, rising above the subject.",
}
_PACING_WAN = {"slow": "slow graceful pacing", "medium": "steady pacing", "fast": "fast-paced rhythm"}
_PACING_LTX = {
    "slow": "The pacing is slow and graceful.",
    "medium": "The pacing is steady.",
    "fast": "The pacing is fast and energetic.",
}


def _strength_words(strength: float) -> dict[str, str]:
    if strength < 0.34:
        return {"adj": "slow, subtle", "adv": "slowly", "shake": "subtle"}
    if strength < 0.67:
        return {"adj": "smooth", "adv": "smoothly", "shake": "natural"}
    return {"adj": "fast, sweeping", "adv": "quickly", "shake": "strong"}


# --- Input and output -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShotDefaults:
    """A trend's cinematic defaults (apps.trends.models.Trend); all optional, for free prompts too.

    Empty text and None mean "not set". `aperture` is an f-number (a Decimal from the model is fine).
    """

    prompt_template: str = ""
    negative_prompt: str = ""
    camera_body: str = ""
    lens: str = ""
    focal_length_mm: int | None = None
    aperture: float | Decimal | None = None
    camera_movement: str = ""
    movement_strength: float | None = None
    lighting: str = ""
    mood: str = ""


@dataclass(frozen=True)
class ShotPlan:
    """The plan stored on a generation (`asdict(plan)`) and exposed as `plan`."""

    camera_body: str
    lens: str
    focal_length_mm: int
    aperture: float  # f-number
    movement: str  # one of MOVEMENTS
    movement_strength: float  # 0..1
    lighting: str
    color_mood: str
    pacing: str  # one of PACINGS
    prompt: str
    negative_prompt: str
    model_family: str
    style_keywords: list[str] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)  # matched intents, in table order
    version: int = PLAN_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShotPlan:
        """A stored plan read back; unknown keys are ignored, so older readers survive added fields."""
        version = data.get("version", PLAN_VERSION)
        if not isinstance(version, int) or version > PLAN_VERSION:
            raise ValueError(f"Shot plan version {version!r} is newer than this code ({PLAN_VERSION}).")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as exc:
            raise ValueError(f"Malformed shot plan: {exc}") from None


# --- Text helpers -----------------------------------------------------------------------------------
def _clean(text: str | None, *, max_chars: int) -> str:
    """NFKC, no control or invisible format characters, one space between words, capped on a word."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = " ".join(text.split())
    if len(text) > max_chars:
        cut = text[: max_chars + 1]
        text = cut.rsplit(" ", 1)[0] if " " in cut else text[:max_chars]
    return text.strip(" ,;:")


def sanitize_user_text(text: str | None) -> str:
    """The user's free text as it may appear in a prompt (see the module docstring)."""
    text = _clean(text, max_chars=10 * USER_TEXT_MAX_CHARS)
    marker = _NEGATIVE_MARKER.search(text)
    if marker:
        text = text[: marker.start()]
    return _clean(text, max_chars=USER_TEXT_MAX_CHARS)


def _matches(
    patterns: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...], text: str, spans: list[tuple[int, int]]
) -> list[str]:
    """Names of the rows with a match that is not negated, in table order; every match goes in spans."""
    found = []
    for name, row in patterns:
        hit = False
        for pattern in row:
            for match in pattern.finditer(text):
                negation = _NEGATION.search(text, 0, match.start())
                spans.append((negation.start() if negation else match.start(), match.end()))
                hit = hit or negation is None
        if hit:
            found.append(name)
    return found


def _is_only_direction(text: str, spans: list[tuple[int, int]]) -> bool:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return all(word in FILLER_WORDS for word in re.findall(r"\w+", "".join(chars).casefold()))


def _first(*values: Any) -> Any:
    return next((value for value in values if value not in (None, "")), None)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(text: str, *, verbatim: str = "") -> str:
    """`text` as a sentence: capitalised (unless it starts with the `verbatim` phrase) and ended."""
    text = text.strip().rstrip(",;:").strip()
    if not (verbatim and text.startswith(verbatim)):
        text = _capitalised(text)
    return text if not text or text[-1] in ".!?" else text + "."


def _truncate(text: str, *, words: int, chars: int) -> str:
    """At most `words` words and `chars` characters, cut between words where possible."""
    text = " ".join(text.split()[: max(words, 0)])
    chars = max(chars, 0)
    if len(text) > chars:
        cut = text[: chars + 1]
        text = cut.rsplit(" ", 1)[0] if " " in cut else text[:chars]
    return text.strip(" ,;:")


def _merge_terms(*groups: Sequence[str], max_chars: int) -> str:
    """Comma-separated terms, de-duplicated case-insensitively, first spelling and order kept."""
    seen: set[str] = set()
    out: list[str] = []
    length = 0
    for group in groups:
        for term in group:
            term = " ".join(term.split()).strip(" .")
            key = term.casefold()
            if not term or key in seen:
                continue
            added = len(term) + (2 if out else 0)
            if length + added > max_chars:
                return ", ".join(out)
            seen.add(key)
            out.append(term)
            length += added
    return ", ".join(out)


def _split_terms(text: str) -> list[str]:
    return [term for term in re.split(r"[,;\n]+", _clean_keep_lines(text)) if term.strip()]


def _clean_keep_lines(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")
    return "".join(
        ch if ch == "\n" else " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )


# --- Validation -------------------------------------------------------------------------------------
def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return number


def _check(
    defaults: ShotDefaults, model_family: str, duration_seconds: float, aspect_ratio: str
) -> tuple[str, float | None, float | None, float | None]:
    if model_family not in PROMPT_STYLES:
        raise ValueError(
            f"Unknown model family {model_family!r}; expected one of {', '.join(PROMPT_STYLES)}."
        )
    if defaults.camera_movement and defaults.camera_movement not in MOVEMENTS:
        raise ValueError(
            f"Unknown camera movement {defaults.camera_movement!r}; expected one of {', '.join(MOVEMENTS)}."
        )
    strength = _number(defaults.movement_strength, "movement_strength")
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise ValueError(f"movement_strength must be between 0 and 1, got {strength:g}.")
    focal = _number(defaults.focal_length_mm, "focal_length_mm")
    if focal is not None and focal <= 0:
        raise ValueError(f"focal_length_mm must be positive, got {focal:g}.")
    aperture = _number(defaults.aperture, "aperture")
    if aperture is not None and aperture <= 0:
        raise ValueError(f"aperture must be a positive f-number, got {aperture:g}.")
    duration = _number(duration_seconds, "duration_seconds")
    if duration is None or duration <= 0:
        raise ValueError(f"duration_seconds must be positive, got {duration_seconds!r}.")
    if aspect_ratio not in FRAMINGS:
        raise ValueError(f"Unknown aspect ratio {aspect_ratio!r}; expected one of {', '.join(FRAMINGS)}.")
    problems = (
        template_problems(defaults.prompt_template, needs_subject=False) if defaults.prompt_template else []
    )
    if problems:
        raise ValueError(problems[0])
    return PROMPT_STYLES[model_family], strength, focal, aperture


# --- The planner ------------------------------------------------------------------------------------
def plan_shot(
    *,
    defaults: ShotDefaults,
    user_text: str | None,
    model_family: str,
    subject: str,
    duration_seconds: float,
    aspect_ratio: str,
    subject_is_token: bool = False,
) -> ShotPlan:
    """The shot plan for one generation. Raises ValueError for bad input (unknown family, movement,
    aspect ratio; strength outside 0..1; a template that does not parse; nothing to describe).

    `subject_is_token`: the subject is a trained trigger token (a Soul ID's "sks person"), written
    exactly as trained, never capitalised at the start of a sentence (the tokenizer is case-sensitive)."""
    # 1. Check inputs
    style, trend_strength, trend_focal, trend_aperture = _check(
        defaults, model_family, duration_seconds, aspect_ratio
    )
    text = sanitize_user_text(user_text)
    subject = _clean(subject, max_chars=SUBJECT_MAX_CHARS)

    # 2. Read the user's text: explicit camera words and intents, each in table order
    spans: list[tuple[int, int]] = []
    words_text = text.replace("\u2019", "'")  # same length: spans index both
    explicit_movements = _matches(_MOVEMENT_PATTERNS, words_text, spans)
    explicit_speeds = _matches(_SPEED_PATTERNS, words_text, spans)
    intents = [_INTENTS_BY_NAME[name] for name in _matches(_INTENT_PATTERNS, words_text, spans)]
    only_direction = _is_only_direction(words_text, spans)

    def from_intents(attr: str) -> Any:
        return _first(*(getattr(intent, attr) for intent in intents))

    # 3. Resolve each field: explicit words > intents in order > trend defaults > fallbacks
    camera_body = _first(from_intents("camera_body"), _clean(defaults.camera_body, max_chars=64))
    camera_body = camera_body or FALLBACK_CAMERA_BODY
    lens_intent = next((intent for intent in intents if intent.lens), None)
    if lens_intent is not None:
        lens_spec = LENSES[lens_intent.lens]
        lens = lens_spec.name
        focal = float(lens_intent.focal_length_mm or lens_spec.default_focal)
        aperture = lens_intent.aperture or lens_spec.default_aperture
    else:
        lens = _clean(defaults.lens, max_chars=64)
        kind = next(iter(_matches(_LENS_PATTERNS, lens, [])), None)
        if kind is None:
            kind = _lens_kind_for_focal(round(trend_focal)) if trend_focal else "standard"
        lens_spec = LENSES[kind]
        lens = lens or lens_spec.name
        focal = trend_focal or float(lens_spec.default_focal)
        aperture = trend_aperture or lens_spec.default_aperture
    focal_mm = int(round(min(max(focal, lens_spec.focal_range[0]), lens_spec.focal_range[1])))
    aperture = round(min(max(aperture, lens_spec.aperture_range[0]), lens_spec.aperture_range[1]), 1)

    movement = _first(
        next(iter(explicit_movements), None), from_intents("movement"), defaults.camera_movement
    )
    movement = movement or FALLBACK_MOVEMENT
    strength = trend_strength if trend_strength is not None else FALLBACK_STRENGTH
    strength += sum(intent.strength_delta for intent in intents)
    pacing = from_intents("pacing") or FALLBACK_PACING
    if explicit_speeds:
        strength, pacing = _SPEEDS_BY_NAME[explicit_speeds[0]]
    strength = round(min(max(strength, 0.0), 1.0), 2)
    slower = sum(1 for seconds in SLOWER_PACING_FROM_SECONDS if duration_seconds >= seconds)
    pacing = PACINGS[max(PACINGS.index(pacing) - slower, 0)]

    lighting = _first(from_intents("lighting"), _clean(defaults.lighting, max_chars=120)) or FALLBACK_LIGHTING
    color_mood = _first(from_intents("color_mood"), _clean(defaults.mood, max_chars=120)) or FALLBACK_MOOD
    keywords = list(dict.fromkeys(keyword for intent in intents for keyword in intent.keywords))

    # 4. The main action: the trend's template with its slots filled, or the subject and the text
    # "a Cooke S4 50mm at 50mm" says the focal length twice: leave it out when the lens names it
    at_focal = "" if re.search(rf"(?<!\d){focal_mm}\s?mm\b", lens, re.I) else f" at {focal_mm}mm"
    camera = f"shot on {camera_body} with {_with_article(lens)}{at_focal}, f/{aperture:g}"
    words = _strength_words(strength)
    slots = {
        "subject": subject,
        "camera": camera,
        "movement": _MOVEMENT_WAN[movement].format(**words),
        "lighting": lighting,
        "mood": color_mood,
    }
    template = (defaults.prompt_template or "").strip()
    user_part = "" if (only_direction and (template or subject)) else text
    if template:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        action = template_render(template, user_prompt=user_part, **slots)
        if "user_prompt" in used:
            user_part = ""
    else:
        used = {"subject"}
        action = ", ".join(part for part in (subject, user_part) if part)
        user_part = ""
    if not (action or user_part):
        raise ValueError("Nothing to describe: give a prompt template, a subject or a prompt.")

    # 5. Write the prompt in the family's style (dropping style keywords only if the action would not
    #    fit otherwise), then the negative prompt
    if style == "wan":
        fixed = [
            slots["movement"] if "movement" not in used else "",
            camera if "camera" not in used else "",
            f"lit by {lighting}" if "lighting" not in used else "",
            color_mood if "mood" not in used else "",
            _PACING_WAN[pacing],
            FRAMINGS[aspect_ratio],
        ]

        def tail_for(applied: list[str]) -> str:
            return ", ".join(part for part in (*fixed, *applied) if part)

    else:
        fixed = [
            _MOVEMENT_LTX[movement].format(**words) if "movement" not in used else "",
            _sentence(camera) if "camera" not in used else "",
            f"The scene is lit by {lighting}." if "lighting" not in used else "",
            f"The mood is {color_mood}." if "mood" not in used else "",
            _PACING_LTX[pacing],
            _sentence(FRAMINGS[aspect_ratio]),
        ]

        def tail_for(applied: list[str]) -> str:
            style_sentence = _sentence("The style is " + ", ".join(applied)) if applied else ""
            return " ".join(part for part in (*fixed, style_sentence) if part)

    applied = keywords[:MAX_STYLE_KEYWORDS]
    while applied and PROMPT_MAX_WORDS[style] - len(tail_for(applied).split()) < MIN_ACTION_WORDS:
        applied = applied[:-1]
    tail = tail_for(applied)
    budget_words = PROMPT_MAX_WORDS[style] - len(tail.split())
    budget_chars = PROMPT_MAX_CHARS - len(tail) - 8
    action = _truncate(action, words=budget_words, chars=budget_chars)
    user_part = _truncate(
        user_part, words=budget_words - len(action.split()), chars=budget_chars - len(action)
    )
    verbatim = subject if subject_is_token else ""
    if style == "wan":
        prompt = _sentence(", ".join(part for part in (action, user_part, tail) if part), verbatim=verbatim)
    else:
        prompt = " ".join(_sentence(part, verbatim=verbatim) for part in (action, user_part, tail) if part)

    negative_prompt = _merge_terms(
        NEGATIVE_BASE[style],
        _split_terms(defaults.negative_prompt),
        [term for intent in intents for term in intent.negatives],
        max_chars=NEGATIVE_MAX_CHARS,
    )

    return ShotPlan(
        camera_body=camera_body,
        lens=lens,
        focal_length_mm=focal_mm,
        aperture=float(aperture),
        movement=movement,
        movement_strength=strength,
        lighting=lighting,
        color_mood=color_mood,
        pacing=pacing,
        prompt=prompt,
        negative_prompt=negative_prompt,
        model_family=model_family,
        style_keywords=applied,
        intents=[intent.name for intent in intents],
    )
