//! Seeded generator of realistic Nordic Opter customers.
//!
//! `generate_customers(n, seed)` is a pure function of its arguments: ChaCha8 is portable
//! and every draw goes through `u32` ranges, so 32- and 64-bit hosts produce the same
//! bytes and the bundled fixtures can be checked against the generator.
//! `edge_cases()` holds hand-written customers that probe the connector's limits.

use chrono::{DateTime, SecondsFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Seed and size of the generated part of `fixtures/customers.json`.
pub const FIXTURE_SEED: u64 = 20_261_123;
pub const FIXTURE_GENERATED: usize = 300;

/// First number used for `customerCode` ("K10001") and `customerNumber` ("10001").
const FIRST_CUSTOMER_NO: usize = 10_001;
/// Reference ids grow from here by small random gaps, like database keys.
const FIRST_REFERENCE_ID: u64 = 100_000;
/// Edge-case reference ids sit far above what the bundled fixtures generate.
const FIRST_EDGE_REFERENCE_ID: u64 = 9_900_000;
/// `created` falls in 2012-01-01 .. 2025-07-01 UTC, `updated` in `created` ..= 2025-11-20.
const CREATED_FROM: u32 = 1_325_376_000;
const CREATED_UNTIL: u32 = 1_751_328_000;
const UPDATED_UNTIL: u32 = 1_763_596_800;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Country {
    Se,
    No,
    Dk,
    Fi,
}

/// Roughly the customer mix of a Nordic haulier.
const COUNTRY_MIX: &[(Country, u32)] = &[
    (Country::Se, 55),
    (Country::No, 20),
    (Country::Dk, 15),
    (Country::Fi, 10),
];

/// A city with a real-looking postal-code range and landline area code.
struct City {
    name: &'static str,
    postal: (u32, u32),
    area: &'static str,
}

const fn city(name: &'static str, lo: u32, hi: u32, area: &'static str) -> City {
    City {
        name,
        postal: (lo, hi),
        area,
    }
}

/// Everything country-specific the generator draws from.
struct CountryData {
    iso: &'static str,
    tld: &'static str,
    dial: &'static str,
    cities: &'static [City],
    streets: &'static [&'static str],
    first_names: &'static [&'static str],
    surnames: &'static [&'static str],
    places: &'static [&'static str],
    trades: &'static [&'static str],
    forms: &'static [(&'static str, u32)],
    /// "& Söner" style suffix; empty where the pattern is not used (Finland).
    sons: &'static str,
    /// Word for a post-office box in invoice addresses.
    box_word: &'static str,
    mailboxes: &'static [&'static str],
    mobile_prefixes: &'static [&'static str],
}

// Swedish postal codes are stored as five digits and printed "NNN NN".
const SE_CITIES: &[City] = &[
    city("Stockholm", 11120, 11869, "8"),
    city("Göteborg", 41101, 41879, "31"),
    city("Malmö", 21111, 21877, "40"),
    city("Uppsala", 75220, 75449, "18"),
    city("Västerås", 72211, 72591, "21"),
    city("Örebro", 70210, 70379, "19"),
    city("Linköping", 58221, 58758, "13"),
    city("Helsingborg", 25220, 25669, "42"),
    city("Jönköping", 55302, 55626, "36"),
    city("Norrköping", 60210, 60379, "11"),
    city("Umeå", 90325, 90749, "90"),
    city("Gävle", 80251, 80647, "26"),
    city("Sundsvall", 85230, 85759, "60"),
    city("Luleå", 97231, 97596, "920"),
    city("Borås", 50330, 50765, "33"),
    city("Karlstad", 65220, 65640, "54"),
    city("Växjö", 35230, 35596, "470"),
    city("Halmstad", 30230, 30296, "35"),
    city("Kalmar", 39231, 39365, "480"),
    city("Östersund", 83130, 83196, "63"),
];

const NO_CITIES: &[City] = &[
    city("Oslo", 150, 1295, "22"),
    city("Bergen", 5003, 5098, "55"),
    city("Trondheim", 7010, 7099, "73"),
    city("Stavanger", 4005, 4099, "51"),
    city("Drammen", 3001, 3048, "32"),
    city("Kristiansand", 4608, 4699, "38"),
    city("Tromsø", 9006, 9038, "77"),
    city("Fredrikstad", 1601, 1639, "69"),
    city("Sandnes", 4306, 4329, "51"),
    city("Ålesund", 6002, 6025, "70"),
    city("Bodø", 8001, 8049, "75"),
    city("Hamar", 2301, 2326, "62"),
    city("Lillehammer", 2601, 2626, "61"),
    city("Tønsberg", 3101, 3128, "33"),
    city("Haugesund", 5501, 5538, "52"),
    city("Molde", 6401, 6421, "71"),
];

const DK_CITIES: &[City] = &[
    city("København K", 1050, 1473, "33"),
    city("Aarhus C", 8000, 8000, "86"),
    city("Odense C", 5000, 5000, "66"),
    city("Aalborg", 9000, 9000, "98"),
    city("Esbjerg", 6700, 6715, "75"),
    city("Randers C", 8900, 8900, "86"),
    city("Kolding", 6000, 6000, "75"),
    city("Horsens", 8700, 8700, "75"),
    city("Vejle", 7100, 7100, "75"),
    city("Roskilde", 4000, 4000, "46"),
    city("Herning", 7400, 7400, "97"),
    city("Silkeborg", 8600, 8600, "86"),
    city("Næstved", 4700, 4700, "55"),
    city("Fredericia", 7000, 7000, "75"),
    city("Hillerød", 3400, 3400, "48"),
    city("Sønderborg", 6400, 6400, "74"),
    city("Viborg", 8800, 8800, "86"),
    city("Glostrup", 2600, 2600, "43"),
    city("Brøndby", 2605, 2605, "43"),
];

// Finnish postal codes are drawn in tens ("00100", "33210"), as most real ones are.
const FI_CITIES: &[City] = &[
    city("Helsinki", 100, 990, "9"),
    city("Espoo", 2100, 2980, "9"),
    city("Vantaa", 1300, 1770, "9"),
    city("Tampere", 33100, 33900, "3"),
    city("Turku", 20100, 20900, "2"),
    city("Oulu", 90100, 90900, "8"),
    city("Jyväskylä", 40100, 40950, "14"),
    city("Lahti", 15100, 15900, "3"),
    city("Kuopio", 70100, 70900, "17"),
    city("Pori", 28100, 28900, "2"),
    city("Vaasa", 65100, 65380, "6"),
    city("Joensuu", 80100, 80260, "13"),
    city("Hämeenlinna", 13100, 13900, "3"),
    city("Seinäjoki", 60100, 60800, "6"),
    city("Rovaniemi", 96100, 96900, "16"),
    city("Kotka", 48100, 48900, "5"),
];

#[rustfmt::skip]
const SE: CountryData = CountryData {
    iso: "SE",
    tld: "se",
    dial: "+46",
    cities: SE_CITIES,
    streets: &[
        "Hamngatan", "Storgatan", "Kungsgatan", "Industrivägen", "Verkstadsgatan", "Drottninggatan",
        "Järnvägsgatan", "Skolgatan", "Östra Hamngatan", "Sjöbergsvägen", "Lagervägen",
        "Företagsvägen", "Åkerivägen", "Transportgatan", "Terminalvägen", "Norra Vägen",
        "Södra Förstadsgatan", "Fabriksgatan", "Smedjegatan", "Magasinsgatan",
    ],
    first_names: &[
        "Anders", "Åsa", "Jörgen", "Karin", "Björn", "Märta", "Göran", "Lena", "Per", "Ingrid",
        "Mikael", "Sofia", "Örjan", "Annika", "Lars", "Maria", "Håkan", "Elin", "Johan", "Birgitta",
        "Stefan", "Malin", "Ulf", "Eva", "Måns", "Therése", "Kjell", "Linnéa", "Ann-Christin",
        "Östen",
    ],
    surnames: &[
        "Lindqvist", "Nordström", "Berg", "Johansson", "Andersson", "Karlsson", "Nilsson",
        "Eriksson", "Larsson", "Olsson", "Persson", "Svensson", "Gustafsson", "Pettersson",
        "Jönsson", "Lindström", "Åberg", "Öberg", "Sjöberg", "Bergström", "Holmgren", "Ström",
        "Engström", "Wästberg", "Löfgren", "Håkansson", "Forsberg", "Sandström", "Ekström",
        "Nyström",
    ],
    places: &[
        "Norrlands", "Mälardalens", "Skånes", "Västkustens", "Göta", "Roslagens", "Dalarnas",
        "Hallands", "Upplands", "Smålands", "Värmlands", "Ölands", "Gotlands", "Bohusläns",
        "Sörmlands", "Jämtlands", "Norrbottens", "Östgöta", "Västgöta", "Bergslagens",
    ],
    trades: &[
        "Åkeri", "Transport", "Logistik", "Frakt", "Budbil", "Spedition", "Bygg", "Trävaror",
        "Gods", "Kyltransport", "Maskin", "Entreprenad", "Distribution", "Flytt",
    ],
    forms: &[("AB", 85), ("HB", 10), ("KB", 5)],
    sons: "Söner",
    box_word: "Box",
    mailboxes: &["info", "order", "ekonomi", "kontakt", "faktura"],
    mobile_prefixes: &["70", "72", "73", "76", "79"],
};

