//! WebShop's reward (`web_agent_site/engine/goal.py::get_reward`), factor by factor:
//!
//! `R = r_type × (n_att + n_opt + [price ≤ price_upper]) / (|goal attributes| + |goal options| + 1)`
//!
//! - `r_type` ([`type_reward`]): 1; 0.5 unless the queries are equal, or ≥ 2 category levels are
//!   shared, or the noun overlap (shared nouns / goal nouns) is > 0.2; 0.1 when the overlap is
//!   < 0.1; 0 when it is 0. A goal name without nouns scores an overlap of 0.2.
//! - `n_att` ([`attribute_matches`]): a goal attribute counts when some product attribute has
//!   `token_set_ratio` > 85, or when it is a substring of the lowercased title, bullet points
//!   (joined with spaces) or description.
//! - `n_opt` ([`option_matches`]): selected values and goal values are both reduced by
//!   [`normalize_color`]; a goal value counts when some selected value has `token_set_ratio` > 85.
//!
//! Noun overlap uses the precomputed noun sets (the original ran spaCy on both names each time and
//! counted the goal's noun tokens as a list; names built by this catalog repeat no noun).

use std::collections::BTreeSet;

use super::fuzz::token_set_ratio;
use super::goals::Goal;
use super::products::Product;

/// WebShop's `COLOR_SET` (engine/normalize.py), in its order: [`normalize_color`] returns the
/// first entry of this list contained in the string.
pub const COLOR_SET: &[&str] = &[
    "alabaster",
    "apricot",
    "aqua",
    "ash",
    "asphalt",
    "azure",
    "banana",
    "beige",
    "black",
    "blue",
    "blush",
    "bordeaux",
    "bronze",
    "brown",
    "burgundy",
    "camel",
    "camo",
    "caramel",
    "champagne",
    "charcoal",
    "cheetah",
    "chestnut",
    "chocolate",
    "christmas",
    "coffee",
    "cognac",
    "copper",
    "coral",
    "cranberry",
    "cream",
    "crystal",
    "dark",
    "denim",
    "eggplant",
    "elephant",
    "espresso",
    "fuchsia",
    "gold",
    "granite",
    "grape",
    "graphite",
    "grass",
    "gray",
    "green",
    "grey",
    "heather",
    "indigo",
    "ivory",
    "ivy",
    "khaki",
    "lavender",
    "lemon",
    "leopard",
    "light",
    "lilac",
    "lime",
    "magenta",
    "maroon",
    "mauve",
    "merlot",
    "midnight",
    "mint",
    "mocha",
    "multicolor",
    "mushroom",
    "mustard",
    "natural",
    "navy",
    "nude",
    "olive",
    "orange",
    "peach",
    "pewter",
    "pink",
    "plum",
    "purple",
    "rainbow",
    "red",
    "rose",
    "royal",
    "rust",
    "sand",
    "sapphire",
    "seashell",
    "silver",
    "skull",
    "slate",
    "steel",
    "stone",
    "stonewash",
    "sunflower",
    "tan",
    "taupe",
    "teal",
    "tiger",
    "turquoise",
    "violet",
    "walnut",
    "wheat",
    "white",
    "wine",
    "yellow",
];

/// Fuzzy matches must score strictly above this.
pub const FUZZY_THRESHOLD: u32 = 85;

/// `normalize_color`: the first [`COLOR_SET`] entry that is a substring of `value` (so
/// `"navy blue"` → `"blue"`, `"violet lavender"` → `"lavender"`), else `value` unchanged.
pub fn normalize_color(value: &str) -> &str {
    COLOR_SET
        .iter()
        .copied()
        .find(|color| value.contains(color))
        .unwrap_or(value)
}

/// The type factor and what it was computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeReward {
    pub r_type: f64,
    pub query_match: bool,
    pub category_match: bool,
    /// Shared nouns / goal nouns (0.2 when the goal name has none).
    pub title_score: f64,
}

/// The set of trimmed `'›'`-separated levels of a category path.
fn category_levels(path: &str) -> BTreeSet<&str> {
    path.split('›').map(str::trim).collect()
}

