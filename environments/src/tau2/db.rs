//! Loading, normalising and hashing a τ² domain DB.
//!
//! τ² scores the DB by hashing the state its pydantic models dump:
//! `sha256(json.dumps(state, sort_keys=True, default=str))`. That state is `db.json` plus the
//! defaults the models add (seven `null` fields on every retail order, `status: null` on every
//! airline reservation). Numbers keep the type `db.json` gives them: every field tau2 types as
//! `float` (prices, amounts, balances) already holds a JSON float in the shipped data, and
//! integer fields (airline prices and seat counts) hold integers; the untouched states hash to the
//! digests the spec gives, so no numeric coercion is applied.
//!
//! Loading and normalising a DB takes tens of milliseconds; [`DbCache`] does it once per file and
//! hands out clones, which is what an episode needs (a fresh, mutable DB).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Domain;
use super::pyjson;
use crate::{EnvError, EnvErrorKind};

/// Fields every retail order has in tau2's `Order` model, `None` until a tool sets them.
pub const RETAIL_ORDER_DEFAULT_FIELDS: [&str; 7] = [
    "cancel_reason",
    "exchange_items",
    "exchange_new_items",
    "exchange_payment_method_id",
    "exchange_price_difference",
    "return_items",
    "return_payment_method_id",
];

/// The lowercase name of a domain, as used in paths and env ids (`retail`, `airline`).
pub fn domain_name(domain: Domain) -> &'static str {
    match domain {
        Domain::Retail => "retail",
        Domain::Airline => "airline",
    }
}

/// The top-level tables of a domain's DB, in `db.json` order.
pub fn top_level_tables(domain: Domain) -> [&'static str; 3] {
    match domain {
        Domain::Retail => ["products", "users", "orders"],
        Domain::Airline => ["flights", "users", "reservations"],
    }
}

/// `db.json` of a domain under Kiln's data cache (`$KILN_HOME/data/tau2/<domain>/db.json`).
pub fn db_path(data_dir: &Path, domain: Domain) -> PathBuf {
    data_dir
        .join("data")
        .join("tau2")
        .join(domain_name(domain))
        .join("db.json")
}

/// Reads, validates and normalises a domain DB. The error (kind `Data`) names the file and says
/// what was expected, pointing at `ops/setup` when the file is missing.
pub fn load_db(path: &Path, domain: Domain) -> Result<Value, EnvError> {
    let started = std::time::Instant::now();
    let text = std::fs::read(path).map_err(|error| {
        data_error(format!(
            "cannot read the tau2 {} DB {}: {error} (run ops/setup to install the tau2 data)",
            domain_name(domain),
            path.display()
        ))
    })?;
    let mut db: Value = serde_json::from_slice(&text).map_err(|error| {
        data_error(format!(
            "the tau2 {} DB {} is not valid JSON: {error}",
            domain_name(domain),
            path.display()
        ))
    })?;
    validate_shape(&db, domain).map_err(|problem| {
        data_error(format!(
            "the tau2 {} DB {} is not a tau2 DB: {problem}",
            domain_name(domain),
            path.display()
        ))
    })?;
    normalize(domain, &mut db);
    tracing::debug!(
        domain = domain_name(domain),
        path = %path.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded tau2 db"
    );
    Ok(db)
}

fn data_error(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Data, message)
}

/// Checks the parts of the DB shape the tools and [`normalize`] rely on: an object whose tables
/// are objects of objects.
fn validate_shape(db: &Value, domain: Domain) -> Result<(), String> {
    let Value::Object(tables) = db else {
        return Err(format!(
            "expected a JSON object with keys {}",
            top_level_tables(domain).join(", ")
        ));
    };
    for table in top_level_tables(domain) {
        let Some(Value::Object(records)) = tables.get(table) else {
            return Err(format!(
                "expected key `{table}` holding an object of records"
            ));
        };
        if let Some((id, _)) = records.iter().find(|(_, record)| !record.is_object()) {
            return Err(format!("expected `{table}.{id}` to be an object"));
        }
    }
    Ok(())
}

/// Adds the defaults tau2's models give records that `db.json` leaves out, so the value is the
/// state tau2 dumps and hashes: retail orders gain the seven exchange/return/cancel fields as
/// `null`, airline reservations gain `status: null`. Existing values are kept; new keys go last,
/// as pydantic dumps them. Idempotent.
pub fn normalize(domain: Domain, db: &mut Value) {
    match domain {
        Domain::Retail => {
            for order in records_mut(db, "orders") {
                add_null_defaults(order, &RETAIL_ORDER_DEFAULT_FIELDS);
            }
        }
        Domain::Airline => {
            for reservation in records_mut(db, "reservations") {
                add_null_defaults(reservation, &["status"]);
            }
        }
    }
}

fn records_mut<'a>(
    db: &'a mut Value,
    table: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    db.get_mut(table)
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|records| records.values_mut())
        .filter_map(Value::as_object_mut)
}

fn add_null_defaults(record: &mut Map<String, Value>, fields: &[&str]) {
    for field in fields {
        if !record.contains_key(*field) {
            record.insert((*field).to_string(), Value::Null);
        }
    }
}

