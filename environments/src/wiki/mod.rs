//! A local wiki: the MediaWiki Action API shapes GAIA-style tools and the PyPI clients use, over a
//! corpus of pages, plus article pages as a script-driven front end serves them.
//!
//! - [`corpus`]: the corpus format (JSON lines of pages) and title rules;
//! - [`search`]: BM25 ranking and snippets;
//! - [`api`]: `action=query|parse|opensearch` as plain functions from parameters to JSON;
//! - [`server`]: the HTTP service (`kiln wiki serve CORPUS`).

pub mod api;
pub mod corpus;
pub mod search;
pub mod server;

pub use api::Wiki;
pub use corpus::Corpus;
