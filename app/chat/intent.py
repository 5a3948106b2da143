"""Auto mode: read a chat message and pick the task and its input with deterministic rules.

"find the cars" → open-vocabulary detection of `cars`; "read box 3" → region OCR on box 3; "is this a cat
or a dog?" → zero-shot with those labels. The rules are ordered, most specific first; a few German
phrasings are understood too. What the rules decided is always shown to the user (`Intent.described`),
so a wrong guess is one picker click from fixed. No model and no network here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.chat.inputs import find_box_reference, find_coordinates
from app.core.errors import InvalidInput
from app.core.tasks import REGISTRY

AUTO_KEY = "AUTO"


@dataclass(frozen=True)
class Intent:
    """What a message asks for: a chat task key (`OD`, `CLASSIFY`, …) and the input that task takes."""

    task_key: str
    text: str = ""  # the words for a text task (what to find, labels) or the region reference for a region task
    recognised: bool = True  # False: nothing matched and the default task runs

    def described(self, task_name: str) -> str:
        """ "Open-vocabulary detection of *cars*": how the message was understood, in markdown."""
        name = _escape(task_name)
        if not self.text:
            return name
        spec = REGISTRY.find(self.task_key)
        if spec is not None and spec.needs_region:
            number = find_box_reference(self.text)
            return f"{name} of box {number}" if number is not None else name
        return f"{name} of *{_escape(self.text)}*"


_MD_RE = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def _escape(text: str) -> str:
    return _MD_RE.sub(r"\\\1", " ".join(text.split()))


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


# -- the vocabulary, English and German ---------------------------------------------------------------------
_READ = _words(r"read", r"ocr", r"transcribe", r"text", r"says?", r"written", r"writing", r"lies", r"lesen",
               r"texte?s?", r"steht", r"schrift")  # fmt: skip
_WHERE = _words(r"where", r"locations?", r"positions?", r"regions?", r"boxes", r"boxe?", r"coordinates",
                r"wo", r"positionen?")  # fmt: skip
_SEGMENT = re.compile(
    r"\b(?:segment(?:ation)?(?:\s+of)?|segmentiere|mask(?:\s+(?:of|for))?|maskiere|outline|cut\s+out|freistellen)\b\s*",
    re.IGNORECASE,
)
_CATEGORY = _words(r"category", r"what\s+kind", r"what\s+type", r"kategorie", r"was\s+für")
_CLASSIFY = _words(r"classify", r"classification", r"imagenet", r"klassifiziere?n?", r"klassifikation",
                   r"what\s+class(?:es)?")  # fmt: skip
_EVERYTHING = re.compile(
    r"\b(?:detect|find|list|show|label|locate|mark|box|finde|erkenne|zeige?)\b.*"
    r"\b(?:everything|all\s+(?:the\s+)?objects|every\s+object|objects|things|alles|alle\s+objekte|objekte)\b"
    r"|^\s*(?:object\s+)?detection\s*$|^\s*detect\s*$|^\s*objekterkennung\s*$"
    r"|\bwhat\s+objects\b|\bwhich\s+objects\b|\bwelche\s+objekte\b",
    re.IGNORECASE,
)
_DENSE = _words(r"dense", r"each\s+region", r"every\s+region", r"each\s+part", r"every\s+part",
                r"each\s+object", r"every\s+object", r"jede\s+region", r"jedes\s+objekt")  # fmt: skip
_DESCRIBE_AND_LOCATE = re.compile(
    r"\b(?:describe|caption|beschreibe?)\b.*\b(?:and|und)\b.*"
    r"\b(?:ground|locate|show\s+where|point\s+(?:\w+\s+)?out|mark|box|zeige?\s+wo|verorte)",
    re.IGNORECASE,
)  # the cascaded caption + grounding task
_PROPOSAL = _words(r"proposals?", r"propose", r"candidate\s+(?:boxes|regions)", r"vorschläge")
_GROUND = re.compile(r"^\s*(?:ground(?:ing)?|verorte)\b\s*:?\s*", re.IGNORECASE)  # only as the first word
_FIND = re.compile(
    r"^(?:please\s+|can\s+you\s+|could\s+you\s+|bitte\s+)?"
    r"(?:find|locate|detect|spot|highlight|show\s+me|point\s+(?:out|to)|mark|box|count|"
    r"where\s+(?:is|are)|where's|how\s+many|look\s+for|search\s+for|(?:is|are)\s+there|gibt\s+es|"
    r"finde|suche|zeige?\s+mir|wo\s+(?:ist|sind)|markiere|zähle|wie\s+viele)\b\s*",
    re.IGNORECASE,
)
_MORE_DETAIL = _words(r"great\s+detail", r"very\s+detailed", r"paragraph", r"everything\s+about",
                      r"more\s+detail(?:ed)?", r"as\s+much\s+detail",
                      r"thorough(?:ly)?", r"sehr\s+ausführlich")  # fmt: skip
_DETAIL = _words(r"detail(?:ed|s)?", r"describe", r"description", r"ausführlich", r"beschreibe?n?",
                 r"beschreibung")  # fmt: skip
_CAPTION = _words(r"caption", r"what(?:'s|\s+is)\s+(?:in|on|this|that|it|shown|happening|going\s+on)",
                  r"what\s+do\s+you\s+see", r"what\s+can\s+you\s+see", r"summari[sz]e", r"briefly",
                  r"was\s+ist\s+(?:auf|das|zu\s+sehen)", r"was\s+siehst\s+du", r"bildunterschrift")  # fmt: skip
_QUESTION_OR = re.compile(
    r"^(?:is|are|was|does|do|ist|sind|zeigt)\s+(?:this|that|these|those|it|they|there|the\s+\w+|das|es|dies|diese)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_BARE_CHOICE = re.compile(r"^[\w' -]{1,40}(?:,\s*[\w' -]{1,40})*\s+(?:or|oder)\s+[\w' -]{1,40}\??$", re.IGNORECASE)
_OR_SPLIT = re.compile(r"\s*(?:,|\bor\b|\boder\b)\s*", re.IGNORECASE)
_TAIL = re.compile(
    r"\s*\b(?:in|on|from|of|im|auf|in\s+dem)\s+(?:this|the|that|dem|diesem|das)?\s*(?:[\w-]+\s+){0,2}"
    r"(?:image|picture|photo|pic|bild|foto)s?\b.*$"
    r"|\s*\b(?:here|hier|please|bitte|for\s+me)\b\s*$",
    re.IGNORECASE,
)
_LEAD_ARTICLE = re.compile(
    r"^(?:(?:all|any|every|the|a|an|alle|die|der|das|den|dem|ein|eine|einen)\s+)+", re.IGNORECASE
)
_TRAILING_VERB = re.compile(r"\s+(?:(?:are|is|sind|ist|gibt\s+es)(?:\s+there|\s+da)?|there|da)\s*$", re.IGNORECASE)
_TEXT_THINGS = re.compile(r"^(?:text|texts|words|writing|letters|lines?\s+of\s+text|schrift|texte?)$", re.IGNORECASE)
_PUNCTUATION = " \t\n?!.:;\"'"


def _subject(text: str) -> str:
    """The thing asked about: "the red cars in this picture?" → "red cars"."""
    subject = text.strip(_PUNCTUATION)
    subject = _TAIL.sub("", subject).strip(_PUNCTUATION)
    subject = _TRAILING_VERB.sub("", subject)
    subject = re.sub(r"^(?:of|for|on|to)\s+", "", subject, flags=re.IGNORECASE)
    return _LEAD_ARTICLE.sub("", subject).strip(_PUNCTUATION)


def _labels(rest: str) -> list[str]:
    """ "a cat or a dog?" → ["a cat", "a dog"]; fewer than two means it is not a choice question."""
    rest = _TAIL.sub("", rest.strip(_PUNCTUATION)).strip(_PUNCTUATION)
    return [part.strip(_PUNCTUATION) for part in _OR_SPLIT.split(rest) if part.strip(_PUNCTUATION)]


def understand(message: str) -> Intent:
    """The task and input a message asks for. An empty or unrecognised message runs a caption."""
    text = " ".join(message.split())
    if not text:
        return Intent("CAPTION", recognised=False)
    region = _region_intent(text)
    if region is not None:
        return region
    lowered = text.lower()
    if (choice := _QUESTION_OR.match(text.rstrip(" ?!."))) and len(labels := _labels(choice.group("rest"))) >= 2:
        return Intent("ZERO_SHOT", ", ".join(labels))
    if _CLASSIFY.search(text):
        after = re.split(r"\b(?:as|into|between|als|in)\b", text, maxsplit=1)
        labels = _labels(after[1]) if len(after) == 2 else []
        return Intent("ZERO_SHOT", ", ".join(labels)) if len(labels) >= 2 else Intent("CLASSIFY")
    # "cat or dog?": a bare choice, unless it names a task ("read the text or describe it").
    asks_task = _READ.search(text) or _FIND.match(text) or _SEGMENT.search(text) or _DETAIL.search(text)
    if not asks_task and _BARE_CHOICE.match(text) and len(labels := _labels(text)) >= 2:
        return Intent("ZERO_SHOT", ", ".join(labels))
    find = _FIND.match(text)
    if _READ.search(text) and (find is None or _TEXT_THINGS.match(_subject(text[find.end() :]))):
        return Intent("OCR_WITH_REGION" if _WHERE.search(text) or find else "OCR")
    if (segment := _SEGMENT.search(text)) and (thing := _subject(text[segment.end() :])):
        return Intent("REFERRING_EXPRESSION_SEGMENTATION", thing)
    if (ground := _GROUND.search(text)) and (phrase := text[ground.end() :].strip(_PUNCTUATION)):
        return Intent("CAPTION_TO_PHRASE_GROUNDING", phrase)
    if _DESCRIBE_AND_LOCATE.search(text):
        return Intent("CAPTION_GROUNDING")
    if _PROPOSAL.search(text):
        return Intent("REGION_PROPOSAL")
    if _DENSE.search(text) and ("caption" in lowered or "describe" in lowered or "beschreib" in lowered):
        return Intent("DENSE_REGION_CAPTION")
    if _EVERYTHING.search(text):
        return Intent("OD")
    if find and (thing := _subject(text[find.end() :])):
        return Intent("OPEN_VOCABULARY_DETECTION", thing)
    if _MORE_DETAIL.search(text):
        return Intent("MORE_DETAILED_CAPTION")
    if _DETAIL.search(text):
        return Intent("DETAILED_CAPTION")
    if _CAPTION.search(text):
        return Intent("CAPTION")
    return Intent("CAPTION", recognised=False)


def _region_intent(text: str) -> Intent | None:
    """A message naming a box (`box 2`, `#2`) or typed coordinates asks about that region."""
    try:
        named = find_box_reference(text) is not None or find_coordinates(text) is not None
    except InvalidInput:
        named = True  # malformed coordinates: the region task explains what it expects
    if not named:
        return None
    if _READ.search(text):
        return Intent("REGION_TO_OCR", text)
    if _SEGMENT.search(text):
        return Intent("REGION_TO_SEGMENTATION", text)
    if _CATEGORY.search(text):
        return Intent("REGION_TO_CATEGORY", text)
    return Intent("REGION_TO_DESCRIPTION", text)
