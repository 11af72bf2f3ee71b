//! WebShop-format shopping (Yao et al., 2022) on a seeded **synthetic catalog**: the real product
//! data cannot be downloaded here, so Kiln generates products and goals with WebShop's fields, and
//! keeps WebShop's action space (`search[...]`, `click[...]`), page text (simple mode, `" [SEP] "`),
//! and reward function (`engine/goal.py`). Reports say "synthetic catalog".
//!
//! - [`products`]: the catalog generator and the noun heuristic.
//! - [`goals`]: goals, instruction text and the splits (test 0–499, eval 500–1499, train 1500–2999).
//! - [`search`]: BM25 over title, description, first bullet and option text, ranked as WebShop's
//!   pyserini/Lucene index ranks (English analyzer with [`porter`] stemming, k1 = 0.9, b = 0.4).
//! - [`session`]: the page state machine and action rules; [`pages`]: page text.
//! - [`fuzz`]: thefuzz's `token_set_ratio`; [`reward`]: WebShop's reward, factor by factor.
//! - [`env`]: the [`Environment`](crate::Environment) and its factory, and the expert policy.

pub mod env;
pub mod fuzz;
pub mod goals;
pub mod pages;
pub mod porter;
pub mod products;
pub mod reward;
pub mod rng;
pub mod search;
pub mod session;
pub mod shop;

pub use env::{
    DEFAULT_MAX_STEPS, ENV_ID, WebShopEnvironment, WebShopFactory, WebShopOptions, oracle_actions,
};
pub use shop::Shop;
