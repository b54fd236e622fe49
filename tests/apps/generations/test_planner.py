"""The shot planner (apps/generations/planner.py): a pure function, tested through its public API."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from decimal import Decimal
from pathlib import Path

import pytest

from apps.generations.planner import (
    INTENTS,
    LENSES,
    MOVEMENTS,
    NEGATIVE_BASE,
    PACINGS,
    PLAN_VERSION,
    PROMPT_MAX_CHARS,
    PROMPT_MAX_WORDS,
    USER_TEXT_MAX_CHARS,
    ShotDefaults,
    ShotPlan,
    plan_shot,
    sanitize_user_text,
)
from apps.trends.models import CameraMovement
from gpu_worker.contract import MAX_PROMPT_CHARS

REPO = Path(__file__).resolve().parents[3]

TREND = ShotDefaults(
    prompt_template="{subject} dancing in the rain on a city street",
    negative_prompt="cartoon",
    camera_body="Sony Venice",
    lens="Cooke S4 prime",
    focal_length_mm=50,
    aperture=Decimal("2.8"),
    camera_movement="orbit",
    movement_strength=0.5,
    lighting="wet street reflections",
    mood="cool blue night",
)
FREE = ShotDefaults()


def plan(
    text: str | None = None,
    *,
    defaults: ShotDefaults = FREE,
    family: str = "wan22",
    subject: str = "a young woman",
    duration: float = 5,
    aspect: str = "PORTRAIT_9_16",
) -> ShotPlan:
    return plan_shot(
        defaults=defaults,
        user_text=text,
        model_family=family,
        subject=subject,
        duration_seconds=duration,
        aspect_ratio=aspect,
    )


def negatives(p: ShotPlan) -> list[str]:
    return p.negative_prompt.split(", ")


# --- Intents ----------------------------------------------------------------------------------------
# text -> (intent, lens, focal, aperture, movement, pacing, a prompt keyword, a negative term)
INTENT_CASES = [
    (
        "make it feel premium",
        "premium",
        "anamorphic lens",
        50,
        2.0,
        "dolly_in",
        "slow",
        "polished",
        "cheap look",
    ),
    ("Luxury vibes", "premium", "anamorphic lens", 50, 2.0, "dolly_in", "slow", "polished", "cheap look"),
    (
        "more dramatic",
        "dramatic",
        "wide-angle lens",
        24,
        2.8,
        "crane",
        "medium",
        "epic scale",
        "flat lighting",
    ),
    ("EPIC", "dramatic", "wide-angle lens", 24, 2.8, "crane", "medium", "epic scale", "flat lighting"),
    ("dreamy", "dreamy", "portrait lens", 85, 1.4, "orbit", "slow", "soft focus", "harsh shadows"),
    ("ethereal please", "dreamy", "portrait lens", 85, 1.4, "orbit", "slow", "soft focus", "harsh shadows"),
    ("hype", "energetic", "wide-angle lens", 20, 4.0, "fpv_arc", "fast", "high energy", "sluggish motion"),
    ("noir", "moody", "standard prime lens", 35, 1.8, "dolly_in", "slow", "chiaroscuro", "flat lighting"),
    (
        "cinematic",
        "cinematic",
        "anamorphic lens",
        40,
        2.8,
        "static",
        "medium",
        "film grain",
        "amateur footage",
    ),
    (
        "retro 90s",
        "vintage",
        "standard prime lens",
        35,
        2.8,
        "handheld",
        "medium",
        "light leaks",
        "digital look",
    ),
    ("romantic", "romantic", "portrait lens", 85, 1.8, "orbit", "slow", "creamy bokeh", "harsh light"),
    ("playful and cute", "playful", "wide-angle lens", 28, 4.0, "handheld", "fast", "lively", "gloomy"),
    ("serene", "calm", "standard prime lens", 50, 2.8, "static", "slow", "tranquil", "shaky camera"),
    ("golden hour", "golden_hour", "standard prime lens", 50, 2.0, "static", "medium", "golden hour", None),
    ("cyberpunk", "neon", "anamorphic lens", 35, 1.8, "static", "medium", "neon-lit night", "daylight"),
    ("editorial", "fashion", "portrait lens", 85, 2.0, "dolly_out", "medium", "high-fashion editorial", None),
    ("candid", "documentary", "standard prime lens", 35, 2.8, "handheld", "medium", "candid moment", "cgi"),
    ("creepy", "horror", "wide-angle lens", 24, 2.0, "dolly_in", "slow", "unsettling atmosphere", "cheerful"),
]


@pytest.mark.parametrize(
    ("text", "intent", "lens", "focal", "aperture", "movement", "pacing", "keyword", "negative"), INTENT_CASES
)
@pytest.mark.parametrize("family", ["wan22", "ltx"])
def test_intent_adjusts_the_plan(
    text, intent, lens, focal, aperture, movement, pacing, keyword, negative, family
):
    p = plan(text, family=family)
    assert p.intents == [intent]
    assert (p.lens, p.focal_length_mm, p.aperture, p.movement, p.pacing) == (
        lens,
        focal,
        aperture,
        movement,
        pacing,
    )
    assert keyword in p.style_keywords
    assert keyword in p.prompt
    if negative:
        assert negative in negatives(p)


def test_intent_table_covers_the_brief():
    assert [intent.name for intent in INTENTS][:10] == [
        "premium",
        "dramatic",
        "dreamy",
        "energetic",
        "moody",
        "cinematic",
        "vintage",
        "romantic",
        "playful",
        "calm",
    ]
    assert {case[1] for case in INTENT_CASES} == {intent.name for intent in INTENTS}


def test_tables_are_consistent():
    assert tuple(CameraMovement.values) == MOVEMENTS
    synonyms = [s.casefold() for intent in INTENTS for s in intent.synonyms]
    assert len(synonyms) == len(set(synonyms)), "a synonym belongs to two intents"
    for intent in INTENTS:
        assert intent.movement in (None, *MOVEMENTS), intent.name
        assert intent.pacing in (None, *PACINGS), intent.name
        if intent.lens:
            spec = LENSES[intent.lens]
            assert spec.focal_range[0] <= intent.focal_length_mm <= spec.focal_range[1], intent.name
            assert spec.aperture_range[0] <= intent.aperture <= spec.aperture_range[1], intent.name


@pytest.mark.parametrize(
    ("text", "intents"),
    [
        ("HIGH-END look", ["premium"]),
        ("high end look", ["premium"]),
        ("premiumness", []),  # whole words only
        ("epicentre of the city", []),
        ("ｄｒａｍａｔｉｃ", ["dramatic"]),  # full-width letters are NFKC-normalised first
        ("not dramatic", []),
        ("Not too dreamy", []),
        ("non-dramatic, romantic", ["romantic"]),
        ("don’t be dreamy", []),
    ],
)
def test_intent_matching_rules(text, intents):
    assert plan(text).intents == intents


def test_first_intent_in_table_order_wins_each_field():
    p = plan("calm but energetic")
    assert p.intents == ["energetic", "calm"]
    assert (p.lens, p.focal_length_mm, p.movement, p.pacing) == ("wide-angle lens", 20, "fpv_arc", "fast")
    assert p.lighting == "punchy bright light with vivid highlights"
    assert p.style_keywords == ["dynamic motion", "high energy", "serene", "tranquil"]
    assert p.movement_strength == 0.5  # +0.3 and -0.3 on the fallback 0.5
    assert {"sluggish motion", "shaky camera"} <= set(negatives(p))


# --- Explicit camera words and precedence ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orbit around her", "orbit"),
        ("circling the subject", "orbit"),
        ("360 orbit", "orbit"),
        ("Drone shot over the beach", "drone"),
        ("aerial view", "drone"),
        ("dolly in", "dolly_in"),
        ("slow push-in", "dolly_in"),
        ("pull back to reveal the city", "dolly_out"),
        ("360", "roll_360"),
        ("a 360-degree roll", "roll_360"),
        ("barrel roll", "roll_360"),
        ("FPV", "fpv_arc"),
        ("fpv drone through the crowd", "fpv_arc"),
        ("handheld", "handheld"),
        ("hand-held", "handheld"),
        ("static", "static"),
        ("locked-off frame", "static"),
        ("crane up", "crane"),
    ],
)
def test_explicit_movement_words(text, expected):
    # The trend's own movement differs from the expected one, so the text must have moved it.
    trend = replace(TREND, camera_movement="crane" if expected != "crane" else "static")
    assert plan(text, defaults=trend).movement == expected


def test_explicit_camera_words_beat_intents_which_beat_the_trend():
    dreamy_drone = plan("dreamy drone shot", defaults=TREND)
    assert dreamy_drone.movement == "drone"  # explicit word over the dreamy intent's orbit
    assert dreamy_drone.lens == "portrait lens"  # the intent over the trend's lens
    assert dreamy_drone.lighting == "soft diffused backlight with a gentle bloom"
    assert dreamy_drone.camera_body == "Sony Venice"  # dreamy sets no body: the trend's stays

    premium = plan("make it feel premium", defaults=TREND)
    assert (premium.camera_body, premium.lens, premium.movement) == (
        "ARRI Alexa 35",
        "anamorphic lens",
        "dolly_in",
    )
    assert premium.color_mood == "refined and luxurious, with rich colours and deep blacks"


def test_trend_defaults_pass_through_without_text():
    p = plan(None, defaults=TREND)
    assert (p.camera_body, p.lens, p.focal_length_mm, p.aperture) == (
        "Sony Venice",
        "Cooke S4 prime",
        50,
        2.8,
    )
    assert (p.movement, p.movement_strength, p.lighting, p.color_mood) == (
        "orbit",
        0.5,
        "wet street reflections",
        "cool blue night",
    )
    assert (p.pacing, p.intents, p.style_keywords) == ("medium", [], [])


def test_negated_movement_word_keeps_the_trend_movement():
    assert plan("no handheld, without drone", defaults=TREND).movement == "orbit"


# --- Strength, lens and pacing clamps -------------------------------------------------------------
@pytest.mark.parametrize(
    ("trend_strength", "text", "expected"),
    [
        (0.9, "energetic and dramatic", 1.0),  # 0.9 + 0.3 + 0.2, clamped
        (0.1, "calm", 0.0),  # 0.1 - 0.3, clamped
        (0.6, "dramatic", 0.8),
        (0.2, "fast orbit", 0.85),  # an explicit speed word sets it
        (0.9, "slowly orbit, energetic", 0.25),  # ... and beats the intents' deltas
    ],
)
def test_movement_strength(trend_strength, text, expected):
    p = plan(text, defaults=replace(TREND, movement_strength=trend_strength))
    assert p.movement_strength == expected


def test_explicit_speed_sets_pacing():
    assert plan("fast orbit", defaults=TREND).pacing == "fast"
    assert plan("energetic but slow", defaults=TREND).pacing == "slow"


@pytest.mark.parametrize(
    ("lens", "focal", "aperture", "expected"),
    [
        ("anamorphic", 300, 1.0, ("anamorphic", 135, 1.8)),
        ("", 12, 0.7, ("ultra-wide lens", 12, 2.8)),  # no lens text: the focal length picks the kind
        ("", 200, None, ("telephoto lens", 200, 4.0)),
        ("Zeiss telephoto", 50, 2.8, ("Zeiss telephoto", 135, 2.8)),
        ("portrait prime", 85, 40, ("portrait prime", 85, 16.0)),
        ("", None, None, ("standard prime lens", 50, 2.0)),
    ],
)
def test_focal_length_and_aperture_clamped_per_lens(lens, focal, aperture, expected):
    trend = replace(TREND, lens=lens, focal_length_mm=focal, aperture=aperture)
    p = plan(None, defaults=trend)
    assert (p.lens, p.focal_length_mm, p.aperture) == expected
    assert f"f/{expected[2]:g}" in p.prompt


@pytest.mark.parametrize(
    ("duration", "pacing"), [(3, "fast"), (5, "fast"), (8, "medium"), (15, "slow"), (60, "slow")]
)
def test_longer_clips_slow_the_pacing(duration, pacing):
    assert plan("energetic", duration=duration).pacing == pacing


# --- Determinism ----------------------------------------------------------------------------------
def test_same_input_gives_the_same_plan():
    first = plan("dramatic dreamy orbit, wearing a red dress", defaults=TREND, family="ltx")
    second = plan("dramatic dreamy orbit, wearing a red dress", defaults=TREND, family="ltx")
    assert first == second
    assert json.dumps(asdict(first), sort_keys=True) == json.dumps(asdict(second), sort_keys=True)


@pytest.mark.parametrize("family", ["wan22", "ltx"])
def test_word_order_does_not_change_the_plan(family):
    a = plan("make it dreamy and dramatic, slow orbit", defaults=TREND, family=family)
    b = plan("slow orbit, dramatic and dreamy, make it", defaults=TREND, family=family)
    assert a == b  # pure direction: even the prompts agree
    c = plan("dramatic, in a red dress", defaults=TREND, family=family)
    d = plan("in a red dress, dramatic", defaults=TREND, family=family)
    assert asdict(c) | {"prompt": ""} == asdict(d) | {"prompt": ""}


# --- Prompts per family ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["tiny-wan", "wan", "wan22"])
def test_wan_prompt_is_one_dense_sentence(family):
    p = plan("make it premium", defaults=TREND, family=family)
    assert p.prompt.startswith("A young woman dancing in the rain on a city street, ")
    assert p.prompt.endswith(".") and p.prompt.count(".") == 1
    assert "shot on ARRI Alexa 35 with an anamorphic lens at 50mm, f/2" in p.prompt
    assert f"lit by {p.lighting}" in p.prompt
    assert "smooth dolly-in toward the subject" in p.prompt
    assert "vertical 9:16 framing" in p.prompt
    assert len(p.prompt.split()) <= PROMPT_MAX_WORDS["wan"]
    assert negatives(p)[: len(NEGATIVE_BASE["wan"])] == list(NEGATIVE_BASE["wan"])


def test_ltx_prompt_is_a_chronological_paragraph_starting_with_the_action():
    p = plan("dramatic", defaults=TREND, family="ltx", aspect="LANDSCAPE_16_9")
    assert p.prompt.startswith("A young woman dancing in the rain on a city street. ")
    order = [
        "The camera quickly cranes upward",  # 0.5 + 0.2 from dramatic
        "Shot on Sony Venice with a wide-angle lens at 24mm, f/2.8.",
        f"The scene is lit by {p.lighting}.",
        f"The mood is {p.color_mood}.",
        "Widescreen 16:9 framing.",
    ]
    positions = [p.prompt.index(part) for part in order]
    assert positions == sorted(positions)
    assert len(p.prompt.split()) <= PROMPT_MAX_WORDS["ltx"] < 200
    assert negatives(p)[: len(NEGATIVE_BASE["ltx"])] == list(NEGATIVE_BASE["ltx"])


@pytest.mark.parametrize(
    ("strength", "wan", "ltx"),
    [
        (0.1, "slow, subtle orbit around the subject", "The camera slowly orbits around the subject."),
        (0.5, "smooth orbit around the subject", "The camera smoothly orbits around the subject."),
        (0.9, "fast, sweeping orbit around the subject", "The camera quickly orbits around the subject."),
    ],
)
def test_movement_strength_is_described(strength, wan, ltx):
    trend = replace(TREND, movement_strength=strength)
    assert wan in plan(None, defaults=trend, family="wan22").prompt
    assert ltx in plan(None, defaults=trend, family="ltx").prompt


MOVEMENT_PHRASES = {
    "static": ("static locked-off camera", "The camera is locked off and static."),
    "dolly_in": ("dolly-in toward the subject", "dollies in toward the subject."),
    "dolly_out": ("dolly-out away from the subject", "dollies out, pulling away from the subject."),
    "drone": ("aerial drone shot", "rises as an aerial drone shot"),
    "orbit": ("orbit around the subject", "orbits around the subject."),
    "roll_360": ("360-degree camera roll", "rolls a full 360 degrees"),
    "fpv_arc": ("FPV drone arc around the subject", "in an FPV drone arc."),
    "handheld": ("handheld camera with natural shake", "The camera is handheld, with natural shake."),
    "crane": ("crane shot rising upward", "cranes upward"),
}


@pytest.mark.parametrize("movement", MOVEMENTS)
def test_every_movement_is_written_for_both_families(movement):
    trend = replace(TREND, camera_movement=movement)
    wan, ltx = MOVEMENT_PHRASES[movement]
    assert wan in plan(None, defaults=trend, family="wan22").prompt
    assert ltx in plan(None, defaults=trend, family="ltx").prompt


def test_template_slots_are_filled_and_not_repeated():
    trend = replace(TREND, prompt_template="{subject} on a rooftop, {camera}, {mood} tones, {user_prompt}")
    for family in ("wan22", "ltx"):
        p = plan("in a red dress, cinematic", defaults=trend, family=family, subject="a man")
        assert p.prompt.count("shot on") + p.prompt.count("Shot on") == 1
        assert p.prompt.count(p.color_mood) == 1
        assert p.prompt.count("in a red dress") == 1
        assert p.prompt.startswith("A man on a rooftop, shot on ARRI Alexa Mini LF")


def test_lens_text_that_names_the_focal_length_is_not_repeated():
    p = plan(None, defaults=replace(TREND, lens="Cooke S4 50mm"))
    assert "with a Cooke S4 50mm, f/2.8" in p.prompt


@pytest.mark.parametrize("family", ["wan22", "ltx"])
def test_pure_direction_is_left_out_of_a_trend_prompt(family):
    p = plan("Make it feel a bit more premium!", defaults=TREND, family=family)
    assert "make it" not in p.prompt.lower()
    kept = plan("premium, holding a bouquet of roses", defaults=TREND, family=family)
    assert "holding a bouquet of roses" in kept.prompt


@pytest.mark.parametrize("family", ["wan22", "ltx"])
def test_free_prompt_without_a_trend(family):
    p = plan("a cat astronaut floating in space", defaults=FREE, family=family, subject="")
    assert p.prompt.startswith("A cat astronaut floating in space")
    assert (p.camera_body, p.lens, p.focal_length_mm, p.aperture) == (
        "digital cinema camera",
        "standard prime lens",
        50,
        2.0,
    )
    assert (p.movement, p.movement_strength, p.lighting, p.pacing) == (
        "static",
        0.5,
        "soft natural light",
        "medium",
    )
    assert negatives(p) == list(NEGATIVE_BASE["wan" if family == "wan22" else "ltx"])


def test_free_prompt_of_pure_direction_is_the_action():
    p = plan("dramatic", defaults=FREE, subject="")
    assert p.prompt.startswith("Dramatic, ")
    assert p.intents == ["dramatic"]


@pytest.mark.parametrize("family", ["wan22", "ltx"])
def test_long_input_stays_under_the_limits_and_keeps_camera_and_lighting(family):
    every_intent = " ".join(intent.synonyms[0] for intent in INTENTS)
    trend = replace(TREND, prompt_template="{subject} " + "walks along the shore " * 80)
    p = plan(every_intent + " " + "word " * 2000, defaults=trend, family=family)
    style = "wan" if family == "wan22" else "ltx"
    assert len(p.prompt.split()) <= PROMPT_MAX_WORDS[style]
    assert len(p.prompt) <= PROMPT_MAX_CHARS <= MAX_PROMPT_CHARS
    assert len(p.negative_prompt) <= MAX_PROMPT_CHARS
    assert p.prompt.startswith("A young woman walks along the shore")
    assert p.camera_body in p.prompt and p.lighting in p.prompt
    assert 0 < len(p.style_keywords) <= 8
    assert all(keyword in p.prompt for keyword in p.style_keywords)


# --- Negative prompt ------------------------------------------------------------------------------
def test_negatives_merged_without_duplicates_in_stable_order():
    trend = replace(TREND, negative_prompt="Blurry, cartoon;  watermark\nugly\tface , cartoon,,")
    p = plan("moody", defaults=trend, family="ltx")
    assert negatives(p) == [
        *NEGATIVE_BASE["ltx"],
        "cartoon",
        "ugly face",
        "bright cheerful colours",
        "flat lighting",
    ]


def test_user_text_never_reaches_the_negative_prompt():
    p = plan("in a red dress --no hats", defaults=TREND)
    assert "in a red dress" in p.prompt
    assert "hats" not in p.prompt and "hats" not in p.negative_prompt
    q = plan("smiling. Negative prompt: umbrellas", defaults=TREND)
    assert "umbrellas" not in q.prompt and "umbrellas" not in q.negative_prompt


# --- The user's text ------------------------------------------------------------------------------
def test_sanitising_strips_control_characters_and_collapses_whitespace():
    assert sanitize_user_text("a\x00 red\t\n  dress\u200b\u202e\x7f ") == "a red dress"


def test_very_long_text_is_capped_on_a_word_boundary():
    text = sanitize_user_text("sunset " * 1000)
    assert len(text) <= USER_TEXT_MAX_CHARS
    assert text.endswith("sunset") and "  " not in text


def test_unicode_text_is_kept():
    p = plan("Ночной город, девушка танцует 🌃", defaults=TREND, family="ltx")
    assert "Ночной город, девушка танцует 🌃" in p.prompt
    assert p.intents == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00\x01"])
def test_empty_text_is_the_same_as_none(text):
    assert plan(text, defaults=TREND) == plan(None, defaults=TREND)


# --- Bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "sdxl"}, "Unknown model family 'sdxl'"),
        ({"defaults": replace(TREND, camera_movement="zoom")}, "Unknown camera movement 'zoom'"),
        ({"defaults": replace(TREND, movement_strength=1.5)}, "movement_strength must be between 0 and 1"),
        ({"defaults": replace(TREND, movement_strength=-0.1)}, "movement_strength must be between 0 and 1"),
        ({"defaults": replace(TREND, movement_strength=float("nan"))}, "movement_strength must be a finite"),
        ({"defaults": replace(TREND, focal_length_mm=0)}, "focal_length_mm must be positive"),
        ({"defaults": replace(TREND, aperture=0)}, "aperture must be a positive f-number"),
        ({"aspect": "4:3"}, "Unknown aspect ratio '4:3'"),
        ({"duration": 0}, "duration_seconds must be positive"),
        ({"defaults": replace(TREND, prompt_template="{subject} {bogus}")}, "unknown slots: {bogus}"),
        ({"defaults": FREE, "subject": ""}, "Nothing to describe"),
    ],
)
def test_bad_input_raises_a_concise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        plan(None, **kwargs)


# --- Storage --------------------------------------------------------------------------------------
def test_plan_round_trips_through_json():
    p = plan("dreamy orbit", defaults=TREND, family="ltx")
    stored = json.loads(json.dumps(asdict(p)))
    assert stored["version"] == PLAN_VERSION
    assert ShotPlan.from_dict(stored) == p
    assert ShotPlan.from_dict(stored | {"added_later": 1}) == p
    with pytest.raises(ValueError, match="newer than this code"):
        ShotPlan.from_dict(stored | {"version": PLAN_VERSION + 1})
    with pytest.raises(ValueError, match="Malformed shot plan"):
        ShotPlan.from_dict({"version": PLAN_VERSION, "prompt": "x"})


def test_aspect_ratio_spellings_are_equivalent():
    assert plan(None, defaults=TREND, aspect="SQUARE_1_1") == plan(None, defaults=TREND, aspect="1:1")
    assert "square 1:1 framing" in plan(None, defaults=TREND, aspect="1:1").prompt


def test_planner_imports_no_django():
    code = (
        "import sys, apps.generations.planner; "
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