#[rustfmt::skip]
const NO: CountryData = CountryData {
    iso: "NO",
    tld: "no",
    dial: "+47",
    cities: NO_CITIES,
    streets: &[
        "Storgata", "Kirkegata", "Industriveien", "Havnegata", "Strandveien", "Kongens gate",
        "Dronningens gate", "Nedre Slottsgate", "Sjøgata", "Tømmerveien", "Økernveien",
        "Brynsveien", "Terminalveien", "Jernbanegata", "Løkkeveien", "Fabrikkveien", "Lagerveien",
        "Smedgata",
    ],
    first_names: &[
        "Bjørn", "Kari", "Ole", "Ingrid", "Håkon", "Solveig", "Øyvind", "Marit", "Knut",
        "Ragnhild", "Jørgen", "Sigrid", "Trond", "Astrid", "Ståle", "Tone", "Geir", "Åse", "Espen",
        "Hege", "Lars", "Silje", "Kjetil", "Synnøve",
    ],
    surnames: &[
        "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen",
        "Jensen", "Karlsen", "Haugen", "Bakken", "Solberg", "Strøm", "Dahl", "Lie", "Ødegård",
        "Sæther", "Brøndbo", "Løvås", "Fjellstad", "Haaland", "Nygård", "Østby", "Aasen", "Moen",
        "Berge", "Holm",
    ],
    places: &[
        "Nordland", "Vestlandet", "Østlandet", "Sørlandet", "Trøndelag", "Romerike", "Hadeland",
        "Hedmark", "Fjord", "Nordkapp", "Oslofjord", "Viken", "Agder", "Telemark", "Gudbrandsdal",
        "Helgeland",
    ],
    trades: &[
        "Transport", "Logistikk", "Frakt", "Budbil", "Spedisjon", "Bygg", "Trelast", "Gods",
        "Maskin", "Entreprenør", "Distribusjon", "Flytting", "Kjøring", "Termotransport",
    ],
    forms: &[("AS", 92), ("ASA", 3), ("DA", 5)],
    sons: "Sønner",
    box_word: "Postboks",
    mailboxes: &["post", "firmapost", "ordre", "faktura", "kontakt"],
    mobile_prefixes: &["41", "45", "46", "90", "91", "92", "93", "95", "97", "98"],
};

#[rustfmt::skip]
const DK: CountryData = CountryData {
    iso: "DK",
    tld: "dk",
    dial: "+45",
    cities: DK_CITIES,
    streets: &[
        "Vestergade", "Østergade", "Nørregade", "Søndergade", "Industrivej", "Havnegade",
        "Jernbanegade", "Kongensgade", "Strandvejen", "Fabriksvej", "Transportvej", "Ærøvej",
        "Møllevej", "Håndværkervej", "Smedevej", "Lagervej", "Grønnegade", "Åboulevarden",
    ],
    first_names: &[
        "Søren", "Mette", "Jens", "Birgitte", "Niels", "Hanne", "Jørgen", "Lone", "Rasmus",
        "Pernille", "Mads", "Anne", "Bjørn", "Kirsten", "Henrik", "Susanne", "Thøger", "Dorthe",
        "Anders", "Signe", "Bent", "Gitte", "Frederik", "Lærke",
    ],
    surnames: &[
        "Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen", "Sørensen",
        "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen", "Thomsen", "Møller",
        "Kjærgaard", "Søndergaard", "Højgaard", "Bøgh", "Lykke", "Holm", "Nørgaard", "Mølgaard",
        "Frølund", "Dræby",
    ],
    places: &[
        "Sjællands", "Fyns", "Jyllands", "Øresunds", "Nordjysk", "Midtjysk", "Sydjysk", "Vestjysk",
        "Bornholms", "Lolland-Falster", "Himmerlands", "Djurslands", "Thy", "Vendsyssel",
        "Storstrøms", "Limfjord",
    ],
    trades: &[
        "Vognmand", "Transport", "Logistik", "Fragt", "Spedition", "Byg", "Tømmerhandel", "Kurér",
        "Distribution", "Flytning", "Maskinstation", "Vognmandsforretning", "Godstransport",
    ],
    forms: &[("ApS", 60), ("A/S", 30), ("I/S", 10)],
    sons: "Sønner",
    box_word: "Postboks",
    mailboxes: &["info", "kontakt", "ordre", "faktura", "post"],
    mobile_prefixes: &[
        "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "40", "42", "50",
        "51", "52", "53", "60", "61", "71", "81", "91", "93",
    ],
};

#[rustfmt::skip]
const FI: CountryData = CountryData {
    iso: "FI",
    tld: "fi",
    dial: "+358",
    cities: FI_CITIES,
    streets: &[
        "Mannerheimintie", "Hämeenkatu", "Teollisuuskatu", "Satamakatu", "Asemakatu", "Kauppakatu",
        "Tehtaankatu", "Rautatienkatu", "Koulukatu", "Kuljetustie", "Logistiikkatie", "Pääkatu",
        "Työpajankatu", "Varastotie", "Sepänkatu", "Yrittäjäntie", "Välitie", "Kärkikatu",
    ],
    first_names: &[
        "Päivi", "Jukka", "Mikko", "Sari", "Jari", "Tiina", "Antti", "Minna", "Pekka", "Riikka",
        "Väinö", "Satu", "Kalle", "Jaana", "Heikki", "Leena", "Jyrki", "Eeva", "Tuomas", "Outi",
        "Anna-Liisa", "Hannu", "Kyösti", "Säde", "Ilkka",
    ],
    surnames: &[
        "Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen", "Laine", "Heikkinen",
        "Koskinen", "Järvinen", "Lehtonen", "Lehtinen", "Saarinen", "Salminen", "Heinonen", "Niemi",
        "Jääskeläinen", "Kärkkäinen", "Räsänen", "Väisänen", "Pöllänen", "Ylönen", "Lindholm",
        "Nyström", "Björklund",
    ],
    places: &[
        "Pohjolan", "Savon", "Karjalan", "Hämeen", "Lapin", "Pirkan", "Uudenmaan", "Satakunnan",
        "Keski-Suomen", "Pohjanmaan", "Kymen", "Etelä-Suomen", "Länsirannikon", "Kainuun",
        "Saimaan",
    ],
    trades: &[
        "Kuljetus", "Logistiikka", "Rahti", "Huolinta", "Rakennus", "Puutavara", "Kuriiri",
        "Jakelu", "Muutto", "Konepalvelu", "Maansiirto", "Kuljetuspalvelu", "Kylmäkuljetus",
    ],
    forms: &[("Oy", 85), ("Oy Ab", 5), ("Ky", 10)],
    sons: "",
    box_word: "PL",
    mailboxes: &["info", "toimisto", "tilaukset", "laskutus", "asiakaspalvelu"],
    mobile_prefixes: &["40", "41", "44", "45", "46", "50"],
};

