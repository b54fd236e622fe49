"""What a push says, in the device's language.

Plain dict catalogues: one entry per locale with a title and a body per kind, and the failure reasons a
push may name. A device's locale tag (`pt-BR`, `pt_BR`, `en-US`, `de_DE.UTF-8`) is matched most specific
first (`pt-BR`, then `pt`), then English. `pt` is Brazilian Portuguese, as on iOS and Android; European
Portuguese is `pt-PT`.

Params (checked when a push is created, so a mistake fails in the caller, not in a worker):

- `trend_title` (generations) and `character_name` (Soul IDs): a string, or a dict of locale to text that
  is matched like the device's locale (an admin-translated title); shortened to `MAX_PARAM_CHARS`.
- `reason` (the failed kinds, optional): a code of `REASON_CODES`, said in the device's language; without
  one the generic reason (`INTERNAL`) is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .models import PushKind

DEFAULT_LOCALE = "en"
MAX_PARAM_CHARS = 60

# What each kind needs and accepts.
REQUIRED_PARAMS: dict[str, frozenset[str]] = {
    PushKind.GENERATION_SUCCEEDED: frozenset({"trend_title"}),
    PushKind.GENERATION_FAILED: frozenset({"trend_title"}),
    PushKind.CHARACTER_READY: frozenset({"character_name"}),
    PushKind.CHARACTER_FAILED: frozenset({"character_name"}),
}
OPTIONAL_PARAMS: dict[str, frozenset[str]] = {
    PushKind.GENERATION_SUCCEEDED: frozenset(),
    PushKind.GENERATION_FAILED: frozenset({"reason"}),
    PushKind.CHARACTER_READY: frozenset(),
    PushKind.CHARACTER_FAILED: frozenset({"reason"}),
}

# Failure reasons a push can name (safe to show: they say what happened, never how).
REASON_CODES = ("MODERATION", "QUALITY", "TIMED_OUT", "BAD_INPUT", "INTERNAL")
GENERIC_REASON = "INTERNAL"

NBSP = "\u00a0"

# locale -> kind -> (title, body); locale -> reason code -> sentence.
TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        PushKind.GENERATION_SUCCEEDED: ("Your video is ready", "“{trend_title}” is ready to watch."),
        PushKind.GENERATION_FAILED: (
            "Your video couldn’t be made",
            "“{trend_title}”: {reason} You were not charged.",
        ),
        PushKind.CHARACTER_READY: (
            "Your Soul ID is ready",
            "“{character_name}” is trained and ready to use in any trend.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Your Soul ID couldn’t be trained",
            "“{character_name}”: {reason} You were not charged.",
        ),
    },
    "es": {
        PushKind.GENERATION_SUCCEEDED: ("Tu vídeo está listo", "«{trend_title}» ya se puede ver."),
        PushKind.GENERATION_FAILED: (
            "No pudimos crear tu vídeo",
            "«{trend_title}»: {reason} No se te ha cobrado nada.",
        ),
        PushKind.CHARACTER_READY: (
            "Tu Soul ID está listo",
            "«{character_name}» está entrenado y listo para usar en cualquier tendencia.",
        ),
        PushKind.CHARACTER_FAILED: (
            "No pudimos entrenar tu Soul ID",
            "«{character_name}»: {reason} No se te ha cobrado nada.",
        ),
    },
    "pt": {  # Brazilian Portuguese (the plain `pt` of iOS and Android)
        PushKind.GENERATION_SUCCEEDED: ("Seu vídeo está pronto", "“{trend_title}” já pode ser assistido."),
        PushKind.GENERATION_FAILED: (
            "Não conseguimos criar seu vídeo",
            "“{trend_title}”: {reason} Você não foi cobrado.",
        ),
        PushKind.CHARACTER_READY: (
            "Seu Soul ID está pronto",
            "“{character_name}” foi treinado e está pronto para usar em qualquer trend.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Não conseguimos treinar seu Soul ID",
            "“{character_name}”: {reason} Você não foi cobrado.",
        ),
    },
    "pt-PT": {
        PushKind.GENERATION_SUCCEEDED: ("O seu vídeo está pronto", "“{trend_title}” já pode ser visto."),
        PushKind.GENERATION_FAILED: (
            "Não foi possível criar o seu vídeo",
            "“{trend_title}”: {reason} Não lhe foi cobrado nada.",
        ),
        PushKind.CHARACTER_READY: (
            "O seu Soul ID está pronto",
            "“{character_name}” foi treinado e está pronto a usar em qualquer tendência.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Não foi possível treinar o seu Soul ID",
            "“{character_name}”: {reason} Não lhe foi cobrado nada.",
        ),
    },
    "fr": {
        PushKind.GENERATION_SUCCEEDED: (
            "Votre vidéo est prête",
            f"Votre vidéo «{NBSP}{{trend_title}}{NBSP}» est prête à être regardée.",
        ),
        PushKind.GENERATION_FAILED: (
            "Impossible de créer votre vidéo",
            f"«{NBSP}{{trend_title}}{NBSP}»{NBSP}: {{reason}} Aucun crédit n’a été débité.",
        ),
        PushKind.CHARACTER_READY: (
            "Votre Soul ID est prêt",
            f"«{NBSP}{{character_name}}{NBSP}» est entraîné et prêt à être utilisé dans toutes "
            "les tendances.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Impossible d’entraîner votre Soul ID",
            f"«{NBSP}{{character_name}}{NBSP}»{NBSP}: {{reason}} Aucun crédit n’a été débité.",
        ),
    },
    "de": {
        PushKind.GENERATION_SUCCEEDED: (
            "Dein Video ist fertig",
            "„{trend_title}“ kann jetzt angesehen werden.",
        ),
        PushKind.GENERATION_FAILED: (
            "Dein Video konnte nicht erstellt werden",
            "„{trend_title}“: {reason} Dir wurde nichts berechnet.",
        ),
        PushKind.CHARACTER_READY: (
            "Deine Soul ID ist bereit",
            "„{character_name}“ ist trainiert und kann in jedem Trend verwendet werden.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Deine Soul ID konnte nicht trainiert werden",
            "„{character_name}“: {reason} Dir wurde nichts berechnet.",
        ),
    },
    "it": {
        PushKind.GENERATION_SUCCEEDED: ("Il tuo video è pronto", "«{trend_title}» è pronto da guardare."),
        PushKind.GENERATION_FAILED: (
            "Non è stato possibile creare il tuo video",
            "«{trend_title}»: {reason} Non ti è stato addebitato nulla.",
        ),
        PushKind.CHARACTER_READY: (
            "Il tuo Soul ID è pronto",
            "«{character_name}» è addestrato e pronto da usare in qualsiasi trend.",
        ),
        PushKind.CHARACTER_FAILED: (
            "Non è stato possibile addestrare il tuo Soul ID",
            "«{character_name}»: {reason} Non ti è stato addebitato nulla.",
        ),
    },
    "ja": {
        PushKind.GENERATION_SUCCEEDED: ("動画が完成しました", "「{trend_title}」を今すぐ再生できます。"),
        PushKind.GENERATION_FAILED: (
            "動画を作成できませんでした",
            "「{trend_title}」：{reason}クレジットは消費されていません。",
        ),
        PushKind.CHARACTER_READY: (
            "Soul IDの準備ができました",
            "「{character_name}」のトレーニングが完了しました。どのトレンドでも使えます。",
        ),
        PushKind.CHARACTER_FAILED: (
            "Soul IDをトレーニングできませんでした",
            "「{character_name}」：{reason}クレジットは消費されていません。",
        ),
    },
}

REASONS: dict[str, dict[str, str]] = {
    "en": {
        "MODERATION": "It didn’t pass our content guidelines.",
        "QUALITY": "The result didn’t meet our quality bar.",
        "TIMED_OUT": "It took too long to finish.",
        "BAD_INPUT": "The photo couldn’t be used.",
        "INTERNAL": "Something went wrong on our side.",
    },
    "es": {
        "MODERATION": "No cumple nuestras normas de contenido.",
        "QUALITY": "El resultado no alcanzó nuestro nivel de calidad.",
        "TIMED_OUT": "Tardó demasiado en terminar.",
        "BAD_INPUT": "No se pudo usar la foto.",
        "INTERNAL": "Algo salió mal por nuestra parte.",
    },
    "pt": {
        "MODERATION": "Não passou nas nossas diretrizes de conteúdo.",
        "QUALITY": "O resultado não atingiu nosso padrão de qualidade.",
        "TIMED_OUT": "Demorou demais para terminar.",
        "BAD_INPUT": "Não foi possível usar a foto.",
        "INTERNAL": "Algo deu errado do nosso lado.",
    },
    "pt-PT": {
        "MODERATION": "Não cumpre as nossas regras de conteúdo.",
        "QUALITY": "O resultado não atingiu o nosso nível de qualidade.",
        "TIMED_OUT": "Demorou demasiado tempo a terminar.",
        "BAD_INPUT": "Não foi possível usar a fotografia.",
        "INTERNAL": "Algo correu mal do nosso lado.",
    },
    "fr": {
        "MODERATION": "Le contenu ne respecte pas nos règles.",
        "QUALITY": "Le résultat n’a pas atteint notre niveau de qualité.",
        "TIMED_OUT": "Le traitement a pris trop de temps.",
        "BAD_INPUT": "La photo n’a pas pu être utilisée.",
        "INTERNAL": "Un problème est survenu de notre côté.",
    },
    "de": {
        "MODERATION": "Der Inhalt verstößt gegen unsere Richtlinien.",
        "QUALITY": "Das Ergebnis hat unsere Qualitätsansprüche nicht erfüllt.",
        "TIMED_OUT": "Die Verarbeitung hat zu lange gedauert.",
        "BAD_INPUT": "Das Foto konnte nicht verwendet werden.",
        "INTERNAL": "Bei uns ist etwas schiefgelaufen.",
    },
    "it": {
        "MODERATION": "Il contenuto non rispetta le nostre linee guida.",
        "QUALITY": "Il risultato non ha raggiunto il nostro livello di qualità.",
        "TIMED_OUT": "L’elaborazione ha richiesto troppo tempo.",
        "BAD_INPUT": "Non è stato possibile usare la foto.",
        "INTERNAL": "Si è verificato un problema da parte nostra.",
    },
    "ja": {
        "MODERATION": "コンテンツガイドラインに適合しませんでした。",
        "QUALITY": "仕上がりが品質基準に達しませんでした。",
        "TIMED_OUT": "処理に時間がかかりすぎました。",
        "BAD_INPUT": "写真を使用できませんでした。",
        "INTERNAL": "システムで問題が発生しました。",
    },
}

_TAG_SEPARATORS = re.compile(r"[-_]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Rendered:
    locale: str  # the catalogue locale used
    title: str
    body: str


def _candidates(tag: str | None) -> list[str]:
    """`pt_BR.UTF-8` -> [`pt-br`, `pt`]: lower-case, most specific first."""
    tag = (tag or "").split(".")[0].split("@")[0].strip()
    parts = [part.lower() for part in _TAG_SEPARATORS.split(tag) if part]
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _match(tag: str | None, available: dict[str, Any]) -> str | None:
    lowered = {key.lower(): key for key in available}
    for candidate in _candidates(tag):
        if candidate in lowered:
            return lowered[candidate]
    return None


def resolve_locale(tag: str | None) -> str:
    """The catalogue locale for a device's locale tag: the most specific match, its language, or English."""
    return _match(tag, TEXTS) or DEFAULT_LOCALE


