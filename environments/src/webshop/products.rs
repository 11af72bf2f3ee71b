//! The seeded synthetic product catalog.
//!
//! The real WebShop catalog (≈1.18M scraped Amazon products) cannot be downloaded here, so Kiln
//! generates a catalog with the same fields and the same kinds of near misses: 6 top-level
//! categories × 4 product types (each type is one search `query`), [`PRODUCTS_PER_TYPE`] products
//! per type by default. Products of one type share a query (they differ in attributes, options and
//! price); types of one sub-category share two `product_category` levels; brands, user words and
//! accessory nouns are shared across categories, so a wrong purchase often shares a few nouns with
//! the goal — which is what makes WebShop's partial type factors (0.5, 0.1) and missing attributes,
//! options or price really occur.
//!
//! Titles are built only from noun slots (brand, material, product type, "for" user, accessory
//! compounds), so the noun heuristic is exact by construction: a title's nouns are its lowercased
//! words that belong to the generator's noun lexicon ([`noun_lexicon`]). The original used spaCy's
//! NOUN/PROPN tags on the product name; brands count as nouns there too (PROPN).

use std::collections::{BTreeSet, HashSet};

use super::rng::Rng;

/// Products generated per product type (24 types) by default: 1,200 products.
pub const PRODUCTS_PER_TYPE: usize = 50;

/// One product, with the fields WebShop's pages and reward read.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// Amazon-style id: `B0` + 8 characters, uppercase (10 characters).
    pub asin: String,
    /// The product name, which is also its title.
    pub name: String,
    /// The search query the product was collected under (one per product type).
    pub query: String,
    /// Short category id (`fashion`, `beauty`, `grocery`, `home`, `electronics`, `sports`).
    pub category: String,
    /// `'›'`-separated category path, three levels.
    pub product_category: String,
    pub attributes: Vec<String>,
    pub description: String,
    pub bullet_points: Vec<String>,
    /// Option name → values, in page order. Values are lowercase and unique within the product.
    pub options: Vec<(String, Vec<String>)>,
    /// One price, or a `[low, high]` range, as listed.
    pub pricing: Vec<f64>,
    /// The price charged: the single price, or a value sampled once from the range at load.
    pub price: f64,
    /// Lowercased nouns of `name` (see the module docs).
    pub nouns: BTreeSet<String>,
}

impl Product {
    /// The listed price as WebShop shows it: `$12.99` or `$12.99 to $15.49`.
    pub fn price_tag(&self) -> String {
        match self.pricing.as_slice() {
            [low, high] => format!("${low:.2} to ${high:.2}"),
            [single] => format!("${single:.2}"),
            _ => "$100.00".to_string(),
        }
    }

    /// Every option value of the product.
    pub fn option_values(&self) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .flat_map(|(_, values)| values.iter().map(String::as_str))
    }

    /// The option name a value belongs to.
    pub fn option_name_of(&self, value: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(_, values)| values.iter().any(|candidate| candidate == value))
            .map(|(name, _)| name.as_str())
    }
}

struct TypeDef {
    /// Second and third category levels.
    sub: &'static str,
    leaf: &'static str,
    /// Type noun phrase, used in titles and as the query.
    noun: &'static str,
    materials: &'static [&'static str],
    price: (f64, f64),
}

struct CategoryDef {
    short: &'static str,
    top: &'static str,
    users: &'static [&'static str],
    /// Adjective-like phrases: goals ask for them; titles never contain them.
    attributes: &'static [&'static str],
    /// Noun compounds appended to titles.
    features: &'static [&'static str],
    /// Option name → the pool its values come from (kept in pool order on the page).
    options: &'static [(&'static str, &'static [&'static str])],
    types: [TypeDef; 4],
}

const COLORS: &[&str] = &[
    "black",
    "white",
    "navy blue",
    "light grey",
    "burgundy",
    "olive green",
    "royal blue",
    "beige",
    "charcoal",
    "hot pink",
    "khaki",
    "red",
];
const CLOTHING_SIZES: &[&str] = &["x-small", "small", "medium", "large", "x-large", "xx-large"];
const SHOE_SIZES: &[&str] = &["6", "6.5", "7", "7.5", "8", "8.5", "9", "10", "11", "12"];

/// Accessory compounds any category may append to a title: cross-category noun overlap.
const COMMON_FEATURES: &[&str] = &["Gift Box", "Travel Pouch", "Storage Bag", "Value Pack"];