impl Country {
    fn data(self) -> &'static CountryData {
        match self {
            Country::Se => &SE,
            Country::No => &NO,
            Country::Dk => &DK,
            Country::Fi => &FI,
        }
    }

    /// Digit groups after the area code, e.g. Sweden "8 123 45 67" / "920 12 34 56".
    fn landline_groups(self, area: &str) -> &'static [u32] {
        match (self, area.len()) {
            (Country::Se, 3) => &[2, 2, 2],
            (Country::Se, _) => &[3, 2, 2],
            (Country::No | Country::Dk, _) => &[2, 2, 2],
            (Country::Fi, 1) => &[3, 4],
            (Country::Fi, _) => &[3, 3],
        }
    }

    fn mobile_groups(self) -> &'static [u32] {
        match self {
            Country::Se => &[3, 2, 2],
            Country::No | Country::Dk => &[2, 2, 2],
            Country::Fi => &[3, 4],
        }
    }
}

/// Generates `n` Opter customers, identical for identical `(n, seed)`; a longer run with
/// the same seed starts with the shorter one.
pub fn generate_customers(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last_reference_id = FIRST_REFERENCE_ID;
    (0..n)
        .map(|i| customer(&mut rng, FIRST_CUSTOMER_NO + i, &mut last_reference_id))
        .collect()
}

fn customer(rng: &mut ChaCha8Rng, number: usize, last_reference_id: &mut u64) -> Value {
    let country = weighted(rng, COUNTRY_MIX);
    let d = country.data();
    let city = pick_city(rng, d.cities);
    let company = company(rng, country, city);
    let (corporate_id, vat) = match company.owner {
        Some(_) => swedish_personal_ids(rng),
        None => organisation_ids(rng, country, company.form),
    };
    let visiting = Address {
        street: street(rng, d),
        postal_code: postal_code(rng, country, city),
        city: city.name,
        country: d.iso,
    };
    let invoice = invoice_address(rng, country, city, &visiting);
    let phone = landline(rng, country, city.area);
    let email = format!("{}@{}", pick(rng, d.mailboxes), company.domain);
    let information = information(rng, country);
    let is_active = !chance(rng, 3);
    let (created, updated) = timestamps(rng);
    let customer_number = if chance(rng, 5) {
        Value::Null
    } else {
        Value::String(number.to_string())
    };
    let references = references(rng, country, city, &company, last_reference_id);
    object([
        ("customerCode", format!("K{number}").into()),
        ("customerNumber", customer_number),
        ("name", company.name.into()),
        ("corporateIdNumber", corporate_id.into()),
        ("vatNumber", vat.into()),
        ("visitingAddress", visiting.into_json()),
        ("invoiceAddress", invoice.into_json()),
        ("phone", phone.into()),
        ("email", email.into()),
        ("information", information.into()),
        ("isActive", is_active.into()),
        ("created", created.into()),
        ("updated", updated.into()),
        ("references", references.into()),
    ])
}

/// A JSON object that takes ownership of its values (`json!` clones every string it is
/// given, a noticeable cost at 100,000 customers).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Random helpers. All ranges are u32 so results do not depend on the host's usize.

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len() as u32) as usize]
}

fn pick_city<'a>(rng: &mut ChaCha8Rng, cities: &'a [City]) -> &'a City {
    &cities[rng.gen_range(0..cities.len() as u32) as usize]
}

fn weighted<T: Copy>(rng: &mut ChaCha8Rng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|&(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for &(item, w) in table {
        if roll < w {
            return item;
        }
        roll -= w;
    }
    table[table.len() - 1].0
}

fn chance(rng: &mut ChaCha8Rng, percent: u32) -> bool {
    rng.gen_range(0..100u32) < percent
}

fn random_digits<const N: usize>(rng: &mut ChaCha8Rng) -> [u8; N] {
    let mut out = [0u8; N];
    for d in &mut out {
        *d = rng.gen_range(0..10u32) as u8;
    }
    out
}

/// The low `N` decimal digits of `n`, most significant first.
fn digits_of<const N: usize>(mut n: u64) -> [u8; N] {
    let mut out = [0u8; N];
    for d in out.iter_mut().rev() {
        *d = (n % 10) as u8;
        n /= 10;
    }
    out
}

fn push_digits(out: &mut String, digits: &[u8]) {
    out.extend(digits.iter().map(|&d| char::from(b'0' + d)));
}

// ---------------------------------------------------------------------------------------
// Names and e-mail addresses.

struct Company {
    name: String,
    /// E-mail domain including the country TLD, e.g. "nordstromakeri.se".
    domain: String,
    form: &'static str,
    /// Sole traders (enskild firma) carry their owner's name instead of a company form.
    owner: Option<(&'static str, &'static str)>,
}

fn company(rng: &mut ChaCha8Rng, country: Country, city: &City) -> Company {
    let d = country.data();
    let trade = pick(rng, d.trades);
    let surname = pick(rng, d.surnames);
    if country == Country::Se && chance(rng, 15) {
        let first = pick(rng, d.first_names);
        let name = format!("{first} {surname} {trade}");
        return Company {
            domain: domain(&name, d.tld),
            name,
            form: "",
            owner: Some((first, surname)),
        };
    }
    let form = weighted(rng, d.forms);
    let finnish = country == Country::Fi;
    let core = match rng.gen_range(0..100u32) {
        0..=34 => format!("{surname} {trade}"),
        35..=54 if finnish => format!("{trade} {surname}"),
        35..=54 => format!("{} {trade}", genitive(surname)),
        55..=79 => format!("{} {trade}", pick(rng, d.places)),
        80..=89 if finnish => format!("{} {trade}", pick(rng, d.places)),
        // "København K" -> "København": the district letter is not part of a firm name.
        80..=89 => format!(
            "{} {trade}",
            city.name.split(' ').next().unwrap_or(city.name)
        ),
        _ if finnish => format!("Veljekset {surname}"),
        _ => format!("{surname} & {} {trade}", d.sons),
    };
    Company {
        domain: domain(&core, d.tld),
        name: format!("{core} {form}"),
        form,
        owner: None,
    }
}

/// Scandinavian genitive: "Nilsson" -> "Nilssons"; names already ending in s stay as is.
fn genitive(name: &str) -> String {
    if name.ends_with(['s', 'x', 'z']) {
        name.to_string()
    } else {
        format!("{name}s")
    }
}

fn domain(core: &str, tld: &str) -> String {
    let mut out = String::with_capacity(core.len() + 4);
    push_ascii(&mut out, core, "");
    out.push('.');
    out.push_str(tld);
    out
}

/// Appends `text` lower-cased and transliterated to ASCII (å→a, ø→o, æ→ae, ...), as Nordic
/// firms spell names in e-mail addresses; anything outside `[a-z0-9]` and `keep` is dropped.
fn push_ascii(out: &mut String, text: &str, keep: &str) {
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'å' | 'ä' | 'á' | 'à' | 'â' => out.push('a'),
            'ö' | 'ø' | 'ó' | 'ò' | 'ô' => out.push('o'),
            'æ' => out.push_str("ae"),
            'ü' | 'ú' | 'ù' => out.push('u'),
            'é' | 'è' | 'ê' | 'ë' => out.push('e'),
            'í' | 'ì' => out.push('i'),
            _ if keep.contains(c) => out.push(c),
            _ => {}
        }
    }
}

/// "karin.berg@x.se" mostly, sometimes "karin@x.se" or "kberg@x.se".
fn person_email(rng: &mut ChaCha8Rng, first: &str, last: &str, domain: &str) -> String {
    let mut out = String::with_capacity(first.len() + last.len() + domain.len() + 2);
    match rng.gen_range(0..100u32) {
        0..=84 => {
            push_ascii(&mut out, first, "-");
            out.push('.');
            push_ascii(&mut out, last, "-");
        }
        85..=94 => push_ascii(&mut out, first, "-"),
        _ => {
            let initial = first
                .char_indices()
                .nth(1)
                .map_or(first, |(i, _)| &first[..i]);
            push_ascii(&mut out, initial, "");
            push_ascii(&mut out, last, "-");
        }
    }
    out.push('@');
    out.push_str(domain);
    out
}