def _text_param(value: str | dict[str, str], tag: str) -> str:
    if isinstance(value, dict):
        key = _match(tag, value) or _match(DEFAULT_LOCALE, value) or next(iter(value))
        value = value[key]
    text = _WHITESPACE.sub(" ", value).strip()
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 1].rstrip() + "…"
    return text


def validate_params(kind: str, params: dict[str, Any]) -> None:
    """Raises ValueError when `params` do not fit `kind` (unknown kind, missing or unknown key, bad value)."""
    if kind not in REQUIRED_PARAMS:
        raise ValueError(f"unknown push kind {kind!r}")
    given = set(params)
    missing = REQUIRED_PARAMS[kind] - given
    unknown = given - REQUIRED_PARAMS[kind] - OPTIONAL_PARAMS[kind]
    if missing or unknown:
        raise ValueError(f"{kind} params: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for key, value in params.items():
        if key == "reason":
            if value is not None and value not in REASON_CODES:
                raise ValueError(f"unknown push reason {value!r}; one of {REASON_CODES}")
        elif isinstance(value, dict):
            if not value or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()
            ):
                raise ValueError(f"{key}: a dict of locale to non-empty text")
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key}: a non-empty string (or a dict of locale to text)")


def render(kind: str, tag: str | None, params: dict[str, Any]) -> Rendered:
    """The title and body of `kind` for a device whose locale tag is `tag`."""
    validate_params(kind, params)
    locale = resolve_locale(tag)
    title, body = TEXTS[locale][kind]
    values = {key: _text_param(value, tag or locale) for key, value in params.items() if key != "reason"}
    if "reason" in OPTIONAL_PARAMS[kind]:
        values["reason"] = REASONS[locale][params.get("reason") or GENERIC_REASON]
    return Rendered(locale=locale, title=title.format(**values), body=body.format(**values))
