//! [`Shop`]: the synthetic catalog, its goals and its search index, built once per process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::goals::{EVAL_GOALS, Goal, TEST_GOALS, TRAIN_GOALS, generate_goals, split_ranges};
use super::products::{PRODUCTS_PER_TYPE, Product, generate_products};
use super::search::SearchIndex;
use crate::{EnvError, EnvErrorKind};

/// The seed of the catalog every Kiln run uses, so task ids mean the same goals everywhere.
pub const DEFAULT_SEED: u64 = 20_220_707;

/// Everything an episode reads; immutable after construction and shared by every instance.
#[derive(Debug)]
pub struct Shop {
    products: Vec<Product>,
    goals: Vec<Goal>,
    /// Lowercased ASIN → product index.
    by_asin: HashMap<String, usize>,
    index: SearchIndex,
}

impl Shop {
    /// Generates a catalog of `per_type` products per type (24 types) and `goals` goals.
    pub fn generate(seed: u64, per_type: usize, goals: usize) -> Self {
        let products = generate_products(seed, per_type);
        let goals = generate_goals(seed, &products, goals);
        let by_asin = products
            .iter()
            .enumerate()
            .map(|(position, product)| (product.asin.to_lowercase(), position))
            .collect();
        let index = SearchIndex::build(&products);
        tracing::debug!(
            products = products.len(),
            goals = goals.len(),
            "generated webshop catalog"
        );
        Self {
            products,
            goals,
            by_asin,
            index,
        }
    }

    /// The standard catalog (1,200 products, 3,000 goals), generated on first use and shared.
    pub fn standard() -> Arc<Shop> {
        static SHOP: OnceLock<Arc<Shop>> = OnceLock::new();
        SHOP.get_or_init(|| {
            Arc::new(Shop::generate(
                DEFAULT_SEED,
                PRODUCTS_PER_TYPE,
                TEST_GOALS + EVAL_GOALS + TRAIN_GOALS,
            ))
        })
        .clone()
    }

    /// Every product, in generation order (index = product id used by goals and search).
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// Every goal; a goal's index is its task id.
    pub fn goals(&self) -> &[Goal] {
        &self.goals
    }

    /// Product `index` (panics when out of range: indices come from this shop).
    pub fn product(&self, index: usize) -> &Product {
        &self.products[index]
    }

    /// The product with this ASIN (any case).
    pub fn product_by_asin(&self, asin: &str) -> Option<usize> {
        self.by_asin.get(&asin.to_lowercase()).copied()
    }

    /// Product indices for `keywords`, best first (at most 50).
    pub fn search(&self, keywords: &str) -> Vec<usize> {
        self.index.search(keywords)
    }

    /// The search index, for callers that need scores (the reference comparison, benchmarks).
    pub fn search_index(&self) -> &SearchIndex {
        &self.index
    }

    /// Goal `id` (its index as a decimal string), or an [`EnvErrorKind::UnknownTask`] error.
    pub fn goal_index(&self, id: &str) -> Result<usize, EnvError> {
        id.trim()
            .parse::<usize>()
            .ok()
            .filter(|index| *index < self.goals.len())
            .ok_or_else(|| {
                EnvError::new(
                    EnvErrorKind::UnknownTask,
                    format!(
                        "webshop has no task `{id}`: task ids are goal indices 0–{} (test 0–499, eval 500–1499, train 1500–{})",
                        self.goals.len().saturating_sub(1),
                        self.goals.len().saturating_sub(1)
                    ),
                )
            })
    }

    /// Task ids of a split (goal indices as strings), clipped to the goals generated.
    pub fn split_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        let Some((_, range)) = split_ranges().into_iter().find(|(name, _)| *name == split) else {
            return Err(EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!("webshop has no split `{split}`; splits: test, eval, train"),
            ));
        };
        Ok(range
            .filter(|index| *index < self.goals.len())
            .map(|index| index.to_string())
            .collect())
    }
}