// ---------------------------------------------------------------------------------------
// Organisation and tax identifiers.

/// Luhn check digit over the nine payload digits of a Swedish org or personal number.
fn luhn_check_digit(payload: &[u8; 9]) -> u8 {
    let sum: u32 = payload
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let p = u32::from(d) * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Mod-11 check digit shared by Norwegian org numbers, Danish CVR and the Finnish
/// Y-tunnus; `None` when the payload has no valid check digit and must be redrawn.
fn mod11_check_digit(payload: &[u8], weights: &[u32]) -> Option<u8> {
    let sum: u32 = payload
        .iter()
        .zip(weights)
        .map(|(&d, &w)| u32::from(d) * w)
        .sum();
    match (11 - sum % 11) % 11 {
        10 => None,
        c => Some(c as u8),
    }
}

const NO_WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];
const DK_WEIGHTS: [u32; 7] = [2, 7, 6, 5, 4, 3, 2];
const FI_WEIGHTS: [u32; 7] = [7, 9, 10, 5, 8, 4, 2];

/// "NNNNNN-NNNN" plus the matching "SE…01" VAT number.
fn swedish_ids(payload: [u8; 9]) -> (String, String) {
    let check = luhn_check_digit(&payload);
    let mut id = String::with_capacity(11);
    push_digits(&mut id, &payload[..6]);
    id.push('-');
    push_digits(&mut id, &payload[6..]);
    push_digits(&mut id, &[check]);
    let mut vat = String::with_capacity(14);
    vat.push_str("SE");
    push_digits(&mut vat, &payload);
    push_digits(&mut vat, &[check, 0, 1]);
    (id, vat)
}

fn swedish_org_payload(rng: &mut ChaCha8Rng, form: &str) -> [u8; 9] {
    // Aktiebolag numbers start 556/559, trading partnerships 969/916.
    let prefix = match form {
        "AB" => pick(rng, &[[5, 5, 6], [5, 5, 9]]),
        _ => pick(rng, &[[9, 6, 9], [9, 1, 6]]),
    };
    let rest: [u8; 6] = random_digits(rng);
    let mut payload = [0u8; 9];
    payload[..3].copy_from_slice(&prefix);
    payload[3..].copy_from_slice(&rest);
    payload
}

/// A sole trader's org number is the owner's personal ID number YYMMDD-NNNC.
fn swedish_personal_ids(rng: &mut ChaCha8Rng) -> (String, String) {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let year = rng.gen_range(1950..=2002u32);
    let month = rng.gen_range(1..=12u32);
    let day = rng.gen_range(1..=DAYS[month as usize - 1]);
    let serial = rng.gen_range(1..1000u32);
    let date = (year % 100) * 10_000 + month * 100 + day;
    swedish_ids(digits_of(u64::from(date) * 1000 + u64::from(serial)))
}

fn organisation_ids(rng: &mut ChaCha8Rng, country: Country, form: &str) -> (String, String) {
    match country {
        Country::Se => swedish_ids(swedish_org_payload(rng, form)),
        Country::No => loop {
            let mut payload: [u8; 8] = random_digits(rng);
            payload[0] = pick(rng, &[8, 9, 9, 9]);
            if let Some(ids) = norwegian_ids(payload) {
                break ids;
            }
        },
        Country::Dk => loop {
            let mut payload: [u8; 7] = random_digits(rng);
            payload[0] = rng.gen_range(1..=4u32) as u8;
            if let Some(ids) = danish_ids(payload) {
                break ids;
            }
        },
        Country::Fi => loop {
            let mut payload: [u8; 7] = random_digits(rng);
            payload[0] = rng.gen_range(0..=3u32) as u8;
            if let Some(ids) = finnish_ids(payload) {
                break ids;
            }
        },
    }
}

/// "923456789" and "NO923456789MVA".
fn norwegian_ids(payload: [u8; 8]) -> Option<(String, String)> {
    let check = mod11_check_digit(&payload, &NO_WEIGHTS)?;
    let mut id = String::with_capacity(9);
    push_digits(&mut id, &payload);
    push_digits(&mut id, &[check]);
    let vat = format!("NO{id}MVA");
    Some((id, vat))
}

/// CVR "12345678" and "DK12345678".
fn danish_ids(payload: [u8; 7]) -> Option<(String, String)> {
    let check = mod11_check_digit(&payload, &DK_WEIGHTS)?;
    let mut id = String::with_capacity(8);
    push_digits(&mut id, &payload);
    push_digits(&mut id, &[check]);
    let vat = format!("DK{id}");
    Some((id, vat))
}

/// Y-tunnus "1234567-8" and "FI12345678".
fn finnish_ids(payload: [u8; 7]) -> Option<(String, String)> {
    let check = mod11_check_digit(&payload, &FI_WEIGHTS)?;
    let mut digits = String::with_capacity(8);
    push_digits(&mut digits, &payload);
    push_digits(&mut digits, &[check]);
    let id = format!("{}-{}", &digits[..7], &digits[7..]);
    Some((id, format!("FI{digits}")))
}

// ---------------------------------------------------------------------------------------
// Addresses, phones, notes and timestamps.

struct Address {
    street: String,
    postal_code: String,
    city: &'static str,
    country: &'static str,
}

impl Address {
    fn into_json(self) -> Value {
        object([
            ("street", self.street.into()),
            ("postalCode", self.postal_code.into()),
            ("city", self.city.into()),
            ("country", self.country.into()),
        ])
    }
}

fn street(rng: &mut ChaCha8Rng, d: &CountryData) -> String {
    let name = pick(rng, d.streets);
    let number = rng.gen_range(1..=120u32);
    if chance(rng, 12) {
        let letter = pick(rng, &['A', 'B', 'C', 'D']);
        format!("{name} {number}{letter}")
    } else {
        format!("{name} {number}")
    }
}

fn postal_code(rng: &mut ChaCha8Rng, country: Country, city: &City) -> String {
    let n = rng.gen_range(city.postal.0..=city.postal.1);
    match country {
        Country::Se => format!("{:03} {:02}", n / 100, n % 100),
        Country::No | Country::Dk => format!("{n:04}"),
        Country::Fi => format!("{:05}", n / 10 * 10),
    }
}

/// Most invoices go to the visiting address; many to a post-office box in the same city.
fn invoice_address(
    rng: &mut ChaCha8Rng,
    country: Country,
    city: &City,
    visiting: &Address,
) -> Address {
    let d = country.data();
    let street = match rng.gen_range(0..100u32) {
        0..=59 => visiting.street.clone(),
        60..=89 => format!("{} {}", d.box_word, rng.gen_range(1..=2999u32)),
        _ => street(rng, d),
    };
    let postal_code = if street == visiting.street {
        visiting.postal_code.clone()
    } else {
        postal_code(rng, country, city)
    };
    Address {
        street,
        postal_code,
        city: city.name,
        country: d.iso,
    }
}

/// "+46 8 123 45 67": dial code, prefix, then random digit groups (no leading zero).
fn phone_number(rng: &mut ChaCha8Rng, dial: &str, prefix: &str, groups: &[u32]) -> String {
    let mut out = String::with_capacity(20);
    out.push_str(dial);
    out.push(' ');
    out.push_str(prefix);
    for (g, &len) in groups.iter().enumerate() {
        out.push(' ');
        for k in 0..len {
            let low = if g == 0 && k == 0 { 1 } else { 0 };
            out.push(char::from(b'0' + rng.gen_range(low..10u32) as u8));
        }
    }
    out
}

fn landline(rng: &mut ChaCha8Rng, country: Country, area: &str) -> String {
    phone_number(
        rng,
        country.data().dial,
        area,
        country.landline_groups(area),
    )
}

fn mobile(rng: &mut ChaCha8Rng, country: Country) -> String {
    let prefix = pick(rng, country.data().mobile_prefixes);
    phone_number(rng, country.data().dial, prefix, country.mobile_groups())
}

