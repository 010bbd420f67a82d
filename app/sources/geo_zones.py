"""Country and region → IANA timezone, only where the answer is unambiguous.

Pure data and dict lookups, read once at import. Where it comes from:

- Countries with a single zone: IANA's `zone.tab` as the `tzdata` package ships it (each line names
  a country, one of its zones and the area it covers). A country listed with one zone maps to it.
- Countries listed with several zones whose clocks agree (Germany's Busingen keeps Berlin's time):
  `_SAME_CLOCK` below, checked against tzdata by the tests.
- Countries whose zones differ (`_REGIONS`): a curated table of first-level subdivisions built from
  `zone.tab`'s area comments. Regions are keyed by their ISO 3166-2 code without the country prefix
  (`US-CA` → `CA`), plus the codes Shopify's addresses use where they differ (Mexico: `JAL` is both,
  but Shopify writes `NL` for ISO `NLE`; Portugal: Shopify writes `PT-11`). A region split across
  zones maps to the zone most of its people live in only where that majority is large, and each
  such case is named in a comment; other split regions are left out.

Anything else — no country, a multi-zone country without a region, a region not in the table — has
no zone here, so the contact's phone number or the merchant's default applies instead.
"""
from __future__ import annotations

from collections import defaultdict
from importlib import resources

# Several zone.tab zones keeping one clock: the one covering the capital or most of the country.
_SAME_CLOCK: dict[str, str] = {
    "AR": "America/Argentina/Buenos_Aires",
    "CY": "Asia/Nicosia",
    "DE": "Europe/Berlin",
    "KZ": "Asia/Almaty",
    "MH": "Pacific/Majuro",
    "MY": "Asia/Kuala_Lumpur",
    "UZ": "Asia/Tashkent",
}

