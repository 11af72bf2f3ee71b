//! WebShop's pages in simple text mode: the visible strings of each page joined by `" [SEP] "`.
//!
//! - Start: `WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search`
//! - Results: `Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 1 (Total results: 50)
//!   [SEP] Next > [SEP] <ASIN> [SEP] <Title> [SEP] <price> …` (`< Prev` from page 2, `Next >` while a
//!   later page exists)
//! - Item: `Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] < Prev [SEP] <option name>
//!   [SEP] <v1> [SEP] <v2> … [SEP] <Title> [SEP] Price: <price> [SEP] Rating: N.A. [SEP] Description
//!   [SEP] Features [SEP] Reviews [SEP] Buy Now`
//! - Sub-pages: `… [SEP] Back to Search [SEP] < Prev [SEP]` then the description, the bullet points,
//!   or the reviews (the synthetic catalog has none, hence `Rating: N.A.`).
//! - Done: `Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] (Paste it in your MTurk
//!   interface.) [SEP] Purchased [SEP] asin [SEP] <ASIN> [SEP] options [SEP] <options> [SEP] Reward
//!   [SEP] Your score (min 0.0, max 1.0) [SEP] <reward>`, with the options as a Python dict and the
//!   reward as Python prints a float.
//!
//! Prices are shown as listed (`$12.99`, or `$12.99 to $15.49` for a range).

use super::session::{Detail, Page, Session};
use super::shop::Shop;

/// WebShop's separator in simple text mode.
pub const SEP: &str = " [SEP] ";

/// The current page of `session` as text.
pub fn render(session: &Session, shop: &Shop) -> String {
    let instruction = shop.goals()[session.goal].instruction_text.as_str();
    let mut parts: Vec<String> = Vec::new();
    let mut push = |text: &str| parts.push(text.to_string());
    match &session.page {
        Page::Start => {
            for text in ["WebShop", "Instruction:", instruction, "Search"] {
                push(text);
            }
        }
        Page::Results { page } => {
            for text in ["Instruction:", instruction, "Back to Search"] {
                push(text);
            }
            push(&format!(
                "Page {page} (Total results: {})",
                session.hits.len()
            ));
            if *page > 1 {
                push("< Prev");
            }
            if *page < session.page_count() {
                push("Next >");
            }
            for &hit in session.page_hits(*page) {
                let product = shop.product(hit);
                push(&product.asin);
                push(&product.name);
                push(&product.price_tag());
            }
        }
        Page::Item { product, .. } => {
            let product = shop.product(*product);
            for text in ["Instruction:", instruction, "Back to Search", "< Prev"] {
                push(text);
            }
            for (name, values) in &product.options {
                push(name);
                values.iter().for_each(|value| push(value));
            }
            push(&product.name);
            push(&format!("Price: {}", product.price_tag()));
            push("Rating: N.A.");
            for detail in Detail::ALL {
                push(detail.label());
            }
            push("Buy Now");
        }
        Page::Detail {
            product, detail, ..
        } => {
            let product = shop.product(*product);
            for text in ["Instruction:", instruction, "Back to Search", "< Prev"] {
                push(text);
            }
            match detail {
                Detail::Description => push(&product.description),
                Detail::Features => product.bullet_points.iter().for_each(|b| push(b)),
                Detail::Reviews => {}
            }
        }
        Page::Done { product } => {
            let product = shop.product(*product);
            let reward = session.purchase.as_ref().map_or(0.0, |p| p.reward);
            for text in [
                "Thank you for shopping with us!",
                "Your code:",
                "None",
                "(Paste it in your MTurk interface.)",
                "Purchased",
                "asin",
                product.asin.as_str(),
                "options",
            ] {
                push(text);
            }
            push(&python_dict(&session.selected));
            push("Reward");
            push("Your score (min 0.0, max 1.0)");
            push(&python_float(reward));
        }
    }
    parts.join(SEP)
}

/// A `{'name': 'value', …}` dict as Python prints it.
pub fn python_dict(entries: &[(String, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(key, value)| format!("'{key}': '{value}'"))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// A float as Python's `repr` prints it for rewards in [0, 1] (`1.0`, `0.5`, `0.6666666666666666`).
pub fn python_float(value: f64) -> String {
    let text = format!("{value}");
    if text.contains('.') || text.contains('e') || !value.is_finite() {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_formats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(2.0 / 3.0), "0.6666666666666666");
        assert_eq!(
            python_dict(&[
                ("color".into(), "black".into()),
                ("size".into(), "9".into())
            ]),
            "{'color': 'black', 'size': '9'}"
        );
        assert_eq!(python_dict(&[]), "{}");
    }
}