/// `get_type_reward` over the purchased product's and the goal's query, category and name nouns.
pub fn type_reward(
    purchased_query: &str,
    purchased_category: &str,
    purchased_nouns: &BTreeSet<String>,
    goal: &Goal,
) -> TypeReward {
    let query_match = purchased_query == goal.query;
    let shared_levels = category_levels(purchased_category)
        .intersection(&category_levels(&goal.product_category))
        .count();
    let category_match = shared_levels >= 2;
    let title_score = if goal.name_nouns.is_empty() {
        0.2
    } else {
        let shared = purchased_nouns.intersection(&goal.name_nouns).count();
        shared as f64 / goal.name_nouns.len() as f64
    };
    let mut r_type = 1.0;
    if !(query_match || category_match || title_score > 0.2) {
        r_type = 0.5;
    }
    if title_score < 0.1 {
        r_type = 0.1;
    }
    if title_score == 0.0 {
        r_type = 0.0;
    }
    TypeReward {
        r_type,
        query_match,
        category_match,
        title_score,
    }
}

/// `get_attribute_reward`'s match count: fuzzy against the product's attributes, else a substring
/// of its lowercased title, joined bullet points or description.
pub fn attribute_matches(purchased: &Product, goal_attributes: &[String]) -> usize {
    let title = purchased.name.to_lowercase();
    let bullets = purchased.bullet_points.join(" ").to_lowercase();
    let description = purchased.description.to_lowercase();
    goal_attributes
        .iter()
        .filter(|wanted| {
            purchased
                .attributes
                .iter()
                .any(|have| token_set_ratio(have, wanted) > FUZZY_THRESHOLD)
                || title.contains(wanted.as_str())
                || bullets.contains(wanted.as_str())
                || description.contains(wanted.as_str())
        })
        .count()
}

/// `get_option_reward`'s match count, after color normalization of both sides.
pub fn option_matches(selected: &[String], goal_options: &[String]) -> usize {
    let selected: Vec<&str> = selected
        .iter()
        .map(|value| normalize_color(value))
        .collect();
    goal_options
        .iter()
        .map(|wanted| normalize_color(wanted))
        .filter(|wanted| {
            selected
                .iter()
                .any(|have| token_set_ratio(have, wanted) > FUZZY_THRESHOLD)
        })
        .count()
}

/// Every factor of one purchase, and `R`.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardBreakdown {
    pub r_type: TypeReward,
    pub attribute_matches: usize,
    pub attributes_asked: usize,
    pub option_matches: usize,
    pub options_asked: usize,
    /// The charged price and whether it is ≤ the goal's bound.
    pub price: f64,
    pub price_ok: bool,
    pub reward: f64,
}

impl RewardBreakdown {
    /// WebShop's success: `R = 1`.
    pub fn success(&self) -> bool {
        (self.reward - 1.0).abs() < 1e-9
    }
}

/// `get_reward` for buying `purchased` with `selected` option values (in selection order).
pub fn reward(purchased: &Product, selected: &[String], goal: &Goal) -> RewardBreakdown {
    let r_type = type_reward(
        &purchased.query,
        &purchased.product_category,
        &purchased.nouns,
        goal,
    );
    let attribute_matches = attribute_matches(purchased, &goal.attributes);
    let goal_values: Vec<String> = goal
        .goal_options
        .iter()
        .map(|(_, value)| value.clone())
        .collect();
    let option_matches = option_matches(selected, &goal_values);
    let price_ok = purchased.price <= goal.price_upper;
    let hits = attribute_matches + option_matches + usize::from(price_ok);
    let asked = goal.attributes.len() + goal_values.len() + 1;
    RewardBreakdown {
        r_type,
        attribute_matches,
        attributes_asked: goal.attributes.len(),
        option_matches,
        options_asked: goal_values.len(),
        price: purchased.price,
        price_ok,
        reward: r_type.r_type * hits as f64 / asked as f64,
    }
}
