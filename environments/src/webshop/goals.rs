//! Shopping goals over the synthetic catalog, and the splits.
//!
//! A goal names one target product and asks for a subset of its attributes, a value for some of its
//! options and a price bound, in a human-style sentence that ends with WebShop's
//! `", and price lower than {u:.2f} dollars"`. The bound follows WebShop's goal generator: two of the
//! first four multiples of ten above the product's charged price are drawn and the larger one is
//! kept, so the target itself always satisfies it.
//!
//! Splits follow the original's goal indices: `test` = goals 0–499, `eval` = 500–1499,
//! `train` = 1500 onwards ([`TRAIN_GOALS`] goals here).

use std::collections::BTreeSet;

use super::products::Product;
use super::rng::Rng;

/// Goals in the `test` split (indices 0–499).
pub const TEST_GOALS: usize = 500;
/// Goals in the `eval` split (indices 500–1499).
pub const EVAL_GOALS: usize = 1000;
/// Goals in the `train` split (indices 1500–2999).
pub const TRAIN_GOALS: usize = 1500;

/// The split names, in listing order, with their goal index ranges.
pub fn split_ranges() -> [(&'static str, std::ops::Range<usize>); 3] {
    let eval_end = TEST_GOALS + EVAL_GOALS;
    [
        ("test", 0..TEST_GOALS),
        ("eval", TEST_GOALS..eval_end),
        ("train", eval_end..eval_end + TRAIN_GOALS),
    ]
}

/// One shopping goal (WebShop's goal dict).
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// Index of the target product in the catalog.
    pub product: usize,
    pub asin: String,
    /// The target's name, query and category path (the type factor compares against them).
    pub name: String,
    pub query: String,
    pub product_category: String,
    /// Nouns of `name`.
    pub name_nouns: BTreeSet<String>,
    /// Attributes asked for (a subset of the target's).
    pub attributes: Vec<String>,
    /// Option name → value asked for (values of the target's options).
    pub goal_options: Vec<(String, String)>,
    pub price_upper: f64,
    pub instruction_text: String,
}

/// WebShop's candidate price bounds: 10, 20, …, 990 dollars.
fn price_range() -> impl Iterator<Item = f64> {
    (1..100).map(|step| 10.0 * f64::from(step))
}

/// WebShop's bound: the larger of two distinct draws from the first four bounds above `price`
/// (1,000,000 when fewer than two exist).
pub fn price_upper(rng: &mut Rng, price: f64) -> f64 {
    let above: Vec<f64> = price_range()
        .filter(|bound| *bound > price)
        .take(4)
        .collect();
    if above.len() < 2 {
        return 1_000_000.0;
    }
    let drawn = rng.sample(&above, 2);
    drawn[0].max(drawn[1])
}

/// `count` goals: the products are visited in a seeded order (cycling when there are fewer
/// products than goals), and each goal draws its own attributes, options and bound.
pub fn generate_goals(seed: u64, products: &[Product], count: usize) -> Vec<Goal> {
    let mut rng = Rng::derive(seed, 2);
    let mut order: Vec<usize> = (0..products.len()).collect();
    let mut goals = Vec::with_capacity(count);
    while goals.len() < count {
        rng.shuffle(&mut order);
        for &index in order.iter().take(count - goals.len()) {
            goals.push(generate_goal(&mut rng, index, &products[index]));
        }
    }
    goals
}

fn generate_goal(rng: &mut Rng, index: usize, product: &Product) -> Goal {
    let attribute_count = rng.range(1, product.attributes.len().min(3));
    let attributes = rng.sample(&product.attributes, attribute_count);
    let mut goal_options = Vec::new();
    for (name, values) in &product.options {
        if rng.chance(0.8) {
            goal_options.push((name.clone(), rng.pick(values).clone()));
        }
    }
    let price_upper = price_upper(rng, product.price);
    let instruction_text = instruction(rng, product, &attributes, &goal_options, price_upper);
    Goal {
        product: index,
        asin: product.asin.clone(),
        name: product.name.clone(),
        query: product.query.clone(),
        product_category: product.product_category.clone(),
        name_nouns: product.nouns.clone(),
        attributes,
        goal_options,
        price_upper,
        instruction_text,
    }
}

/// A human-style request: one of several sentence shapes, attributes, options, the price clause.
fn instruction(
    rng: &mut Rng,
    product: &Product,
    attributes: &[String],
    options: &[(String, String)],
    price_upper: f64,
) -> String {
    let attrs = attributes.join(" and ");
    let query = &product.query;
    let options_phrase = if options.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = options
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        format!(" with {}", parts.join(" and "))
    };
    let head = match rng.below(5) {
        0 => format!("i'm looking for a {query} that is {attrs}"),
        1 => format!("i need {attrs} {query}"),
        2 => format!("find me a {query} which is {attrs}"),
        3 => format!("i want to buy a {attrs} {query}"),
        _ => format!("can you get me a {query}? it should be {attrs}"),
    };
    format!("{head}{options_phrase}, and price lower than {price_upper:.2} dollars")
}

#[cfg(test)]
mod tests {
    use super::super::products::generate_products;
    use super::*;

    #[test]
    fn goals_ask_for_what_their_target_has_and_end_with_the_price_clause() {
        let products = generate_products(5, 10);
        let goals = generate_goals(5, &products, 600);
        assert_eq!(goals.len(), 600);
        for goal in &goals {
            let product = &products[goal.product];
            assert_eq!(goal.asin, product.asin);
            assert!(!goal.attributes.is_empty());
            assert!(
                goal.attributes
                    .iter()
                    .all(|a| product.attributes.contains(a))
            );
            for (name, value) in &goal.goal_options {
                assert_eq!(product.option_name_of(value), Some(name.as_str()));
            }
            assert!(product.price <= goal.price_upper);
            let clause = format!(", and price lower than {:.2} dollars", goal.price_upper);
            assert!(
                goal.instruction_text.ends_with(&clause),
                "{}",
                goal.instruction_text
            );
        }
    }

    #[test]
    fn price_bounds_follow_webshop() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let upper = price_upper(&mut rng, 23.5);
            assert!([40.0, 50.0, 60.0].contains(&upper), "{upper}");
        }
        assert_eq!(price_upper(&mut rng, 985.0), 1_000_000.0);
    }

    #[test]
    fn splits_follow_the_original_indices() {
        let [test, eval, train] = split_ranges();
        assert_eq!(test, ("test", 0..500));
        assert_eq!(eval, ("eval", 500..1500));
        assert_eq!(train.1.start, 1500);
    }
}
