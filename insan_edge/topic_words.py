"""Words that stand for a topic a parent names, and the ratings those words imply."""

from __future__ import annotations

import re

# Words that stand for a topic a parent names. A topic not listed matches its own words.
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "violence": (
        "violence",
        "violent",
        "war",
        "wars",
        "battle",
        "battles",
        "fight",
        "fighting",
        "kill",
        "killing",
        "killer",
        "murder",
        "blood",
        "bloody",
        "gore",
        "shooting",
        "shooter",
        "massacre",
        "assault",
        "combat",
        "slaughter",
        "brutal",
        "zombie",
    ),
    "weapons": (
        "weapon",
        "weapons",
        "gun",
        "guns",
        "rifle",
        "pistol",
        "knife",
        "knives",
        "sword",
        "swords",
        "bomb",
        "explosive",
        "ammo",
        "ammunition",
    ),
    "horror": (
        "horror",
        "scary",
        "terrifying",
        "haunted",
        "ghost",
        "ghosts",
        "zombie",
        "zombies",
        "demon",
        "demons",
        "slasher",
        "nightmare",
        "creepy",
        "possessed",
    ),
    "gambling": (
        "gambling",
        "gamble",
        "casino",
        "poker",
        "betting",
        "bet",
        "bets",
        "slots",
        "slot machine",
        "roulette",
        "blackjack",
        "lottery",
        "jackpot",
        "wager",
    ),
    "drugs": (
        "drug",
        "drugs",
        "cocaine",
        "heroin",
        "marijuana",
        "cannabis",
        "weed",
        "meth",
        "overdose",
        "narcotics",
        "stoned",
    ),
    "alcohol": (
        "alcohol",
        "beer",
        "wine",
        "vodka",
        "whiskey",
        "cocktail",
        "cocktails",
        "drunk",
        "booze",
        "liquor",
        "bar crawl",
        "hangover",
    ),
    "sexual content": (
        "sex",
        "sexual",
        "sexy",
        "nude",
        "nudity",
        "porn",
        "erotic",
        "explicit",
        "strip club",
        "seduction",
    ),
    "self-harm": ("self-harm", "self harm", "suicide", "suicidal", "cutting myself", "kill myself"),
    "hate": ("hate", "racist", "racism", "nazi", "slur", "slurs", "bigot", "supremacist"),
    "profanity": ("swearing", "profanity", "curse words", "cursing", "obscene"),
    "scary": ("scary", "horror", "haunted", "ghost", "monster", "nightmare", "creepy"),
    "spiders": ("spider", "spiders", "tarantula", "arachnid", "arachnids"),
    "social media": ("social media", "tiktok", "instagram", "snapchat", "influencer"),
}
TOPIC_WORDS["sex"] = TOPIC_WORDS["sexual content"]
TOPIC_WORDS["weapon"] = TOPIC_WORDS["weapons"]
TOPIC_WORDS["drugs and alcohol"] = TOPIC_WORDS["drugs"] + TOPIC_WORDS["alcohol"]

# Words whose presence means an item cannot be rated below this, whatever it claims.
RATING_FLOOR: tuple[tuple[str, str], ...] = (
    ("sexual content", "R"),
    ("drugs", "R"),
    ("self-harm", "R"),
    ("hate", "R"),
    ("violence", "PG-13"),
    ("horror", "PG-13"),
    ("weapons", "PG-13"),
    ("gambling", "PG-13"),
    ("alcohol", "PG-13"),
    ("profanity", "PG-13"),
)

# Everyday phrases that hold a topic's word but are not on the topic: taken out before keywords
# are matched ("shooting star" is not a shooting). The topic model reads them by meaning anyway.
HARMLESS = re.compile(
    r"(?<![a-z])(?:shooting[- ]stars?|battle of the bands|pillow[- ]fights?|snowball[- ]fights?"
    r"|water[- ](?:balloon[- ])?fights?|food[- ]fights?|tickle[- ]fights?|killer whales?"
    r"|fire[- ]fighters?|firefight(?:ers?|ing)|fighting fit|bug[- ]spray war|war[- ]?ships? museum"
    r"|ghost[- ]writer|gun[- ]?metal grey|glue[- ]guns?|water[- ]guns?|squirt[- ]guns?|nerf"
    r"|bath[- ]bombs?|seed[- ]bombs?|photo[- ]bomb(?:ed|ing)?|sword[- ]?fish"
    r"|sword[- ]ferns?|butter[- ]knife|palette[- ]knife"
    r"|root[- ]beer|ginger[- ]beer|wine[- ]gums?|rice wine vinegar|wine vinegar)(?![a-z])"
)
