//! A WebShop-format agent behind a real OpenAI-compatible HTTP server, whose behaviour depends on
//! the harness: the test model of the `kiln evolve` end-to-end tests.
//!
//! It reads the prompt the harness built and acts like a small model with two known weaknesses:
//! - it buys without choosing options unless the system prompt tells it to click the options the
//!   instruction asks for (AEGIS's strategy line for `webshop_buy_without_options`: a known-good
//!   edit);
//! - when the system prompt holds a worked example (`Example (…):`, the few-shot operator's edit)
//!   it copies the example's search and product instead of reading its own task (a regressing
//!   edit: tasks it solved before are lost).
//!
//! Otherwise it searches with the instruction's words, opens the result whose title shares the
//! most words with the instruction, and buys.

use std::sync::Arc;

use kiln_models::testing::{Responder, Script, ScriptedResponse, ScriptedServer};
use serde_json::Value;

/// The strategy line that makes the agent choose options.
pub const OPTIONS_HINT: &str = "click the options the instruction asks for";
/// The few-shot operator's marker.
pub const EXAMPLE_MARKER: &str = "\nExample (";

/// The agent on a free local port, and its model spec (`openai:scripted@URL`). It serves until the
/// server is dropped.
pub async fn serve() -> (ScriptedServer, String) {
    let server = ScriptedServer::start_with_responder(Script::default(), responder())
        .await
        .expect("the test model's server starts");
    let model = format!("openai:scripted@{}", server.base_url());
    (server, model)
}

/// The responder for [`kiln_models::testing::ScriptedServer::start_with_responder`].
pub fn responder() -> Responder {
    Arc::new(|body: &Value| Some(ScriptedResponse::text(format!("Action: {}", act(body)))))
}

fn contents(body: &Value, role: &str) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .collect()
}

/// The next action for this request.
pub fn act(body: &Value) -> String {
    let system = contents(body, "system").join("\n");
    let users = contents(body, "user");
    let Some(page) = users.last() else {
        return "search[item]".into();
    };
    let Some(instruction) = users.iter().find_map(|text| instruction(text)) else {
        return "search[item]".into();
    };
    let example = system
        .find(EXAMPLE_MARKER)
        .map(|start| system[start..].to_string());
    let said = contents(body, "assistant").join("\n").to_lowercase();
    let fields: Vec<&str> = page.split(" [SEP] ").map(str::trim).collect();
    if fields.contains(&"Buy Now") {
        if system.contains(OPTIONS_HINT) {
            let wanted = instruction.to_lowercase();
            if let Some(option) = options(&fields).into_iter().find(|o| {
                wanted.contains(o.as_str())
                    && !wanted.contains(&format!("{o}:"))
                    && !said.contains(&format!("click[{o}]"))
            }) {
                return format!("click[{option}]");
            }
        }
        return "click[Buy Now]".into();
    }
    if page.contains("Total results") {
        if let Some(product) = example.as_deref().and_then(example_product) {
            return format!("click[{product}]");
        }
        return match best_result(&fields, &instruction) {
            Some(id) => format!("click[{id}]"),
            None => "click[Back to Search]".into(),
        };
    }
    if let Some(query) = example.as_deref().and_then(example_search) {
        return format!("search[{query}]");
    }
    format!("search[{}]", query(&instruction))
}

fn instruction(text: &str) -> Option<String> {
    let rest = text.split("Instruction: [SEP] ").nth(1)?;
    Some(rest.split(" [SEP]").next()?.trim().to_string())
}

/// The product words of an instruction: before its attributes, options and price.
fn query(instruction: &str) -> String {
    let mut text = instruction.to_lowercase();
    for cut in [" with ", " it should", ", and price", " and price", "?"] {
        if let Some(index) = text.find(cut) {
            text.truncate(index);
        }
    }
    for lead in [
        "can you get me a ",
        "can you get me ",
        "i need a ",
        "i need ",
        "i'm looking for a ",
        "i'm looking for ",
        "i am looking for a ",
        "i am looking for ",
        "find me a ",
        "find me ",
        "i want a ",
        "i want ",
    ] {
        if let Some(rest) = text.strip_prefix(lead) {
            text = rest.to_string();
            break;
        }
    }
    text.trim().to_string()
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The product id among search results whose title shares the most words with the instruction.
fn best_result(fields: &[&str], instruction: &str) -> Option<String> {
    let wanted = words(instruction);
    let mut best: Option<(usize, String)> = None;
    for pair in fields.windows(2) {
        let (id, title) = (pair[0], pair[1]);
        if !(id.len() == 10 && id.starts_with('B') && id.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            continue;
        }
        let score = words(title).iter().filter(|w| wanted.contains(w)).count();
        if best.as_ref().is_none_or(|(top, _)| score > *top) {
            best = Some((score, id.to_lowercase()));
        }
    }
    best.map(|(_, id)| id)
}

/// Option values on a product page: the fields between an option name and the title, i.e.
/// everything after `< Prev` up to the field before `Price:` that is not an option name. Option
/// names are not values, so a value list is every field there that the instruction could name.
fn options(fields: &[&str]) -> Vec<String> {
    let start = fields
        .iter()
        .position(|f| *f == "< Prev")
        .map_or(0, |i| i + 1);
    let end = fields
        .iter()
        .position(|f| f.starts_with("Price:"))
        .map_or(fields.len(), |i| i.saturating_sub(1));
    fields[start.min(end)..end]
        .iter()
        .map(|f| f.to_lowercase())
        .collect()
}

fn example_search(example: &str) -> Option<String> {
    let rest = example.split("Action: search[").nth(1)?;
    Some(rest.split(']').next()?.to_string())
}

fn example_product(example: &str) -> Option<String> {
    example
        .split("Action: click[")
        .skip(1)
        .filter_map(|rest| rest.split(']').next())
        .find(|id| id.len() == 10 && id.to_lowercase().starts_with('b'))
        .map(str::to_lowercase)
}
