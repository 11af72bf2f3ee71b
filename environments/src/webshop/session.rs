//! One shopper's browsing state and WebShop's action rules, with no I/O: [`Session::apply`] takes
//! an action string and moves between the start, results, item, sub-pages and done pages.
//!
//! Rules (the spec's, from WebShop's text environment):
//! - `search[keywords]` only on the start page (the page with a search bar); keywords lowercased.
//! - `click[value]`: value lowercased must be a clickable of the current page; `click[search]` is
//!   never allowed.
//! - Anything else is invalid: nothing changes, reward 0, not done.
//!
//! Action strings are parsed as `name[argument]`: the name is the text before the first `[`, the
//! argument the text between it and a final `]` (surrounding whitespace ignored); an empty argument
//! is malformed. WebShop's own regex `(.+)\[(.+)\]` accepts a few odder strings (trailing text
//! after `]`); those are invalid here.

use super::reward::{RewardBreakdown, reward};
use super::shop::Shop;

/// Hits per results page.
pub const RESULTS_PER_PAGE: usize = 10;

/// The buttons, as clickables (their visible text lowercased): back to the start page.
pub const BACK_TO_SEARCH: &str = "back to search";
/// Previous results page; from an item, its results page; from a sub-page, the item.
pub const PREV: &str = "< prev";
/// Next results page.
pub const NEXT: &str = "next >";
/// Buys the open item with the selected options: the done page and the reward.
pub const BUY_NOW: &str = "buy now";

/// An item sub-page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Description,
    Features,
    Reviews,
}

impl Detail {
    /// The sub-pages, in button order.
    pub const ALL: [Detail; 3] = [Detail::Description, Detail::Features, Detail::Reviews];

    /// The button text, as shown.
    pub fn label(self) -> &'static str {
        match self {
            Detail::Description => "Description",
            Detail::Features => "Features",
            Detail::Reviews => "Reviews",
        }
    }
}

/// Where the shopper is. Results pages are 1-based.
#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    Start,
    Results {
        page: usize,
    },
    Item {
        product: usize,
        page: usize,
    },
    Detail {
        product: usize,
        page: usize,
        detail: Detail,
    },
    Done {
        product: usize,
    },
}

impl Page {
    /// A short name for logs and `info`.
    pub fn kind(&self) -> &'static str {
        match self {
            Page::Start => "start",
            Page::Results { .. } => "results",
            Page::Item { .. } => "item",
            Page::Detail { .. } => "detail",
            Page::Done { .. } => "done",
        }
    }
}

/// A parsed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedAction {
    Search(String),
    Click(String),
}

/// Why an action did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not `search[...]` or `click[...]` with a non-empty argument.
    Malformed,
    /// `search[...]` away from the start page.
    NoSearchBar,
    /// `click[value]` where value is not a clickable here (or is `search`).
    NotClickable(String),
    /// The episode already ended with a purchase.
    AfterPurchase,
}

impl Invalid {
    /// A one-line explanation for `info`.
    pub fn describe(&self) -> String {
        match self {
            Invalid::Malformed => {
                "malformed action: expected search[keywords] or click[value]".to_string()
            }
            Invalid::NoSearchBar => "search is only available on the search page".to_string(),
            Invalid::NotClickable(value) => format!("`{value}` is not clickable on this page"),
            Invalid::AfterPurchase => "the purchase is done".to_string(),
        }
    }
}

/// Parses `search[...]` / `click[...]` (see the module docs); arguments are lowercased.
pub fn parse_action(text: &str) -> Option<ParsedAction> {
    let text = text.trim();
    let open = text.find('[')?;
    let inner = text[open + 1..].strip_suffix(']')?;
    let argument = inner.trim().to_lowercase();
    if argument.is_empty() {
        return None;
    }
    match text[..open].trim().to_lowercase().as_str() {
        "search" => Some(ParsedAction::Search(argument)),
        "click" => Some(ParsedAction::Click(argument)),
        _ => None,
    }
}

/// One shopper's state for one goal.
#[derive(Debug, Clone)]
pub struct Session {
    pub goal: usize,
    pub page: Page,
    /// The last search's keywords and hits (product indices, best first).
    pub keywords: String,
    pub hits: Vec<usize>,
    /// Option name → value chosen on the current item page, in first-selection order.
    pub selected: Vec<(String, String)>,
    /// The purchase, once `buy now` was clicked.
    pub purchase: Option<RewardBreakdown>,
}

impl Session {
    /// A session on the start page of goal `goal`.
    pub fn new(goal: usize) -> Self {
        Self {
            goal,
            page: Page::Start,
            keywords: String::new(),
            hits: Vec::new(),
            selected: Vec::new(),
            purchase: None,
        }
    }

    /// Number of results pages for the current hits (at least 1).
    pub fn page_count(&self) -> usize {
        self.hits.len().div_ceil(RESULTS_PER_PAGE).max(1)
    }

    /// The hits shown on results page `page` (1-based).
    pub fn page_hits(&self, page: usize) -> &[usize] {
        let start = ((page - 1) * RESULTS_PER_PAGE).min(self.hits.len());
        let end = (start + RESULTS_PER_PAGE).min(self.hits.len());
        &self.hits[start..end]
    }

    /// Whether the page has a search bar (only the start page).
    pub fn has_search_bar(&self) -> bool {
        self.page == Page::Start
    }