/// Brand words, shared by every category.
const BRANDS: &[&str] = &[
    "Kestrel",
    "Halden",
    "Brightwell",
    "Norvik",
    "Solenne",
    "Tamberly",
    "Corvane",
    "Ardent",
    "Lumio",
    "Westbrook",
    "Pinecrest",
    "Velora",
    "Mistral",
    "Oakhaven",
    "Zephyra",
    "Calloway",
    "Driftwood",
    "Everly",
    "Juniper",
    "Marlowe",
];

const CATEGORIES: [CategoryDef; 6] = [
    CategoryDef {
        short: "fashion",
        top: "Clothing, Shoes & Jewelry",
        users: &["Women", "Men", "Kids"],
        attributes: &[
            "machine wash",
            "moisture wicking",
            "non slip",
            "lace up closure",
            "relaxed fit",
            "water resistant",
            "quick drying",
            "arch support",
        ],
        features: &[
            "Ankle Support",
            "Rubber Outsole",
            "Mesh Lining",
            "Toe Cap",
            "Heel Pull Tab",
            "Cotton Blend",
            "Chest Pocket",
            "Drawstring Hood",
        ],
        options: &[("color", COLORS), ("size", CLOTHING_SIZES)],
        types: [
            TypeDef {
                sub: "Shoes",
                leaf: "Hiking Boots",
                noun: "Hiking Boots",
                materials: &["Leather", "Suede", "Nubuck"],
                price: (39.0, 149.0),
            },
            TypeDef {
                sub: "Shoes",
                leaf: "Running Shoes",
                noun: "Running Shoes",
                materials: &["Mesh", "Knit", "Leather"],
                price: (29.0, 129.0),
            },
            TypeDef {
                sub: "Tops & Tees",
                leaf: "Hoodies",
                noun: "Pullover Hoodie",
                materials: &["Fleece", "Cotton", "Polyester"],
                price: (19.0, 69.0),
            },
            TypeDef {
                sub: "Tops & Tees",
                leaf: "T-Shirts",
                noun: "Crew Neck Tee",
                materials: &["Cotton", "Linen", "Polyester"],
                price: (9.0, 34.0),
            },
        ],
    },
    CategoryDef {
        short: "beauty",
        top: "Beauty & Personal Care",
        users: &["Women", "Men", "Teens"],
        attributes: &[
            "paraben free",
            "cruelty free",
            "long lasting",
            "sensitive skin",
            "natural ingredients",
            "fragrance free",
            "travel size",
            "dermatologist tested",
        ],
        features: &[
            "Pump Bottle",
            "Vitamin Complex",
            "Argan Oil",
            "Aloe Extract",
            "Shea Butter",
            "Mirror Case",
        ],
        options: &[
            (
                "scent",
                &[
                    "unscented",
                    "lavender",
                    "coconut",
                    "fresh citrus",
                    "vanilla",
                    "eucalyptus mint",
                ],
            ),
            (
                "size",
                &["2 fl oz", "4 fl oz", "8 fl oz", "16 fl oz", "32 fl oz"],
            ),
        ],
        types: [
            TypeDef {
                sub: "Hair Care",
                leaf: "Shampoo",
                noun: "Shampoo",
                materials: &["Keratin", "Biotin", "Charcoal"],
                price: (6.0, 39.0),
            },
            TypeDef {
                sub: "Hair Care",
                leaf: "Hair Masks",
                noun: "Hair Mask",
                materials: &["Keratin", "Honey", "Collagen"],
                price: (8.0, 45.0),
            },
            TypeDef {
                sub: "Skin Care",
                leaf: "Face Moisturizers",
                noun: "Face Moisturizer",
                materials: &["Hyaluronic", "Retinol", "Collagen"],
                price: (9.0, 79.0),
            },
            TypeDef {
                sub: "Skin Care",
                leaf: "Lip Balms",
                noun: "Lip Balm",
                materials: &["Beeswax", "Honey", "Cocoa"],
                price: (3.0, 19.0),
            },
        ],
    },
    CategoryDef {
        short: "grocery",
        top: "Grocery & Gourmet Food",
        users: &["Adults", "Kids", "Families"],
        attributes: &[
            "gluten free",
            "non gmo",
            "low sugar",
            "high protein",
            "keto friendly",
            "individually wrapped",
            "plant based",
            "kosher certified",
        ],
        features: &[
            "Snack Pack",
            "Resealable Pouch",
            "Breakfast Treat",
            "Lunch Box",
            "Party Platter",
            "Office Pantry",
        ],
        options: &[
            (
                "flavor name",
                &[
                    "dark chocolate",
                    "peanut butter",
                    "sea salt caramel",
                    "honey almond",
                    "strawberry",
                    "cinnamon",
                ],
            ),
            (
                "size",
                &[
                    "6 count (pack of 1)",
                    "12 count (pack of 1)",
                    "12 count (pack of 2)",
                    "24 count (pack of 1)",
                ],
            ),
        ],
        types: [
            TypeDef {
                sub: "Snacks",
                leaf: "Protein Bars",
                noun: "Protein Bars",
                materials: &["Whey", "Almond", "Oat"],
                price: (12.0, 49.0),
            },
            TypeDef {
                sub: "Snacks",
                leaf: "Trail Mix",
                noun: "Trail Mix",
                materials: &["Cashew", "Almond", "Walnut"],
                price: (7.0, 35.0),
            },
            TypeDef {
                sub: "Beverages",
                leaf: "Green Tea",
                noun: "Green Tea Bags",
                materials: &["Matcha", "Jasmine", "Sencha"],
                price: (5.0, 29.0),
            },
            TypeDef {
                sub: "Beverages",
                leaf: "Coffee",
                noun: "Coffee Beans",
                materials: &["Arabica", "Robusta", "Espresso"],
                price: (9.0, 45.0),
            },
        ],
    },
    CategoryDef {
        short: "home",
        top: "Home & Kitchen",
        users: &["Families", "Adults", "Kids"],
        attributes: &[
            "machine washable",
            "wrinkle free",
            "easy clean",
            "dishwasher safe",
            "heavy duty",
            "space saving",
            "hypoallergenic",
            "stain resistant",
        ],
        features: &[
            "Pillow Cases",
            "Corner Straps",
            "Storage Bag",
            "Knife Block",
            "Lid Set",
            "Wall Hook",
        ],
        options: &[
            ("color", COLORS),
            (
                "size",
                &["twin", "full", "queen", "king", "california king"],
            ),
        ],
        types: [
            TypeDef {
                sub: "Bedding",
                leaf: "Sheet Sets",
                noun: "Bed Sheet Set",
                materials: &["Microfiber", "Bamboo", "Cotton"],
                price: (19.0, 119.0),
            },
            TypeDef {
                sub: "Bedding",
                leaf: "Comforters",
                noun: "Comforter",
                materials: &["Down", "Microfiber", "Cotton"],
                price: (29.0, 189.0),
            },
            TypeDef {
                sub: "Kitchen & Dining",
                leaf: "Cookware Sets",
                noun: "Cookware Set",
                materials: &["Ceramic", "Steel", "Granite"],
                price: (39.0, 249.0),
            },
            TypeDef {
                sub: "Kitchen & Dining",
                leaf: "Mugs",
                noun: "Coffee Mug",
                materials: &["Ceramic", "Porcelain", "Steel"],
                price: (7.0, 39.0),
            },
        ],
    },
    CategoryDef {
        short: "electronics",
        top: "Electronics",
        users: &["Adults", "Teens", "Kids"],
        attributes: &[
            "noise cancelling",
            "fast charging",
            "long battery life",
            "hands free",
            "water resistant",
            "bluetooth 5.0",
            "easy install",
            "high definition",
        ],
        features: &[
            "Charging Case",
            "Carrying Case",
            "Ear Tips",
            "Screen Protector",
            "Wall Adapter",
            "Cable Organizer",
        ],
        options: &[
            ("color", COLORS),
            ("style", &["standard", "pro", "lite", "deluxe bundle"]),
        ],
        types: [
            TypeDef {
                sub: "Headphones",
                leaf: "Earbuds",
                noun: "Wireless Earbuds",
                materials: &["Titanium", "Graphene", "Aluminum"],
                price: (15.0, 199.0),
            },
            TypeDef {
                sub: "Headphones",
                leaf: "Over-Ear Headphones",
                noun: "Headphones",
                materials: &["Aluminum", "Leather", "Titanium"],
                price: (25.0, 299.0),
            },
            TypeDef {
                sub: "Accessories",
                leaf: "Phone Cases",
                noun: "Phone Case",
                materials: &["Silicone", "Leather", "Carbon"],
                price: (6.0, 45.0),
            },
            TypeDef {
                sub: "Accessories",
                leaf: "Chargers",
                noun: "Charger Cable",
                materials: &["Nylon", "Braid", "Aluminum"],
                price: (7.0, 39.0),
            },
        ],
    },
    CategoryDef {
        short: "sports",
        top: "Sports & Outdoors",
        users: &["Women", "Men", "Adults"],
        attributes: &[
            "lightweight",
            "water resistant",
            "easy setup",
            "non slip",
            "extra thick",
            "compact design",
            "odor resistant",
            "tear resistant",
        ],
        features: &[
            "Carrying Strap",
            "Compression Sack",
            "Stake Kit",
            "Rain Fly",
            "Door Anchor",
            "Workout Guide",
        ],
        options: &[
            ("color", COLORS),
            ("size", &["one size", "2 person", "4 person", "6 person"]),
        ],
        types: [
            TypeDef {
                sub: "Camping",
                leaf: "Sleeping Bags",
                noun: "Sleeping Bag",
                materials: &["Nylon", "Polyester", "Down"],
                price: (25.0, 179.0),
            },
            TypeDef {
                sub: "Camping",
                leaf: "Tents",
                noun: "Camping Tent",
                materials: &["Nylon", "Polyester", "Canvas"],
                price: (49.0, 299.0),
            },
            TypeDef {
                sub: "Fitness",
                leaf: "Yoga Mats",
                noun: "Yoga Mat",
                materials: &["Rubber", "Cork", "Foam"],
                price: (14.0, 89.0),
            },
            TypeDef {
                sub: "Fitness",
                leaf: "Resistance Bands",
                noun: "Resistance Bands",
                materials: &["Latex", "Fabric", "Rubber"],
                price: (9.0, 49.0),
            },
        ],
    },
];

