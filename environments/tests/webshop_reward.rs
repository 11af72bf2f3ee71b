//! WebShop's reward, factor by factor (engine/goal.py), and `token_set_ratio` against values the
//! real thefuzz package computed.

use std::collections::BTreeSet;

use kiln_environments::webshop::fuzz::token_set_ratio;
use kiln_environments::webshop::goals::Goal;
use kiln_environments::webshop::products::Product;
use kiln_environments::webshop::reward::{
    attribute_matches, normalize_color, option_matches, reward, type_reward,
};

const BOOTS_CATEGORY: &str = "Clothing, Shoes & Jewelry › Shoes › Hiking Boots";

fn nouns(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|word| word.to_string()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn goal(name_nouns: &[&str]) -> Goal {
    Goal {
        product: 0,
        asin: "B0TARGET00".into(),
        name: "Kestrel Leather Hiking Boots for Women".into(),
        query: "hiking boots".into(),
        product_category: BOOTS_CATEGORY.into(),
        name_nouns: nouns(name_nouns),
        attributes: strings(&["machine washable", "rubber sole"]),
        goal_options: vec![
            ("color".into(), "royal blue".into()),
            ("size".into(), "large".into()),
        ],
        price_upper: 50.0,
        instruction_text: "i need hiking boots, and price lower than 50.00 dollars".into(),
    }
}

fn product(price: f64) -> Product {
    Product {
        asin: "B0PRODUCT1".into(),
        name: "Halden Suede Hiking Boots for Women, Toe Cap".into(),
        query: "hiking boots".into(),
        category: "fashion".into(),
        product_category: BOOTS_CATEGORY.into(),
        attributes: strings(&["machine wash", "non slip"]),
        description: "Sturdy boots for long trails.".into(),
        bullet_points: strings(&["Halden hiking boots", "Rubber sole with deep lugs"]),
        options: vec![
            ("color".into(), strings(&["navy blue", "black"])),
            ("size".into(), strings(&["x-large", "medium"])),
        ],
        pricing: vec![price],
        price,
        nouns: nouns(&["halden", "suede", "hiking", "boots", "women", "toe", "cap"]),
    }
}

const FIVE: [&str; 5] = ["kestrel", "leather", "hiking", "boots", "women"];
const ELEVEN: [&str; 11] = [
    "kestrel", "leather", "hiking", "boots", "women", "ankle", "support", "rubber", "outsole",
    "gift", "box",
];

#[test]
fn type_factor_is_one_on_query_or_category_match_or_enough_shared_nouns() {
    let goal = goal(&FIVE);
    // Same query, one of five nouns shared (0.2): the query match keeps 1.
    let r = type_reward(
        "hiking boots",
        "Other › Thing › Else",
        &nouns(&["boots"]),
        &goal,
    );
    assert_eq!(
        (r.r_type, r.query_match, r.category_match),
        (1.0, true, false)
    );
    assert!((r.title_score - 0.2).abs() < 1e-12);
    // Another query, two shared category levels: 1.
    let r = type_reward(
        "running shoes",
        "Clothing, Shoes & Jewelry › Shoes › Running Shoes",
        &nouns(&["women"]),
        &goal,
    );
    assert_eq!((r.r_type, r.category_match), (1.0, true));
    // Another query, one shared level, two of five nouns shared (0.4 > 0.2): 1.
    let r = type_reward(
        "pullover hoodie",
        "Clothing, Shoes & Jewelry › Tops & Tees › Hoodies",
        &nouns(&["kestrel", "women", "fleece"]),
        &goal,
    );
    assert_eq!((r.r_type, r.category_match), (1.0, false));
}

#[test]
fn type_factor_half_tenth_and_zero() {
    let goal5 = goal(&FIVE);
    // No query or category match, overlap exactly 0.2 (not > 0.2): 0.5.
    let r = type_reward(
        "yoga mat",
        "Sports & Outdoors › Fitness › Yoga Mats",
        &nouns(&["women", "mat"]),
        &goal5,
    );
    assert_eq!(r.r_type, 0.5);
    // Overlap 1/11 < 0.1: 0.1, even with the same query.
    let goal11 = goal(&ELEVEN);
    let r = type_reward("hiking boots", BOOTS_CATEGORY, &nouns(&["boots"]), &goal11);
    assert!(r.query_match && r.category_match);
    assert_eq!(r.r_type, 0.1);
    // No shared noun: 0 whatever else matches.
    let r = type_reward("hiking boots", BOOTS_CATEGORY, &nouns(&["tent"]), &goal5);
    assert_eq!(r.r_type, 0.0);
    // A goal name without nouns scores an overlap of 0.2: 0.5 without a match, 1 with one.
    let empty = goal(&[]);
    assert_eq!(
        type_reward("tent", "A › B › C", &nouns(&["tent"]), &empty).r_type,
        0.5
    );
    assert_eq!(
        type_reward("hiking boots", "A › B › C", &nouns(&[]), &empty).r_type,
        1.0
    );
}

#[test]
fn attributes_match_fuzzily_or_as_substrings_of_the_text() {
    let product = product(40.0);
    // "machine washable" ~ "machine wash": token_set_ratio 86 > 85.
    assert_eq!(
        attribute_matches(&product, &strings(&["machine washable"])),
        1
    );
    // "slip resistant" ~ "non slip" is 67, and the text does not contain it.
    assert_eq!(
        attribute_matches(&product, &strings(&["slip resistant"])),
        0
    );
    // "rubber sole" is in a bullet point (lowercased), "long trails" in the description,
    // "suede hiking" in the title.
    assert_eq!(
        attribute_matches(
            &product,
            &strings(&["rubber sole", "long trails", "suede hiking"])
        ),
        3
    );
    assert_eq!(
        attribute_matches(&product, &strings(&["water resistant"])),
        0
    );
}

#[test]
fn colors_normalize_to_the_first_color_set_entry_they_contain() {
    // The cases of WebShop's own test_normalize_color, plus two of this catalog's colors.
    for (value, expected) in [
        ("", ""),
        ("black forest", "black"),
        ("violet lavender", "lavender"),
        ("steelivy fuchsia", "fuchsia"),
        ("123alabaster", "alabaster"),
        ("webshop", "webshop"),
        ("navy blue", "blue"),
        ("light grey", "grey"),
    ] {
        assert_eq!(normalize_color(value), expected, "{value}");
    }
}

#[test]
fn options_match_after_color_normalization() {
    let selected = strings(&["navy blue", "x-large"]);
    // royal blue and navy blue both normalize to blue; "x large" contains "large" (100).
    assert_eq!(
        option_matches(&selected, &strings(&["royal blue", "large"])),
        2
    );
    assert_eq!(option_matches(&selected, &strings(&["red"])), 0);
    // WebShop's own test_get_option_reward cases.
    let goal = strings(&["grey", "XL", "pack of 12"]);
    assert_eq!(
        option_matches(&strings(&["pack of 12", "grey", "XL"]), &goal),
        3
    );
    assert_eq!(
        option_matches(&strings(&["pack of 12", "blue", "XL"]), &goal),
        2
    );
    assert_eq!(option_matches(&[], &goal), 0);
}

#[test]
fn the_reward_combines_the_factors() {
    let goal = goal(&FIVE);
    let selected = strings(&["navy blue", "x-large"]);
    // Type 1 (same query), attributes 2/2, options 2/2, price 40 ≤ 50: R = 1.
    let full = reward(&product(40.0), &selected, &goal);
    assert_eq!(full.reward, 1.0);
    assert!(full.success());
    // Price 60 > 50: (2 + 2 + 0) / 5.
    let pricey = reward(&product(60.0), &selected, &goal);
    assert!(!pricey.price_ok);
    assert!((pricey.reward - 0.8).abs() < 1e-12);
    // No options chosen: (2 + 0 + 1) / 5.
    let bare = reward(&product(40.0), &[], &goal);
    assert_eq!((bare.option_matches, bare.options_asked), (0, 2));
    assert!((bare.reward - 0.6).abs() < 1e-12);
    // A type factor of 0.5 scales everything.
    let mut elsewhere = product(40.0);
    elsewhere.query = "yoga mat".into();
    elsewhere.product_category = "Sports & Outdoors › Fitness › Yoga Mats".into();
    elsewhere.nouns = nouns(&["women", "mat"]);
    let half = reward(&elsewhere, &selected, &goal);
    assert_eq!(half.r_type.r_type, 0.5);
    assert!((half.reward - 0.5).abs() < 1e-12);
    assert!(!half.success());
}

/// A table computed by thefuzz 0.22.1 (rapidfuzz 3.14.6): `tests/support/thefuzz_table.py`.
#[test]
fn token_set_ratio_matches_thefuzz() {
    let table = include_str!("data/thefuzz_token_set_ratio.tsv");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in table.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "bad table line {line:?}");
        let expected: u32 = fields[2].parse().unwrap();
        let got = token_set_ratio(fields[0], fields[1]);
        if got != expected {
            mismatches.push(format!(
                "{:?} vs {:?}: thefuzz {expected}, kiln {got}",
                fields[0], fields[1]
            ));
        }
        checked += 1;
    }
    assert_eq!(checked, 3000);
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn token_set_ratio_pinned_cases() {
    // Values from thefuzz 0.22.1.
    for (a, b, expected) in [
        ("machine wash", "machine washable", 86),
        ("non slip", "slip resistant", 67),
        ("x-large", "large", 100),
        ("high heel", "high heels", 95),
        ("12 ounce (pack of 2)", "12 ounce (pack of 3)", 94),
        ("queen", "king", 22),
        ("Café Crème", "cafe creme", 89),
        ("noise cancelling", "noise canceling", 97),
        ("individually wrapped", "individual wrapping", 82),
        ("fast charging", "fast charger", 80),
        ("", "", 0),
        ("abc", "", 0),
    ] {
        assert_eq!(token_set_ratio(a, b), expected, "{a:?} vs {b:?}");
    }
}