    /// The clickables of the current page, lowercased, in page order (WebShop also lists the
    /// start page's `search` button, which may not be clicked).
    pub fn clickables(&self, shop: &Shop) -> Vec<String> {
        let mut clickables: Vec<String> = Vec::new();
        match &self.page {
            Page::Start => clickables.push("search".to_string()),
            Page::Results { page } => {
                clickables.push(BACK_TO_SEARCH.to_string());
                if *page > 1 {
                    clickables.push(PREV.to_string());
                }
                if *page < self.page_count() {
                    clickables.push(NEXT.to_string());
                }
                clickables.extend(
                    self.page_hits(*page)
                        .iter()
                        .map(|&product| shop.product(product).asin.to_lowercase()),
                );
            }
            Page::Item { product, .. } => {
                clickables.push(BACK_TO_SEARCH.to_string());
                clickables.push(PREV.to_string());
                clickables.extend(Detail::ALL.iter().map(|d| d.label().to_lowercase()));
                clickables.push(BUY_NOW.to_string());
                clickables.extend(
                    shop.product(*product)
                        .option_values()
                        .map(str::to_lowercase),
                );
            }
            Page::Detail { .. } => {
                clickables.push(BACK_TO_SEARCH.to_string());
                clickables.push(PREV.to_string());
            }
            Page::Done { .. } => {}
        }
        clickables
    }

    /// The valid action strings now: `search[...]` (a placeholder: any keywords) on the start
    /// page, `click[x]` for every other clickable.
    pub fn available_actions(&self, shop: &Shop) -> Vec<String> {
        if self.has_search_bar() {
            return vec!["search[...]".to_string()];
        }
        self.clickables(shop)
            .into_iter()
            .map(|clickable| format!("click[{clickable}]"))
            .collect()
    }

    /// Applies one action. `Ok(())` when it changed the page; `Err` (and no change) when invalid.
    pub fn apply(&mut self, shop: &Shop, action: &str) -> Result<(), Invalid> {
        if matches!(self.page, Page::Done { .. }) {
            return Err(Invalid::AfterPurchase);
        }
        match parse_action(action).ok_or(Invalid::Malformed)? {
            ParsedAction::Search(keywords) => {
                if !self.has_search_bar() {
                    return Err(Invalid::NoSearchBar);
                }
                self.hits = shop.search(&keywords);
                self.keywords = keywords;
                self.page = Page::Results { page: 1 };
                Ok(())
            }
            ParsedAction::Click(value) => self.click(shop, value),
        }
    }

    fn click(&mut self, shop: &Shop, value: String) -> Result<(), Invalid> {
        if value == "search" || !self.clickables(shop).contains(&value) {
            return Err(Invalid::NotClickable(value));
        }
        let current = self.page.clone();
        let next = match (&current, value.as_str()) {
            (_, BACK_TO_SEARCH) => {
                self.hits.clear();
                self.keywords.clear();
                Page::Start
            }
            (Page::Results { page }, NEXT) => Page::Results { page: page + 1 },
            (Page::Results { page }, PREV) => Page::Results { page: page - 1 },
            (Page::Results { page }, asin) => {
                let product = shop
                    .product_by_asin(asin)
                    .ok_or_else(|| Invalid::NotClickable(value.clone()))?;
                self.selected.clear();
                Page::Item {
                    product,
                    page: *page,
                }
            }
            (Page::Item { page, .. }, PREV) => Page::Results { page: *page },
            (Page::Item { product, .. }, BUY_NOW) => {
                let product = *product;
                let values: Vec<String> = self.selected.iter().map(|(_, v)| v.clone()).collect();
                let goal = &shop.goals()[self.goal];
                self.purchase = Some(reward(shop.product(product), &values, goal));
                Page::Done { product }
            }
            (Page::Item { product, page }, label) => {
                if let Some(detail) = Detail::ALL
                    .into_iter()
                    .find(|detail| detail.label().to_lowercase() == label)
                {
                    Page::Detail {
                        product: *product,
                        page: *page,
                        detail,
                    }
                } else {
                    self.select_option(shop, *product, label);
                    current.clone()
                }
            }
            (Page::Detail { product, page, .. }, PREV) => Page::Item {
                product: *product,
                page: *page,
            },
            _ => return Err(Invalid::NotClickable(value)),
        };
        self.page = next;
        Ok(())
    }

    fn select_option(&mut self, shop: &Shop, product: usize, value: &str) {
        let product = shop.product(product);
        let Some(original) = product
            .option_values()
            .find(|candidate| candidate.to_lowercase() == value)
        else {
            return;
        };
        let name = product
            .option_name_of(original)
            .unwrap_or_default()
            .to_string();
        match self.selected.iter_mut().find(|(chosen, _)| *chosen == name) {
            Some(slot) => slot.1 = original.to_string(),
            None => self.selected.push((name, original.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_like_webshop() {
        assert_eq!(
            parse_action("search[Red Shoes]"),
            Some(ParsedAction::Search("red shoes".into()))
        );
        assert_eq!(
            parse_action(" click[ Buy Now ] "),
            Some(ParsedAction::Click("buy now".into()))
        );
        assert_eq!(
            parse_action("click[< Prev]"),
            Some(ParsedAction::Click("< prev".into()))
        );
        for bad in [
            "click[",
            "click[]",
            "search",
            "buy[now]",
            "click[x] extra",
            "[x]",
        ] {
            assert_eq!(parse_action(bad), None, "{bad}");
        }
    }
}