/// Every word the generator puts in a noun slot of a title, lowercased: brands, materials, type
/// phrases, user words and accessory compounds.
pub fn noun_lexicon() -> HashSet<String> {
    let mut words = HashSet::new();
    let mut add = |phrase: &str| {
        for word in words_of(phrase) {
            words.insert(word);
        }
    };
    BRANDS.iter().for_each(|brand| add(brand));
    COMMON_FEATURES.iter().for_each(|feature| add(feature));
    for category in &CATEGORIES {
        category.users.iter().for_each(|user| add(user));
        category.features.iter().for_each(|feature| add(feature));
        for kind in &category.types {
            add(kind.noun);
            kind.materials.iter().for_each(|material| add(material));
        }
    }
    words
}

/// Lowercased alphanumeric words of `text`.
pub fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The nouns of a product name: its lowercased words that are in `lexicon`.
pub fn noun_set(name: &str, lexicon: &HashSet<String>) -> BTreeSet<String> {
    words_of(name)
        .into_iter()
        .filter(|word| lexicon.contains(word))
        .collect()
}

/// Generates the catalog: `per_type` products for each of the 24 product types, in type order.
/// Everything (titles, ASINs, options, prices, the sampled price of ranges) follows from `seed`.
pub fn generate_products(seed: u64, per_type: usize) -> Vec<Product> {
    let lexicon = noun_lexicon();
    let mut rng = Rng::derive(seed, 1);
    let mut products = Vec::new();
    let mut titles = HashSet::new();
    let mut asins = HashSet::new();
    for category in &CATEGORIES {
        for kind in &category.types {
            for _ in 0..per_type {
                let product = loop {
                    let candidate = generate_product(&mut rng, category, kind, &lexicon);
                    if titles.insert(candidate.name.clone()) {
                        break candidate;
                    }
                };
                let mut product = product;
                product.asin = loop {
                    let asin = random_asin(&mut rng);
                    if asins.insert(asin.clone()) {
                        break asin;
                    }
                };
                products.push(product);
            }
        }
    }
    products
}