/// A driver's note in the customer's language.
fn information(rng: &mut ChaCha8Rng, country: Country) -> String {
    let code = rng.gen_range(1000..10_000u32);
    let port = rng.gen_range(1..13u32);
    let order = rng.gen_range(100_000..1_000_000u32);
    let template = rng.gen_range(0..6u32);
    match (country, template) {
        (Country::Se, 0) => format!("Portkod {code}, leveranser före 07:00"),
        (Country::Se, 1) => format!("Lossning vid port {port}, öppet 06:00–15:00"),
        (Country::Se, 2) => "Ring 30 min före ankomst, lastkaj på baksidan".to_string(),
        (Country::Se, 3) => format!("Faktura via e-post, ange ordernummer {order}"),
        (Country::Se, 4) => "Kräver bil med bakgavellyft".to_string(),
        (Country::Se, _) => format!("Kvittens krävs, nyckel i kodlåda {code}"),
        (Country::No, 0) => format!("Portkode {code}, levering før kl. 07:00"),
        (Country::No, 1) => format!("Lossing ved port {port}, åpent 06:00–15:00"),
        (Country::No, 2) => "Ring 30 min før ankomst, rampe på baksiden".to_string(),
        (Country::No, 3) => format!("Faktura på e-post, oppgi bestillingsnummer {order}"),
        (Country::No, 4) => "Krever bil med baklift".to_string(),
        (Country::No, _) => format!("Kvittering kreves, nøkkel i nøkkelboks {code}"),
        (Country::Dk, 0) => format!("Portkode {code}, levering før kl. 07:00"),
        (Country::Dk, 1) => format!("Aflæsning ved port {port}, åbent 06:00–15:00"),
        (Country::Dk, 2) => "Ring 30 min. før ankomst, rampe bag bygningen".to_string(),
        (Country::Dk, 3) => format!("Faktura pr. e-mail, angiv ordrenummer {order}"),
        (Country::Dk, 4) => "Kræver bil med lift".to_string(),
        (Country::Dk, _) => format!("Kvittering påkrævet, nøgle i nøgleboks {code}"),
        (Country::Fi, 0) => format!("Ovikoodi {code}, toimitukset ennen klo 7.00"),
        (Country::Fi, 1) => format!("Purku ovelta {port}, avoinna 6–15"),
        (Country::Fi, 2) => "Soita 30 min ennen saapumista, lastauslaituri takana".to_string(),
        (Country::Fi, 3) => format!("Lasku sähköpostilla, merkitse tilausnumero {order}"),
        (Country::Fi, 4) => "Vaatii takalaitanostimen".to_string(),
        (Country::Fi, _) => format!("Kuittaus vaaditaan, avain avainlaatikossa {code}"),
    }
}

fn timestamps(rng: &mut ChaCha8Rng) -> (String, String) {
    let created = rng.gen_range(CREATED_FROM..CREATED_UNTIL);
    let updated = rng.gen_range(created..=UPDATED_UNTIL);
    (rfc3339(created), rfc3339(updated))
}