/// tau2's DB hash: `sha256(json.dumps(db, sort_keys=True, default=str))` as lowercase hex.
/// `db` must already be normalised (see [`normalize`]).
pub fn db_hash(db: &Value) -> String {
    let mut sink = HashSink {
        hasher: Sha256::new(),
        buffer: String::with_capacity(HASH_BUFFER),
    };
    pyjson::write_sorted(&mut sink, db);
    sink.hasher.update(sink.buffer.as_bytes());
    hex::encode(sink.hasher.finalize())
}

const HASH_BUFFER: usize = 64 * 1024;

/// Feeds the serialised DB to SHA-256 in 64 KiB blocks rather than building megabytes of text.
struct HashSink {
    hasher: Sha256,
    buffer: String,
}

impl pyjson::Sink for HashSink {
    fn push_str(&mut self, text: &str) {
        if self.buffer.len() + text.len() > HASH_BUFFER {
            self.hasher.update(self.buffer.as_bytes());
            self.buffer.clear();
        }
        self.buffer.push_str(text);
    }
}

/// Loads each DB file once and hands out fresh copies.
///
/// Parsing and normalising `db.json` happens on the first request for a path; afterwards
/// [`DbCache::fresh`] costs one `Value::clone`. Errors are not cached, so a file installed later
/// (by `ops/setup`) is picked up.
#[derive(Default)]
pub struct DbCache {
    loaded: Mutex<HashMap<(PathBuf, Domain), Arc<Value>>>,
}

impl DbCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide cache, shared by every environment instance.
    pub fn global() -> &'static DbCache {
        static GLOBAL: OnceLock<DbCache> = OnceLock::new();
        GLOBAL.get_or_init(DbCache::new)
    }

    /// The normalised initial DB at `path`, loaded on first use. Read-only: clone it (or call
    /// [`DbCache::fresh`]) to run tools.
    pub fn initial(&self, path: &Path, domain: Domain) -> Result<Arc<Value>, EnvError> {
        let key = (path.to_path_buf(), domain);
        // Holding the lock while loading keeps concurrent first users from parsing twice.
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(db) = loaded.get(&key) {
            return Ok(Arc::clone(db));
        }
        let db = Arc::new(load_db(path, domain)?);
        loaded.insert(key, Arc::clone(&db));
        Ok(db)
    }

    /// A fresh, mutable copy of the normalised initial DB at `path`.
    pub fn fresh(&self, path: &Path, domain: Domain) -> Result<Value, EnvError> {
        Ok(Value::clone(&*self.initial(path, domain)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_adds_order_defaults_last_and_keeps_existing_values() {
        let mut db = json!({
            "products": {},
            "users": {},
            "orders": {"#W1": {"order_id": "#W1", "cancel_reason": "ordered by mistake"}}
        });
        normalize(Domain::Retail, &mut db);
        let order = db["orders"]["#W1"].as_object().unwrap();
        let keys: Vec<&str> = order.keys().map(String::as_str).collect();
        assert_eq!(keys[0], "order_id");
        assert_eq!(keys.len(), 1 + RETAIL_ORDER_DEFAULT_FIELDS.len());
        assert_eq!(order["cancel_reason"], "ordered by mistake");
        assert_eq!(order["return_items"], Value::Null);
        let again = db.clone();
        normalize(Domain::Retail, &mut db);
        assert_eq!(db, again, "normalize is idempotent");
    }

    #[test]
    fn normalize_adds_reservation_status() {
        let mut db =
            json!({"flights": {}, "users": {}, "reservations": {"ABC": {"reservation_id": "ABC"}}});
        normalize(Domain::Airline, &mut db);
        assert_eq!(
            db["reservations"]["ABC"],
            json!({"reservation_id": "ABC", "status": null})
        );
    }

    #[test]
    fn db_hash_is_sha256_of_sorted_python_json() {
        // sha256(b'{"a": 1.0, "b": [null]}'), a value independent of this module.
        let db = json!({"b": [null], "a": 1.0});
        assert_eq!(pyjson::dumps_sorted(&db), r#"{"a": 1.0, "b": [null]}"#);
        let expected = hex::encode(Sha256::digest(br#"{"a": 1.0, "b": [null]}"#));
        assert_eq!(db_hash(&db), expected);
    }

    #[test]
    fn load_db_names_the_file_and_the_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("db.json");
        let error = load_db(&missing, Domain::Retail).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("db.json"), "{error}");
        assert!(error.to_string().contains("ops/setup"), "{error}");

        std::fs::write(&missing, r#"{"products": {}, "users": []}"#).unwrap();
        let error = load_db(&missing, Domain::Retail).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("`users`"), "{error}");

        std::fs::write(&missing, "{not json").unwrap();
        let error = load_db(&missing, Domain::Airline).unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn cache_loads_once_and_hands_out_independent_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        std::fs::write(
            &path,
            r##"{"products": {}, "users": {}, "orders": {"#W1": {"status": "pending"}}}"##,
        )
        .unwrap();
        let cache = DbCache::new();
        let mut first = cache.fresh(&path, Domain::Retail).unwrap();
        first["orders"]["#W1"]["status"] = json!("cancelled");
        std::fs::remove_file(&path).unwrap();
        let second = cache.fresh(&path, Domain::Retail).unwrap();
        assert_eq!(second["orders"]["#W1"]["status"], "pending");
        assert_eq!(second["orders"]["#W1"]["cancel_reason"], Value::Null);
    }
}