fn random_asin(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let tail: String = (0..8)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
        .collect();
    format!("B0{tail}")
}

fn generate_product(
    rng: &mut Rng,
    category: &CategoryDef,
    kind: &TypeDef,
    lexicon: &HashSet<String>,
) -> Product {
    let brand = rng.pick(BRANDS);
    let material = rng.pick(kind.materials);
    let user = rng.pick(category.users);
    // 1–5 accessory compounds; one in four products also borrows a cross-category one.
    let feature_count = rng.range(1, 4);
    let mut features = rng.sample(category.features, feature_count);
    if rng.chance(0.25) {
        features.push(*rng.pick(COMMON_FEATURES));
    }
    let name = format!(
        "{brand} {material} {} for {user}, {}",
        kind.noun,
        features.join(", ")
    );
    let attribute_count = rng.range(2, 4);
    let attributes: Vec<String> = rng
        .sample(category.attributes, attribute_count)
        .into_iter()
        .map(str::to_string)
        .collect();
    let type_phrase = kind.noun.to_lowercase();
    let material_word = material.to_lowercase();
    let description = format!(
        "This {type_phrase} from {brand} is made of {material_word} and designed for {}. It is {}. \
         Every order ships with {}.",
        user.to_lowercase(),
        join_and(&attributes),
        features
            .iter()
            .map(|feature| feature.to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut bullet_points = vec![format!(
        "{} {} made of {material_word} for {}",
        brand,
        type_phrase,
        user.to_lowercase()
    )];
    bullet_points.extend(
        attributes
            .iter()
            .map(|attribute| format!("{}: tested and verified", capitalize(attribute))),
    );
    bullet_points.push(format!(
        "Includes {}",
        features.join(" and ").to_lowercase()
    ));
    let options = generate_options(rng, category);
    let (pricing, price) = generate_price(rng, kind.price);
    Product {
        asin: String::new(),
        nouns: noun_set(&name, lexicon),
        name,
        query: type_phrase,
        category: category.short.to_string(),
        product_category: format!("{} › {} › {}", category.top, kind.sub, kind.leaf),
        attributes,
        description,
        bullet_points,
        options,
        pricing,
        price,
    }
}

/// Each option name of the category with probability 0.85, 2–5 values in pool order; one product
/// in ten has no options at all (as many real listings).
fn generate_options(rng: &mut Rng, category: &CategoryDef) -> Vec<(String, Vec<String>)> {
    if rng.chance(0.1) {
        return Vec::new();
    }
    let mut options = Vec::new();
    for (name, pool) in category.options {
        if !rng.chance(0.85) {
            continue;
        }
        let pool: &[&str] = if *name == "size" && category.short == "fashion" && rng.chance(0.5) {
            SHOE_SIZES
        } else {
            pool
        };
        let count = rng.range(2, 5.min(pool.len()));
        let mut chosen = rng.sample(&(0..pool.len()).collect::<Vec<_>>(), count);
        chosen.sort_unstable();
        let values = chosen.into_iter().map(|i| pool[i].to_string()).collect();
        options.push((name.to_string(), values));
    }
    options
}

/// A `.99` price in the type's range; one product in four lists a range up to 35% higher, whose
/// charged price is sampled uniformly once (WebShop samples ranges at load).
fn generate_price(rng: &mut Rng, (low, high): (f64, f64)) -> (Vec<f64>, f64) {
    let base = (low + rng.unit() * (high - low)).floor() + 0.99;
    if !rng.chance(0.25) {
        return (vec![base], base);
    }
    let top = (base * (1.1 + rng.unit() * 0.25)).floor() + 0.99;
    let sampled = base + rng.unit() * (top - base);
    (vec![base, top], sampled)
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_have_every_field_and_unique_ids() {
        let products = generate_products(11, 20);
        assert_eq!(products.len(), 24 * 20);
        let asins: HashSet<&str> = products.iter().map(|p| p.asin.as_str()).collect();
        assert_eq!(asins.len(), products.len());
        for product in &products {
            assert_eq!(product.asin.len(), 10, "{}", product.asin);
            assert!(product.product_category.split('›').count() >= 2);
            assert!(!product.attributes.is_empty());
            assert!(!product.bullet_points.is_empty());
            assert!(
                product.nouns.len() >= 5,
                "{}: {:?}",
                product.name,
                product.nouns
            );
            assert!(product.pricing.len() == 1 || product.pricing.len() == 2);
            assert!(
                product.price >= product.pricing[0]
                    && product.price <= *product.pricing.last().unwrap()
            );
            let values: Vec<&str> = product.option_values().collect();
            let distinct: HashSet<&str> = values.iter().copied().collect();
            assert_eq!(values.len(), distinct.len(), "{:?}", product.options);
        }
    }

    #[test]
    fn generation_is_seeded() {
        assert_eq!(generate_products(3, 5), generate_products(3, 5));
        assert_ne!(generate_products(3, 5), generate_products(4, 5));
    }

    #[test]
    fn nouns_come_from_the_noun_slots() {
        let lexicon = noun_lexicon();
        let nouns = noun_set(
            "Kestrel Leather Hiking Boots for Women, Ankle Support",
            &lexicon,
        );
        let expected: BTreeSet<String> = [
            "kestrel", "leather", "hiking", "boots", "women", "ankle", "support",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(nouns, expected);
    }
}