fn rfc3339(secs: u32) -> String {
    DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Contact persons.

fn references(
    rng: &mut ChaCha8Rng,
    country: Country,
    city: &City,
    company: &Company,
    last_id: &mut u64,
) -> Vec<Value> {
    let d = country.data();
    let count = match rng.gen_range(0..100u32) {
        0..=49 => 1,
        50..=79 => 2,
        80..=95 => 3,
        _ => 4,
    };
    // Usually exactly one default, mostly the first; a few customers have none marked.
    let default = if chance(rng, 95) {
        Some(if chance(rng, 80) {
            0
        } else {
            rng.gen_range(0..count)
        })
    } else {
        None
    };
    let mut used: Vec<(&str, &str)> = Vec::with_capacity(count as usize);
    (0..count)
        .map(|k| {
            let (first, last) = match company.owner {
                Some(owner) if k == 0 => owner,
                _ => loop {
                    let name = (pick(rng, d.first_names), pick(rng, d.surnames));
                    if !used.contains(&name) {
                        break name;
                    }
                },
            };
            used.push((first, last));
            *last_id += u64::from(rng.gen_range(1..=9u32));
            object([
                ("id", (*last_id).into()),
                ("name", format!("{first} {last}").into()),
                (
                    "email",
                    person_email(rng, first, last, &company.domain).into(),
                ),
                ("phone", landline(rng, country, city.area).into()),
                ("mobilePhone", mobile(rng, country).into()),
                ("isDefault", (default == Some(k)).into()),
            ])
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Hand-written edge cases.

/// One hand-written customer; contacts are (name, e-mail, isDefault).
struct EdgeSpec {
    code: &'static str,
    name: &'static str,
    domain: &'static str,
    country: Country,
    contacts: &'static [(&'static str, Option<&'static str>, bool)],
}

/// 63 characters: longer than the 50 Visma accepts.
const EDGE06_NAME: &str = "Norrbottens Åkeri, Entreprenad, Transport & Logistik i Luleå AB";
/// 101 characters: one more than a contact name may have.
const EDGE11_CONTACT: &str = "Anna-Karin Margareta Elisabeth Charlotte von Essen af Zellie \
Lindqvist-Åkerström Sjöberg Håkansson Ek";
/// 259 characters, yet a 62-character local part and labels of at most 63 characters.
const EDGE12_EMAIL: &str = "lars-erik.johansson.inkopsavdelningen.centrallagret.norrkoping@\
leverantorsfakturor-och-ekonomiadministration-for-akerier.\
ostgota-transport-och-logistik-i-norrkoping-med-omnejd-ab.\
fakturamottagning-och-attestflode-for-inkommande-leverantorer.inkommande-post.se";

#[rustfmt::skip]
const EDGE_SPECS: &[EdgeSpec] = &[
    // No contact person at all.
    EdgeSpec { code: "EDGE01", name: "Bergslagens Frakt AB", domain: "bergslagensfrakt.se",
        country: Country::Se, contacts: &[] },
    // Four contacts; the default one is the third.
    EdgeSpec { code: "EDGE02", name: "Vestfold Logistikk AS", domain: "vestfoldlogistikk.no",
        country: Country::No, contacts: &[
            ("Ingrid Solberg", Some("ingrid.solberg@vestfoldlogistikk.no"), false),
            ("Øyvind Haugen", Some("oyvind.haugen@vestfoldlogistikk.no"), false),
            ("Marit Bakken", Some("marit.bakken@vestfoldlogistikk.no"), true),
            ("Trond Dahl", Some("trond.dahl@vestfoldlogistikk.no"), false),
        ] },
    // No default; the first contact has no e-mail, so the second must be chosen.
    EdgeSpec { code: "EDGE03", name: "Mälarhamnens Spedition AB",
        domain: "malarhamnensspedition.se", country: Country::Se, contacts: &[
            ("Göran Holmgren", None, false),
            ("Annika Sjöberg", Some("annika.sjoberg@malarhamnensspedition.se"), false),
            ("Per Ekström", Some("per.ekstrom@malarhamnensspedition.se"), false),
        ] },
    // The only contact has no e-mail.
    EdgeSpec { code: "EDGE04", name: "Fjällvägens Budbil AB", domain: "fjallvagensbudbil.se",
        country: Country::Se, contacts: &[("Måns Forsberg", None, true)] },
    // The default contact's e-mail is malformed.
    EdgeSpec { code: "EDGE05", name: "Bergs Kyltransport AB", domain: "bergskyltransport.se",
        country: Country::Se, contacts: &[("Karin Berg", Some("karin.berg(at)example"), true)] },
    EdgeSpec { code: "EDGE06", name: EDGE06_NAME, domain: "norrbottensakeri.se",
        country: Country::Se,
        contacts: &[("Lennart Öhman", Some("lennart.ohman@norrbottensakeri.se"), true)] },
    // 19-character customer code.
    EdgeSpec { code: "EDGE07LONGCODE12345", name: "Sjöbergs Trävaror AB",
        domain: "sjobergstravaror.se", country: Country::Se,
        contacts: &[("Gunilla Sjöberg", Some("gunilla.sjoberg@sjobergstravaror.se"), true)] },
    // Non-ASCII in Danish, Swedish and Finnish names.
    EdgeSpec { code: "EDGE08", name: "Øresund Fragt ApS", domain: "oresundfragt.dk",
        country: Country::Dk,
        contacts: &[("Søren Ærø Kjærgård", Some("soren.aero.kjaergard@oresundfragt.dk"), true)] },
    EdgeSpec { code: "EDGE08B", name: "Ölands Kött & Smör AB", domain: "olandskottsmor.se",
        country: Country::Se,
        contacts: &[("Örjan Åström", Some("orjan.astrom@olandskottsmor.se"), true)] },
    EdgeSpec { code: "EDGE08C", name: "Jääskeläinen Kuljetus Oy",
        domain: "jaaskelainenkuljetus.fi", country: Country::Fi,
        contacts: &[("Päivi Jääskeläinen", Some("paivi.jaaskelainen@jaaskelainenkuljetus.fi"), true)] },
    // Markup that must travel as plain text.
    EdgeSpec { code: "EDGE09", name: "Åkeri <b>Nord</b> & \"Söner\" AB", domain: "akerinordsoner.se",
        country: Country::Se,
        contacts: &[("<script>alert(1)</script> Lind", Some("lind@akerinordsoner.se"), true)] },
    // The same customer code twice in one read.
    EdgeSpec { code: "EDGE10", name: "Dubbelkodens Transport AB",
        domain: "dubbelkodenstransport.se", country: Country::Se,
        contacts: &[("Bengt Dahlström", Some("bengt.dahlstrom@dubbelkodenstransport.se"), true)] },
    EdgeSpec { code: "EDGE10", name: "Dubbelkodens Logistik AB",
        domain: "dubbelkodenslogistik.se", country: Country::Se,
        contacts: &[("Sara Dahlström", Some("sara.dahlstrom@dubbelkodenslogistik.se"), true)] },
    EdgeSpec { code: "EDGE11", name: "Långnamns Bygg AB", domain: "langnamnsbygg.se",
        country: Country::Se,
        contacts: &[(EDGE11_CONTACT, Some("anna-karin.ek@langnamnsbygg.se"), true)] },
    EdgeSpec { code: "EDGE12", name: "Östgöta Transport AB", domain: "ostgotatransport.se",
        country: Country::Se, contacts: &[("Lars-Erik Johansson", Some(EDGE12_EMAIL), true)] },
    // Sole trader named after its owner; ids are patched in `edge_cases`.
    EdgeSpec { code: "EDGE13", name: "Örjan Lindqvist", domain: "orjanlindqvist.se",
        country: Country::Se,
        contacts: &[("Örjan Lindqvist", Some("orjan.lindqvist@orjanlindqvist.se"), true)] },
    // customerNumber null, patched in `edge_cases`.
    EdgeSpec { code: "EDGE14", name: "Romerike Bygg AS", domain: "romerikebygg.no",
        country: Country::No,
        contacts: &[("Synnøve Moen", Some("synnove.moen@romerikebygg.no"), true)] },
    // Inactive, patched in `edge_cases`.
    EdgeSpec { code: "EDGE15", name: "Himmerlands Vognmand A/S",
        domain: "himmerlandsvognmand.dk", country: Country::Dk,
        contacts: &[("Thøger Bøgh", Some("thoger.bogh@himmerlandsvognmand.dk"), true)] },
];

/// Hand-written customers that probe the connector's validation and contact selection.
/// Their phones, addresses, ids, VAT numbers and notes are distinctive and never produced
/// by the generator, so tests can scan outgoing traffic for them.
pub fn edge_cases() -> Vec<Value> {
    let mut last_id = FIRST_EDGE_REFERENCE_ID;
    EDGE_SPECS
        .iter()
        .zip(11u32..)
        .map(|(spec, slot)| {
            let contacts = spec
                .contacts
                .iter()
                .map(|&(name, email, is_default)| {
                    last_id += 1;
                    edge_reference(last_id, spec.country, name, email, is_default)
                })
                .collect();
            let mut customer = edge_customer(slot, spec, contacts);
            match spec.code {
                "EDGE13" => {
                    // Enskild firma: the "org number" is the owner's personal ID 680412-471C.
                    let (id, vat) = swedish_ids(digits_of(680_412_471));
                    customer["corporateIdNumber"] = Value::String(id);
                    customer["vatNumber"] = Value::String(vat);
                }
                "EDGE14" => customer["customerNumber"] = Value::Null,
                "EDGE15" => customer["isActive"] = Value::Bool(false),
                _ => {}
            }
            customer
        })
        .collect()
}

/// Fills every Opter field of an edge case with values distinctive for `slot` (11..=99):
/// street names, towns and phone series the generator never uses.
fn edge_customer(slot: u32, spec: &EdgeSpec, references: Vec<Value>) -> Value {
    let (street, postal, invoice_postal, city, phone, information) = match spec.country {
        Country::Se => (
            format!("Kantstensvägen {slot}"),
            format!("871 {slot}"),
            format!("870 {slot}"),
            "Härnösand",
            format!("+46 611 471 {slot}"),
            format!("Portkod 47{slot}, ring före leverans"),
        ),
        Country::No => (
            format!("Kantsteinveien {slot}"),
            format!("22{slot}"),
            format!("21{slot}"),
            "Kongsvinger",
            format!("+47 62 47 11 {slot}"),
            format!("Portkode 47{slot}, ring før levering"),
        ),
        Country::Dk => (
            format!("Kantstensvej {slot}"),
            format!("57{slot}"),
            format!("58{slot}"),
            "Svendborg",
            format!("+45 62 47 11 {slot}"),
            format!("Portkode 47{slot}, ring før levering"),
        ),
        Country::Fi => (
            format!("Reunakivenkatu {slot}"),
            format!("57{slot}0"),
            format!("58{slot}0"),
            "Savonlinna",
            format!("+358 15 471 {slot}"),
            format!("Ovikoodi 47{slot}, soita ennen toimitusta"),
        ),
    };
    let d = spec.country.data();
    let (corporate_id, vat) = edge_organisation_ids(spec.country, slot);
    json!({
        "customerCode": spec.code,
        "customerNumber": format!("90{slot:03}"),
        "name": spec.name,
        "corporateIdNumber": corporate_id,
        "vatNumber": vat,
        "visitingAddress": {"street": street, "postalCode": postal, "city": city, "country": d.iso},
        "invoiceAddress": {
            "street": format!("{} 47{slot}", d.box_word),
            "postalCode": invoice_postal,
            "city": city,
            "country": d.iso,
        },
        "phone": phone,
        "email": format!("info@{}", spec.domain),
        "information": information,
        "isActive": true,
        "created": format!("2020-02-{:02}T08:00:00Z", slot - 10),
        "updated": format!("2025-10-{:02}T14:30:00Z", slot - 10),
        "references": references,
    })
}

/// Valid identifiers from a block of ten per slot ("559471-1SSC" in Sweden); the first
/// candidate in the block with a valid mod-11 check digit wins.
fn edge_organisation_ids(country: Country, slot: u32) -> (String, String) {
    let block = u64::from(slot) * 10;
    let found = (0..10).find_map(|k| match country {
        Country::Se => Some(swedish_ids(digits_of(559_471_100 + u64::from(slot)))),
        Country::No => norwegian_ids(digits_of(94_711_000 + block + k)),
        Country::Dk => danish_ids(digits_of(3_471_100 + block + k)),
        Country::Fi => finnish_ids(digits_of(2_471_100 + block + k)),
    });
    found.unwrap_or_default()
}

/// A contact with phone numbers from a series reserved for edge cases.
fn edge_reference(
    id: u64,
    country: Country,
    name: &str,
    email: Option<&str>,
    is_default: bool,
) -> Value {
    let n = id - FIRST_EDGE_REFERENCE_ID;
    let (phone, mobile) = match country {
        Country::Se => (
            format!("+46 611 472 {n:02}"),
            format!("+46 70 473 00 {n:02}"),
        ),
        Country::No => (
            format!("+47 62 47 22 {n:02}"),
            format!("+47 47 47 00 {n:02}"),
        ),
        Country::Dk => (
            format!("+45 62 47 22 {n:02}"),
            format!("+45 28 47 00 {n:02}"),
        ),
        Country::Fi => (
            format!("+358 15 472 {n:02}"),
            format!("+358 40 473 00{n:02}"),
        ),
    };
    json!({
        "id": id,
        "name": name,
        "email": email,
        "phone": phone,
        "mobilePhone": mobile,
        "isDefault": is_default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const CUSTOMER_KEYS: [&str; 14] = [
        "customerCode",
        "customerNumber",
        "name",
        "corporateIdNumber",
        "vatNumber",
        "visitingAddress",
        "invoiceAddress",
        "phone",
        "email",
        "information",
        "isActive",
        "created",
        "updated",
        "references",
    ];
    const ADDRESS_KEYS: [&str; 4] = ["street", "postalCode", "city", "country"];
    const REFERENCE_KEYS: [&str; 6] = ["id", "name", "email", "phone", "mobilePhone", "isDefault"];

    fn fixtures_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/customers.json")
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
    }

    fn refs(v: &Value) -> &Vec<Value> {
        v["references"].as_array().expect("references array")
    }

    fn digits(text: &str) -> Vec<u8> {
        text.bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect()
    }

    fn luhn_valid(text: &str) -> bool {
        let d = digits(text);
        let sum: u32 = d
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &x)| {
                let p = u32::from(x) * if i % 2 == 1 { 2 } else { 1 };
                p / 10 + p % 10
            })
            .sum();
        d.len() == 10 && sum.is_multiple_of(10)
    }

    fn mod11_valid(text: &str, weights: &[u32]) -> bool {
        let d = digits(text);
        d.len() == weights.len() + 1
            && mod11_check_digit(&d[..weights.len()], weights) == Some(d[weights.len()])
    }

    fn is_personal_number(text: &str) -> bool {
        let d = digits(text);
        let month = d[2] * 10 + d[3];
        let day = d[4] * 10 + d[5];
        text.len() == 11
            && text.as_bytes()[6] == b'-'
            && (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && luhn_valid(text)
    }

    fn well_formed_email(email: &str) -> bool {
        let Some((local, domain)) = email.split_once('@') else {
            return false;
        };
        let ok_chars = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        let ok_dots = |p: &str| !p.starts_with('.') && !p.ends_with('.') && !p.contains("..");
        !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && domain.split('.').all(|l| !l.is_empty() && l.len() <= 63)
            && ok_chars(local)
            && ok_chars(domain)
            && ok_dots(local)
            && ok_dots(domain)
    }

    fn assert_all_fields_present(c: &Value) {
        for key in CUSTOMER_KEYS {
            let v = c.get(key).unwrap_or_else(|| panic!("{key} missing in {c}"));
            assert!(
                key == "customerNumber" || !v.is_null(),
                "{key} is null in {c}"
            );
        }
        for addr in ["visitingAddress", "invoiceAddress"] {
            for key in ADDRESS_KEYS {
                assert!(c[addr][key].is_string(), "{addr}.{key} missing in {c}");
            }
        }
        for r in refs(c) {
            for key in REFERENCE_KEYS {
                assert!(r.get(key).is_some(), "reference {key} missing in {c}");
            }
        }
    }

    #[test]
    fn same_seed_gives_identical_output() {
        let a = generate_customers(500, 42);
        let b = generate_customers(500, 42);
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        // A longer run with the same seed extends the shorter one.
        assert_eq!(generate_customers(600, 42)[..500], a[..]);
    }

    #[test]
    fn different_seeds_differ() {
        let a = generate_customers(50, 1);
        let b = generate_customers(50, 2);
        assert_ne!(a, b);
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x["name"] != y["name"])
            .count();
        assert!(differing > 25, "only {differing} names differ");
    }

    #[test]
    fn codes_are_unique() {
        let customers = generate_customers(20_000, 7);
        let codes: HashSet<&str> = customers.iter().map(|c| s(c, "customerCode")).collect();
        assert_eq!(codes.len(), customers.len());
        let ids: HashSet<u64> = customers
            .iter()
            .flat_map(refs)
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        let count: usize = customers.iter().map(|c| refs(c).len()).sum();
        assert_eq!(
            ids.len(),
            count,
            "reference ids must be unique across the set"
        );
    }

    #[test]
    fn every_field_is_present() {
        for c in generate_customers(2_000, 3) {
            assert_all_fields_present(&c);
        }
    }

    #[test]
    fn generated_customers_are_valid_for_the_connector() {
        for c in generate_customers(10_000, 11) {
            let code = s(&c, "customerCode");
            assert!(
                code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{code}"
            );
            assert!(
                c["customerNumber"].is_null()
                    || s(&c, "customerNumber").bytes().all(|b| b.is_ascii_digit())
            );
            assert!(s(&c, "name").chars().count() <= 50, "{}", c["name"]);
            assert!(well_formed_email(s(&c, "email")), "{}", c["email"]);
            let created = DateTime::parse_from_rfc3339(s(&c, "created")).unwrap();
            let updated = DateTime::parse_from_rfc3339(s(&c, "updated")).unwrap();
            assert!(updated >= created);
            let contacts = refs(&c);
            assert!((1..=4).contains(&contacts.len()));
            assert!(contacts.iter().filter(|r| r["isDefault"] == true).count() <= 1);
            for r in contacts {
                assert!(s(r, "name").chars().count() <= 100);
                assert!(well_formed_email(s(r, "email")), "{}", r["email"]);
            }
        }
    }

    #[test]
    fn identifiers_phones_and_postal_codes_match_the_country() {
        for c in generate_customers(5_000, 5) {
            let id = s(&c, "corporateIdNumber");
            let vat = s(&c, "vatNumber");
            let country = s(&c["visitingAddress"], "country");
            let postal = s(&c["visitingAddress"], "postalCode");
            let (dial, id_ok, postal_ok) = match country {
                "SE" => (
                    "+46 ",
                    luhn_valid(id)
                        && id.as_bytes()[6] == b'-'
                        && vat == format!("SE{}01", id.replace('-', "")),
                    postal.len() == 6 && postal.as_bytes()[3] == b' ',
                ),
                "NO" => (
                    "+47 ",
                    mod11_valid(id, &NO_WEIGHTS) && vat == format!("NO{id}MVA"),
                    postal.len() == 4,
                ),
                "DK" => (
                    "+45 ",
                    mod11_valid(id, &DK_WEIGHTS) && vat == format!("DK{id}"),
                    postal.len() == 4,
                ),
                "FI" => (
                    "+358 ",
                    mod11_valid(id, &FI_WEIGHTS)
                        && id.as_bytes()[7] == b'-'
                        && vat == format!("FI{}", id.replace('-', "")),
                    postal.len() == 5,
                ),
                other => panic!("unexpected country {other}"),
            };
            assert!(id_ok, "bad ids {id} / {vat} for {country}");
            assert!(postal_ok, "bad postal code {postal} for {country}");
            assert!(s(&c, "phone").starts_with(dial));
            for r in refs(&c) {
                assert!(s(r, "phone").starts_with(dial) && s(r, "mobilePhone").starts_with(dial));
            }
        }
    }

    #[test]
    fn sole_traders_use_a_luhn_valid_personal_number() {
        let customers = generate_customers(2_000, 9);
        let swedish: Vec<&Value> = customers
            .iter()
            .filter(|c| c["visitingAddress"]["country"] == "SE")
            .collect();
        let sole: Vec<&&Value> = swedish
            .iter()
            .filter(|c| {
                !s(c, "name").ends_with(" AB")
                    && !s(c, "name").ends_with(" HB")
                    && !s(c, "name").ends_with(" KB")
            })
            .collect();
        let share = sole.len() as f64 / swedish.len() as f64;
        assert!((0.10..0.20).contains(&share), "sole trader share {share}");
        for c in sole {
            assert!(
                is_personal_number(s(c, "corporateIdNumber")),
                "{}",
                c["corporateIdNumber"]
            );
            assert!(
                s(c, "name").starts_with(s(&refs(c)[0], "name")),
                "owner is the first contact"
            );
        }
        for c in swedish.iter().filter(|c| s(c, "name").ends_with(" AB")) {
            assert!(!is_personal_number(s(c, "corporateIdNumber")));
        }
    }

    #[test]
    fn hundred_customers_cover_all_four_countries() {
        for seed in [0, 1, 2, 3, FIXTURE_SEED] {
            let countries: HashSet<String> = generate_customers(100, seed)
                .iter()
                .map(|c| s(&c["visitingAddress"], "country").to_string())
                .collect();
            assert_eq!(countries.len(), 4, "seed {seed}: {countries:?}");
        }
    }

    #[test]
    fn mix_matches_the_brief() {
        let customers = generate_customers(20_000, 13);
        let share = |f: &dyn Fn(&Value) -> bool| {
            customers.iter().filter(|c| f(c)).count() as f64 / 20_000.0
        };
        let country = |iso: &'static str| move |c: &Value| c["visitingAddress"]["country"] == iso;
        assert!((0.52..0.58).contains(&share(&country("SE"))));
        assert!((0.18..0.22).contains(&share(&country("NO"))));
        assert!((0.13..0.17).contains(&share(&country("DK"))));
        assert!((0.08..0.12).contains(&share(&country("FI"))));
        assert!((0.02..0.04).contains(&share(&|c: &Value| c["isActive"] == false)));
        assert!((0.04..0.06).contains(&share(&|c: &Value| c["customerNumber"].is_null())));
        let non_ascii = share(&|c: &Value| refs(c).iter().any(|r| !s(r, "name").is_ascii()));
        assert!(non_ascii > 0.3, "non-ASCII contact names: {non_ascii}");
    }

    #[test]
    fn emails_are_transliterated() {
        let mut out = String::new();
        push_ascii(&mut out, "Søren Ærø Jääskeläinen Müller Linnéa Öberg", "");
        assert_eq!(out, "sorenaerojaaskelainenmullerlinneaoberg");
        assert_eq!(domain("Nordström Åkeri", "se"), "nordstromakeri.se");
    }

    #[test]
    fn edge_cases_cover_the_brief() {
        let edges = edge_cases();
        let by_code = |code: &str| {
            edges
                .iter()
                .filter(|c| c["customerCode"] == code)
                .collect::<Vec<_>>()
        };
        let one = |code: &str| {
            let found = by_code(code);
            assert_eq!(found.len(), 1, "{code}");
            found[0]
        };
        for c in &edges {
            assert_all_fields_present(c);
        }
        assert!(refs(one("EDGE01")).is_empty());
        let e2 = refs(one("EDGE02"));
        assert_eq!(e2.len(), 4);
        assert_eq!(e2.iter().filter(|r| r["isDefault"] == true).count(), 1);
        assert_eq!(e2[0]["isDefault"], false);
        let e3 = refs(one("EDGE03"));
        assert!(e3.len() >= 2 && e3.iter().all(|r| r["isDefault"] == false));
        assert!(e3[0]["email"].is_null() && well_formed_email(s(&e3[1], "email")));
        let e4 = refs(one("EDGE04"));
        assert!(e4.len() == 1 && e4[0]["email"].is_null());
        let e5 = refs(one("EDGE05"));
        assert!(e5[0]["isDefault"] == true && !well_formed_email(s(&e5[0], "email")));
        assert_eq!(s(one("EDGE06"), "name").chars().count(), 63);
        assert_eq!(s(one("EDGE07LONGCODE12345"), "customerCode").len(), 19);
        assert_eq!(s(one("EDGE08"), "name"), "Øresund Fragt ApS");
        assert_eq!(refs(one("EDGE08"))[0]["name"], "Søren Ærø Kjærgård");
        assert_eq!(s(one("EDGE08B"), "name"), "Ölands Kött & Smör AB");
        assert_eq!(s(one("EDGE08C"), "name"), "Jääskeläinen Kuljetus Oy");
        assert!(s(one("EDGE09"), "name").contains("<b>"));
        assert!(s(&refs(one("EDGE09"))[0], "name").contains("<script>"));
        let e10 = by_code("EDGE10");
        assert!(e10.len() == 2 && e10[0]["name"] != e10[1]["name"]);
        assert!(s(&refs(one("EDGE11"))[0], "name").chars().count() > 100);
        let long_email = s(&refs(one("EDGE12"))[0], "email");
        assert!(
            long_email.len() >= 256 && well_formed_email(long_email),
            "{}",
            long_email.len()
        );
        let e13 = one("EDGE13");
        assert!(is_personal_number(s(e13, "corporateIdNumber")));
        assert_eq!(e13["name"], refs(e13)[0]["name"]);
        assert!(one("EDGE14")["customerNumber"].is_null());
        assert_eq!(one("EDGE15")["isActive"], false);
        for c in edges.iter().filter(|c| c["customerCode"] != "EDGE13") {
            let id = s(c, "corporateIdNumber");
            let valid = match s(&c["visitingAddress"], "country") {
                "SE" => luhn_valid(id),
                "NO" => mod11_valid(id, &NO_WEIGHTS),
                "DK" => mod11_valid(id, &DK_WEIGHTS),
                _ => mod11_valid(id, &FI_WEIGHTS),
            };
            assert!(valid, "{id}");
        }
    }

    /// The values that must never leave: distinct per edge case, and never part of any
    /// name or e-mail address the connector is allowed to send.
    #[test]
    fn edge_case_private_values_are_distinct_and_never_in_sendable_fields() {
        let edges = edge_cases();
        let mut private = Vec::new();
        for c in &edges {
            for key in ["phone", "corporateIdNumber", "vatNumber", "information"] {
                private.push(s(c, key).to_string());
            }
            for addr in ["visitingAddress", "invoiceAddress"] {
                private.push(s(&c[addr], "street").to_string());
            }
            private.push(format!(
                "{} {}",
                s(&c["visitingAddress"], "street"),
                s(&c["visitingAddress"], "postalCode")
            ));
            for r in refs(c) {
                private.push(s(r, "phone").to_string());
                private.push(s(r, "mobilePhone").to_string());
            }
        }
        let unique: HashSet<&String> = private.iter().collect();
        assert_eq!(
            unique.len(),
            private.len(),
            "edge-case private values must be distinct"
        );

        let mut all = generate_customers(FIXTURE_GENERATED, FIXTURE_SEED);
        all.extend(edges);
        let mut sendable = String::new();
        for c in &all {
            sendable.push_str(s(c, "name"));
            sendable.push('\n');
            for r in refs(c) {
                sendable.push_str(r["name"].as_str().unwrap_or(""));
                sendable.push('\n');
                sendable.push_str(r["email"].as_str().unwrap_or(""));
                sendable.push('\n');
            }
        }
        for value in &private {
            assert!(
                !sendable.contains(value.as_str()),
                "{value} appears in a sendable field"
            );
        }
    }

    #[test]
    fn bundled_fixtures_start_with_the_generated_set() {
        let text = std::fs::read_to_string(fixtures_path()).expect("fixtures/customers.json");
        let fixtures: Vec<Value> = serde_json::from_str(&text).expect("valid JSON array");
        let generated = generate_customers(FIXTURE_GENERATED, FIXTURE_SEED);
        assert!(fixtures.len() >= FIXTURE_GENERATED);
        assert_eq!(
            fixtures[..FIXTURE_GENERATED],
            generated[..],
            "regenerate with write_bundled_fixtures"
        );
        let tail = &fixtures[FIXTURE_GENERATED..];
        for edge in edge_cases() {
            assert!(
                tail.contains(&edge),
                "edge case {} missing or stale",
                edge["customerCode"]
            );
        }
    }

    /// Regenerates fixtures/customers.json: `cargo test --lib write_bundled_fixtures -- --ignored`.
    #[test]
    #[ignore]
    fn write_bundled_fixtures() {
        let mut all = generate_customers(FIXTURE_GENERATED, FIXTURE_SEED);
        all.extend(edge_cases());
        let mut text = serde_json::to_string_pretty(&all).unwrap();
        text.push('\n');
        let path = fixtures_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }

    /// `cargo test --release --lib generating_100k -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn generating_100k_customers_is_fast() {
        let start = std::time::Instant::now();
        let customers = generate_customers(100_000, 1);
        let elapsed = start.elapsed();
        println!("100k customers in {elapsed:?}");
        assert_eq!(customers.len(), 100_000);
        if !cfg!(debug_assertions) {
            assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
        }
    }
}