# Country → zone → the region codes in it (whitespace-separated).
_REGIONS: dict[str, dict[str, str]] = {
    "US": {
        # Majority zone: FL (western panhandle: Central), KY (west: Central), TN (east: Eastern).
        "America/New_York": "CT DC DE FL GA KY MA MD ME NC NH NJ NY OH PA RI SC VA VT WV",
        "America/Detroit": "MI",  # majority: four Upper Peninsula counties keep Central time
        "America/Indiana/Indianapolis": "IN",  # majority: the north-west and south-west corners are Central
        # Majority zone: KS, NE, ND, SD (western parts: Mountain), TX (El Paso area: Mountain).
        "America/Chicago": "AL AR IA IL KS LA MN MO MS ND NE OK SD TN TX WI",
        "America/Denver": "CO MT NM UT WY",
        "America/Boise": "ID",  # majority: the northern panhandle is Pacific
        "America/Phoenix": "AZ",  # majority: the Navajo Nation observes daylight saving time
        "America/Los_Angeles": "CA NV OR WA",  # majority: OR's Malheur County is Mountain
        "America/Anchorage": "AK",  # majority: the western Aleutians are an hour behind
        "Pacific/Honolulu": "HI",
        "America/Puerto_Rico": "PR",
        "America/St_Thomas": "VI",
        "Pacific/Guam": "GU",
        "Pacific/Saipan": "MP",
        "Pacific/Pago_Pago": "AS",
    },
    "CA": {
        # Majority zone: ON (the north-west is Central), QC (the Lower North Shore and the Magdalen
        # Islands are Atlantic), BC (the north-east and the Kootenays are Mountain), NL (Labrador is
        # Atlantic), SK (Lloydminster is Mountain). NU spans three zones and is left out.
        "America/St_Johns": "NL",
        "America/Halifax": "NS PE",
        "America/Moncton": "NB",
        "America/Toronto": "ON QC",
        "America/Winnipeg": "MB",
        "America/Regina": "SK",
        "America/Edmonton": "AB NT",
        "America/Vancouver": "BC",
        "America/Whitehorse": "YT",
    },
    "AU": {
        # Majority zone: NSW (Broken Hill is on Adelaide's time, Lord Howe Island half an hour
        # ahead), WA (Eucla is 45 minutes ahead), QLD (the Whitsundays share Brisbane's clock).
        "Australia/Sydney": "ACT NSW",
        "Australia/Melbourne": "VIC",
        "Australia/Brisbane": "QLD",
        "Australia/Adelaide": "SA",
        "Australia/Darwin": "NT",
        "Australia/Perth": "WA",
        "Australia/Hobart": "TAS",
    },
    "BR": {
        # Majority zone: PE (Fernando de Noronha is an hour ahead), AM (the far west is an hour behind).
        "America/Sao_Paulo": "DF ES GO MG PR RJ RS SC SP",
        "America/Bahia": "BA",
        "America/Fortaleza": "CE MA PB PI RN",
        "America/Recife": "PE",
        "America/Maceio": "AL SE",
        "America/Araguaina": "TO",
        "America/Belem": "AP PA",
        "America/Campo_Grande": "MS",
        "America/Cuiaba": "MT",
        "America/Porto_Velho": "RO",
        "America/Boa_Vista": "RR",
        "America/Manaus": "AM",
        "America/Rio_Branco": "AC",
    },
    "MX": {
        # ISO 3166-2 codes, then Shopify's where they differ. Majority zone: COA and NLE (their US
        # border strips follow US daylight saving time), NAY (Bahia de Banderas is on Central time).
        # Chihuahua and Tamaulipas are left out: their border cities are a large share of the people.
        "America/Mexico_City": "AGU CHP CMX COL GRO GUA HID JAL MEX MIC MOR OAX PUE QUE SLP TAB TLA VER ZAC "
                               "AGS CHIS DF CDMX GTO HGO MICH QRO TLAX",
        "America/Merida": "CAM YUC CAMP",
        "America/Monterrey": "COA DUR NLE COAH DGO NL",
        "America/Cancun": "ROO QROO",
        "America/Mazatlan": "BCS NAY SIN",
        "America/Hermosillo": "SON",
        "America/Tijuana": "BCN BC",
    },
    "RU": {
        # Majority zone: SA (Sakha's eastern districts are one and two hours ahead of Yakutsk).
        "Europe/Kaliningrad": "KGD",
        "Europe/Moscow": "AD ARK BEL BRY CE CU DA IN IVA KB KC KDA KL KLU KO KOS KR KRS LEN LIP ME MO MOS "
                         "MOW MUR NEN NGR NIZ ORL PNZ PSK ROS RYA SE SMO SPE STA TA TAM TUL TVE VLA VLG VOR YAR",
        "Europe/Kirov": "KIR",
        "Europe/Volgograd": "VGG",
        "Europe/Astrakhan": "AST",
        "Europe/Saratov": "SAR",
        "Europe/Ulyanovsk": "ULY",
        "Europe/Samara": "SAM UD",
        "Asia/Yekaterinburg": "BA CHE KGN KHM ORE PER SVE TYU YAN",
        "Asia/Omsk": "OMS",
        "Asia/Novosibirsk": "NVS",
        "Asia/Barnaul": "AL ALT",
        "Asia/Tomsk": "TOM",
        "Asia/Novokuznetsk": "KEM",
        "Asia/Krasnoyarsk": "KK KYA TY",
        "Asia/Irkutsk": "BU IRK",
        "Asia/Chita": "ZAB",
        "Asia/Yakutsk": "AMU SA",
        "Asia/Vladivostok": "KHA PRI YEV",
        "Asia/Magadan": "MAG",
        "Asia/Sakhalin": "SAK",
        "Asia/Kamchatka": "KAM",
        "Asia/Anadyr": "CHU",
    },
    "ES": {
        # Provinces (Shopify's codes) and autonomous communities, both ISO 3166-2.
        "Europe/Madrid": "A AB AL AV B BA BI BU C CA CC CO CR CS CU GI GR GU H HU J L LE LO LU M MA MU NA O OR "
                         "P PM PO S SA SE SG SO SS T TE TO V VA VI Z ZA "
                         "AN AR AS CB CL CM CT EX GA IB MC MD NC PV RI VC",
        "Africa/Ceuta": "CE ML",
        "Atlantic/Canary": "CN GC TF",
    },
    "PT": {
        "Europe/Lisbon": "01 02 03 04 05 06 07 08 09 10 11 12 13 14 15 16 17 18",
        "Atlantic/Azores": "20",
        "Atlantic/Madeira": "30",
    },
    "NZ": {
        "Pacific/Auckland": "AUK BOP CAN GIS HKB MBH MWT NSN NTL OTA STL TAS TKI WGN WKO WTC",
        "Pacific/Chatham": "CIT",
    },
}


def _zone_tab() -> dict[str, list[str]]:
    zones: dict[str, list[str]] = defaultdict(list)
    text = resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            country, _, zone = line.split("\t")[:3]
            zones[country].append(zone)
    return zones


def _region_table() -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for country, zones in _REGIONS.items():
        for zone, codes in zones.items():
            for code in codes.split():
                table[(country, code)] = zone
    return table


ZONE_TAB: dict[str, list[str]] = _zone_tab()
COUNTRY_ZONES: dict[str, str] = {
    **{country: zones[0] for country, zones in ZONE_TAB.items() if len(zones) == 1},
    **_SAME_CLOCK,
}
REGION_ZONES: dict[tuple[str, str], str] = _region_table()


def region_key(country: str, region: str) -> str:
    """A region as the table keys it: upper case, no whitespace (Shopify's `Q ROO`), no `CC-` prefix."""
    key = "".join(region.split()).upper()
    return key[len(country) + 1:] if key.startswith(f"{country}-") else key


def zone_for(country: str | None, region: str | None = None) -> str | None:
    """The IANA zone of a place, or None where the country and region do not settle it.

    `country` is ISO 3166-1 alpha-2, upper case; `region` a subdivision code in any case, with or
    without its `CC-` prefix.
    """
    if not country:
        return None
    zone = COUNTRY_ZONES.get(country)
    if zone is not None or country not in _REGIONS or not region:
        return zone
    return REGION_ZONES.get((country, region_key(country, region)))


def region_codes(country: str) -> tuple[str, ...]:
    """The region codes the table knows for a country (for providers that send them hashed)."""
    return tuple(code for (known, code) in REGION_ZONES if known == country)
