//! The 14 τ² airline tools against the reference implementation.
//!
//! Every scenario runs twice: through `airline::call_tool` on the normalised DB, and through the
//! reference `server.py` (via `tests/support/tau2_reference.py`, a stdlib-only driver). The text
//! the agent would see, the error flag and the final DB hash must be identical. The data comes from
//! `$KILN_HOME` (filled by `ops/setup`); the tests fail loudly when it or `python3` is missing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kiln_environments::tau2::db::{db_hash, load_db, normalize};
use kiln_environments::tau2::{Domain, airline, render_output};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------------

fn kiln_home() -> PathBuf {
    kiln_environments::default_data_dir()
}

fn airline_dir() -> PathBuf {
    let dir = kiln_home().join("data/tau2/airline");
    assert!(
        dir.join("db.json").exists(),
        "{} is missing: run ops/setup",
        dir.display()
    );
    dir
}

/// The normalised airline DB (reservations carry `status: null`), loaded once.
fn base_db() -> &'static Value {
    static DB: OnceLock<Value> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = load_db(&airline_dir().join("db.json"), Domain::Airline).expect("airline DB");
        normalize(Domain::Airline, &mut db);
        db
    })
}

/// One tool call and whether the scenario expects it to fail (checked against the reference too,
/// so a scenario cannot silently stop covering the error it was written for).
struct Call {
    name: String,
    arguments: Value,
    expect_error: bool,
}

fn ok(name: &str, arguments: Value) -> Call {
    Call {
        name: name.to_string(),
        arguments,
        expect_error: false,
    }
}

fn err(name: &str, arguments: Value) -> Call {
    Call {
        name: name.to_string(),
        arguments,
        expect_error: true,
    }
}

#[derive(Debug, PartialEq)]
struct Run {
    outputs: Vec<(String, bool)>,
    db_hash: String,
}

fn run_ours(calls: &[(String, Value)]) -> Run {
    let mut db = base_db().clone();
    let outputs = calls
        .iter()
        .map(|(name, arguments)| {
            let empty = Map::new();
            let arguments = arguments.as_object().unwrap_or(&empty);
            render_output(&airline::call_tool(&mut db, name, arguments))
        })
        .collect();
    Run {
        outputs,
        db_hash: db_hash(&db),
    }
}

fn reference_driver() -> PathBuf {
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/tau2_reference.py");
    assert!(driver.exists(), "{} is missing", driver.display());
    driver
}

/// Runs episodes (each from a fresh DB) through the reference, in one Python process.
fn run_reference(episodes: &[Vec<(String, Value)>]) -> Vec<Run> {
    let request: Vec<Value> = episodes
        .iter()
        .map(|calls| {
            let calls: Vec<Value> = calls
                .iter()
                .map(|(name, arguments)| json!({"name": name, "arguments": arguments}))
                .collect();
            json!({"domain": "airline", "calls": calls})
        })
        .collect();
    let mut child = Command::new("python3")
        .arg(reference_driver())
        .env("KILN_HOME", kiln_home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to run the reference tools");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::Array(request).to_string().as_bytes())
        .expect("write request");
    let output = child.wait_with_output().expect("reference driver");
    assert!(
        output.status.success(),
        "reference driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response: Value = serde_json::from_slice(&output.stdout).expect("driver output is JSON");
    response
        .as_array()
        .expect("one result per episode")
        .iter()
        .map(reference_run)
        .collect()
}

fn reference_run(episode: &Value) -> Run {
    let outputs = episode["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| {
            let content = result["content"].as_str().expect("content").to_string();
            (content, result["error"].as_bool().expect("error flag"))
        })
        .collect();
    Run {
        outputs,
        db_hash: episode["db_hash"].as_str().expect("db_hash").to_string(),
    }
}

/// Runs a scenario both ways and asserts identical outputs and final DB; returns the outputs.
fn assert_matches_reference(calls: &[Call]) -> Vec<String> {
    let plain: Vec<(String, Value)> = calls
        .iter()
        .map(|call| (call.name.clone(), call.arguments.clone()))
        .collect();
    let reference = run_reference(std::slice::from_ref(&plain)).remove(0);
    let ours = run_ours(&plain);
    assert_eq!(reference.outputs.len(), calls.len());
    for (index, call) in calls.iter().enumerate() {
        let (expected, expected_error) = &reference.outputs[index];
        let (actual, actual_error) = &ours.outputs[index];
        assert_eq!(
            *expected_error, call.expect_error,
            "scenario design: call {index} {} {} gave {expected}",
            call.name, call.arguments
        );
        assert_eq!(
            actual, expected,
            "call {index}: {} {}",
            call.name, call.arguments
        );
        assert_eq!(
            actual_error, expected_error,
            "error flag of call {index}: {}",
            call.name
        );
    }
    assert_eq!(
        ours.db_hash, reference.db_hash,
        "final DB differs from the reference"
    );
    ours.outputs
        .into_iter()
        .map(|(content, _)| content)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures from the data: mei_hernandez_8984 holds gift card 98.0, two 250.0 certificates and
// two credit cards; her reservation 79G8A9 (economy, 2 passengers) was paid by the gift card.
// ---------------------------------------------------------------------------------------------

const MEI: &str = "mei_hernandez_8984";

/// JFK → SEA on HAT069, 2024-05-20, economy at 121: with insurance and one paid bag, 201.
fn mei_booking(payment_methods: Value) -> Value {
    json!({
        "user_id": MEI,
        "origin": "JFK",
        "destination": "SEA",
        "flight_type": "one_way",
        "cabin": "economy",
        "flights": [{"flight_number": "HAT069", "date": "2024-05-20"}],
        "passengers": [{"first_name": "Mei", "last_name": "Hernandez", "dob": "1981-01-01"}],
        "payment_methods": payment_methods,
        "total_baggages": 1,
        "nonfree_baggages": 1,
        "insurance": "yes",
    })
}

fn with(mut arguments: Value, key: &str, value: Value) -> Value {
    arguments[key] = value;
    arguments
}

fn without(mut arguments: Value, key: &str) -> Value {
    arguments.as_object_mut().expect("object").shift_remove(key);
    arguments
}

// ---------------------------------------------------------------------------------------------
// Per-tool scenarios.
// ---------------------------------------------------------------------------------------------

#[test]
fn book_reservation_matches_reference() {
    let split_payment = json!([
        {"payment_id": "certificate_7502997", "amount": 100},
        {"payment_id": "gift_card_5309492", "amount": 98},
        {"payment_id": "credit_card_6082923", "amount": 3},
    ]);
    let outputs = assert_matches_reference(&[
        ok("book_reservation", mei_booking(split_payment)),
        ok("get_user_details", json!({"user_id": MEI})),
        ok(
            "get_flight_status",
            json!({"flight_number": "HAT069", "date": "2024-05-20"}),
        ),
        ok(
            "search_direct_flight",
            json!({"origin": "JFK", "destination": "SEA", "date": "2024-05-20"}),
        ),
        // Float amounts that add up exactly are accepted and kept as floats.
        ok(
            "book_reservation",
            mei_booking(json!([
                {"payment_id": "credit_card_6082923", "amount": 200.5},
                {"payment_id": "credit_card_2140654", "amount": 0.5},
            ])),
        ),
        ok(
            "book_reservation",
            mei_booking(json!([{"payment_id": "credit_card_6082923", "amount": 201}])),
        ),
        err(
            "book_reservation",
            mei_booking(json!([{"payment_id": "credit_card_6082923", "amount": 201}])),
        ),
    ]);
    assert!(
        outputs[0].contains("\"reservation_id\": \"HATHAT\""),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[4].contains("\"reservation_id\": \"HATHAU\""),
        "{}",
        outputs[4]
    );
    assert!(
        outputs[5].contains("\"reservation_id\": \"HATHAV\""),
        "{}",
        outputs[5]
    );
    assert_eq!(outputs[6], "Error: Too many reservations");
    // The partly used certificate is gone and the gift card is empty.
    assert!(!outputs[1].contains("certificate_7502997"));
    assert!(
        outputs[1].contains("\"gift_card_5309492\", \"amount\": 0.0"),
        "{}",
        outputs[1]
    );
}

#[test]
fn book_reservation_errors_match_reference() {
    let booking = mei_booking(json!([{"payment_id": "credit_card_6082923", "amount": 201}]));
    let two_passengers = json!([
        {"first_name": "A", "last_name": "B", "dob": "1990-01-01"},
        {"first_name": "C", "last_name": "D", "dob": "1990-01-02"},
    ]);
    let low_seats_booking = with(
        with(booking.clone(), "cabin", json!("basic_economy")),
        "flights",
        json!([{"flight_number": "HAT001", "date": "2024-05-25"}]),
    );
    let low_seats_booking = with(low_seats_booking, "passengers", two_passengers);
    let outputs = assert_matches_reference(&[
        err("book_reservation", without(booking.clone(), "insurance")),
        err(
            "book_reservation",
            without(without(booking.clone(), "insurance"), "cabin"),
        ),
        err("book_reservation", json!({})),
        err(
            "book_reservation",
            with(booking.clone(), "seat", json!("12A")),
        ),
        err(
            "book_reservation",
            with(booking.clone(), "user_id", json!("nobody_1")),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "flights",
                json!([{"flight_number": "HAT999", "date": "2024-05-20"}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "flights",
                json!([{"flight_number": "HAT069"}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "flights",
                json!([{"flight_number": "HAT069", "date": "2024-06-20"}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "flights",
                json!([{"flight_number": "HAT001", "date": "2024-05-01"}]),
            ),
        ),
        err(
            "book_reservation",
            with(booking.clone(), "cabin", json!("first")),
        ),
        // HAT001 has one basic economy seat left on 2024-05-25.
        err("book_reservation", low_seats_booking),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "payment_methods",
                json!([{"payment_id": "credit_card_0000000", "amount": 201}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "payment_methods",
                json!([{"payment_id": "gift_card_5309492", "amount": 201}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "payment_methods",
                json!([{"payment_id": "credit_card_6082923", "amount": 200}]),
            ),
        ),
        err(
            "book_reservation",
            with(
                booking.clone(),
                "payment_methods",
                json!([{"payment_id": "credit_card_6082923"}]),
            ),
        ),
        err(
            "book_reservation",
            with(booking.clone(), "user_id", json!(["not", "hashable"])),
        ),
        err(
            "book_reservation",
            with(booking.clone(), "nonfree_baggages", json!(null)),
        ),
        err(
            "book_reservation",
            with(booking.clone(), "flights", json!(7)),
        ),
        // Failed bookings changed nothing: a valid one still gets the first id.
        ok("book_reservation", booking),
    ]);
    assert_eq!(
        outputs[0],
        "Error: book_reservation_state() missing 1 required positional argument: 'insurance'"
    );
    assert_eq!(outputs[6], "Error: 'date'");
    assert_eq!(
        outputs[13],
        "Error: Payment amount does not add up, total price is 201, but paid 200"
    );
    assert!(outputs[18].contains("HATHAT"));
}

#[test]
fn book_reservation_keeps_partial_payments_when_a_certificate_is_used_twice() {
    // The checks pass (each use is within the balance and the sum is right), then the second
    // removal of the certificate fails after the gift card was debited: the reference keeps that.
    assert_matches_reference(&[
        err(
            "book_reservation",
            mei_booking(json!([
                {"payment_id": "gift_card_5309492", "amount": 50},
                {"payment_id": "certificate_7502997", "amount": 100},
                {"payment_id": "certificate_7502997", "amount": 51},
            ])),
        ),
        ok("get_user_details", json!({"user_id": MEI})),
        err(
            "get_reservation_details",
            json!({"reservation_id": "HATHAT"}),
        ),
    ]);
}

#[test]
fn calculate_matches_reference() {
    let expressions = [
        "2 * (3 + 4.5)",
        "1200 * 0.9 - 30",
        "10 / 4",
        "7 // 2",
        "-7 // 2",
        "2 ** 10",
        "2 ** -2",
        "(1 + 2",
        "1 + 2)",
        "1 2",
        "(1 2)",
        "0123",
        "1/0",
        "1.0 // 0",
        "",
        "()",
        "...",
        "2(3)",
        "2.675",
        "1e5",
        "3 % 2",
        "10.0 ** 400",
        "(-8) ** 0.5",
    ];
    let mut calls: Vec<Call> = expressions
        .iter()
        .map(|expression| {
            let arguments = json!({"expression": expression});
            let fails = !matches!(
                *expression,
                "2 * (3 + 4.5)"
                    | "1200 * 0.9 - 30"
                    | "10 / 4"
                    | "7 // 2"
                    | "-7 // 2"
                    | "2 ** 10"
                    | "2 ** -2"
                    | "2.675"
            );
            Call {
                name: "calculate".to_string(),
                arguments,
                expect_error: fails,
            }
        })
        .collect();
    calls.push(err("calculate", json!({})));
    calls.push(err("calculate", json!({"expression": 5})));
    calls.push(err("calculate", json!({"expression": ["1", "+", "2"]})));
    calls.push(err(
        "calculate",
        json!({"expression": "1+1", "precision": 2}),
    ));
    let outputs = assert_matches_reference(&calls);
    assert_eq!(outputs[0], "15.0");
    assert_eq!(outputs[18], "2.67");
}

#[test]
fn cancel_reservation_matches_reference() {
    let outputs = assert_matches_reference(&[
        ok("cancel_reservation", json!({"reservation_id": "79G8A9"})),
        // No eligibility check: cancelling again negates the whole history once more.
        ok("cancel_reservation", json!({"reservation_id": "79G8A9"})),
        ok("get_user_details", json!({"user_id": MEI})),
        err("cancel_reservation", json!({"reservation_id": "ZZZZZZ"})),
        err("cancel_reservation", json!({})),
        err("cancel_reservation", json!({"reservation_id": 42})),
    ]);
    assert!(outputs[0].contains("\"status\": \"cancelled\""));
    assert_eq!(outputs[3], "Error: Reservation ZZZZZZ not found");
}

#[test]
fn read_tools_match_reference() {
    assert_matches_reference(&[
        ok(
            "get_reservation_details",
            json!({"reservation_id": "R9QDGB"}),
        ),
        err(
            "get_reservation_details",
            json!({"reservation_id": "NOPE00"}),
        ),
        err(
            "get_reservation_details",
            json!({"reservation_id": ["R9QDGB"]}),
        ),
        ok("get_user_details", json!({"user_id": MEI})),
        err("get_user_details", json!({"user_id": "nobody_1"})),
        err("get_user_details", json!({"user_id": MEI, "state": "x"})),
        err("get_user_details", json!({"user_id": MEI, "db": {}})),
        // The reference's MCP layer drops `state_key` before calling the tool.
        ok(
            "get_user_details",
            json!({"user_id": MEI, "state_key": "tau2/airline/1"}),
        ),
        ok("list_all_airports", json!({})),
        // The reference calls it without the arguments, so extra ones are ignored.
        ok("list_all_airports", json!({"country": "USA"})),
        ok(
            "get_flight_status",
            json!({"flight_number": "HAT002", "date": "2024-05-15"}),
        ),
        ok(
            "get_flight_status",
            json!({"flight_number": "HAT001", "date": "2024-05-03"}),
        ),
        err(
            "get_flight_status",
            json!({"flight_number": "HAT999", "date": "2024-05-15"}),
        ),
        err(
            "get_flight_status",
            json!({"flight_number": "HAT002", "date": "2024-07-15"}),
        ),
        err("get_flight_status", json!({"flight_number": "HAT002"})),
        ok(
            "transfer_to_human_agents",
            json!({"summary": "wants a refund"}),
        ),
        err("transfer_to_human_agents", json!({})),
        err("no_such_tool", json!({})),
    ]);
}

#[test]
fn flight_searches_match_reference() {
    let outputs = assert_matches_reference(&[
        ok(
            "search_direct_flight",
            json!({"origin": "JFK", "destination": "SEA", "date": "2024-05-20"}),
        ),
        ok(
            "search_direct_flight",
            json!({"origin": "JFK", "destination": "SEA", "date": "2024-05-02"}),
        ),
        // `None` filters nothing.
        ok(
            "search_direct_flight",
            json!({"origin": null, "destination": "SEA", "date": "2024-05-20"}),
        ),
        err(
            "search_direct_flight",
            json!({"origin": "JFK", "destination": "SEA"}),
        ),
        err(
            "search_direct_flight",
            json!({"origin": "JFK", "destination": "SEA", "date": ["2024-05-20"]}),
        ),
        // HAT261 lands at 01:30:00+1, so its connections are searched on the next day.
        ok(
            "search_onestop_flight",
            json!({"origin": "JFK", "destination": "DEN", "date": "2024-05-20"}),
        ),
        ok(
            "search_onestop_flight",
            json!({"origin": "LAX", "destination": "BOS", "date": "2024-05-28"}),
        ),
        ok(
            "search_onestop_flight",
            json!({"origin": "JFK", "destination": "DEN", "date": "2024-04-20"}),
        ),
        err(
            "search_onestop_flight",
            json!({"origin": "JFK", "date": "2024-05-20"}),
        ),
        err(
            "search_onestop_flight",
            json!({"origin": "JFK", "destination": "DEN", "date": {"day": 20}}),
        ),
    ]);
    assert!(
        outputs[0].starts_with("[{\"flight_number\": \"HAT"),
        "{}",
        outputs[0]
    );
    assert!(outputs[0].contains("\"date\": null"));
    assert_eq!(outputs[1], "[]");
    assert!(
        outputs[5].contains("\"date\": \"2024-05-21\""),
        "next-day legs: {}",
        outputs[5]
    );
}

#[test]
fn send_certificate_matches_reference() {
    let outputs = assert_matches_reference(&[
        ok("send_certificate", json!({"user_id": MEI, "amount": 100})),
        ok("send_certificate", json!({"user_id": MEI, "amount": 50.5})),
        ok("send_certificate", json!({"user_id": MEI, "amount": 150})),
        err("send_certificate", json!({"user_id": MEI, "amount": 150})),
        ok("get_user_details", json!({"user_id": MEI})),
        err(
            "send_certificate",
            json!({"user_id": "nobody_1", "amount": 100}),
        ),
        err("send_certificate", json!({"user_id": MEI})),
    ]);
    assert_eq!(
        outputs[0],
        format!("Certificate certificate_3221322 added to user {MEI} with amount 100.")
    );
    assert_eq!(outputs[3], "Error: Too many certificates");
}

#[test]
fn update_reservation_baggages_matches_reference() {
    let bags = |total: i64, nonfree: Value, payment: &str| {
        json!({
            "reservation_id": "79G8A9",
            "total_baggages": total,
            "nonfree_baggages": nonfree,
            "payment_id": payment,
        })
    };
    assert_matches_reference(&[
        // One paid bag (50) from the 98.0 gift card, then two more exceed what is left.
        ok(
            "update_reservation_baggages",
            bags(2, json!(1), "gift_card_5309492"),
        ),
        err(
            "update_reservation_baggages",
            bags(4, json!(3), "gift_card_5309492"),
        ),
        ok(
            "update_reservation_baggages",
            bags(4, json!(3), "credit_card_2140654"),
        ),
        // Fewer paid bags cost nothing and refund nothing; a float count stays a float.
        ok(
            "update_reservation_baggages",
            bags(1, json!(0), "credit_card_2140654"),
        ),
        ok(
            "update_reservation_baggages",
            bags(2, json!(1.0), "credit_card_2140654"),
        ),
        err(
            "update_reservation_baggages",
            bags(2, json!(1), "certificate_7502997"),
        ),
        err("update_reservation_baggages", bags(2, json!(1), "paypal_1")),
        err(
            "update_reservation_baggages",
            bags(2, json!("two"), "credit_card_2140654"),
        ),
        err(
            "update_reservation_baggages",
            json!({"reservation_id": "NOPE00", "total_baggages": 1, "nonfree_baggages": 0, "payment_id": "x"}),
        ),
        err(
            "update_reservation_baggages",
            json!({"reservation_id": "79G8A9"}),
        ),
        ok(
            "get_reservation_details",
            json!({"reservation_id": "79G8A9"}),
        ),
    ]);
}

#[test]
fn update_reservation_flights_matches_reference() {
    let current = json!([
        {"flight_number": "HAT034", "date": "2024-05-28"},
        {"flight_number": "HAT026", "date": "2024-05-28"},
        {"flight_number": "HAT247", "date": "2024-05-30"},
        {"flight_number": "HAT232", "date": "2024-05-30"},
    ]);
    let update = |cabin: &str, flights: &Value, payment: &str| json!({"reservation_id": "R9QDGB", "cabin": cabin, "flights": flights, "payment_id": payment});
    let mut changed = current.clone();
    changed[3] = json!({"flight_number": "HAT232", "date": "2024-05-29"});
    assert_matches_reference(&[
        // Same flights, same cabin: nothing to pay, no payment recorded.
        ok(
            "update_reservation_flights",
            update("economy", &current, "credit_card_6082923"),
        ),
        // Certificates cannot pay for updates, even when nothing is due.
        err(
            "update_reservation_flights",
            update("economy", &current, "certificate_7502997"),
        ),
        err(
            "update_reservation_flights",
            update("economy", &current, "credit_card_0000000"),
        ),
        err(
            "update_reservation_flights",
            update("first", &changed, "credit_card_6082923"),
        ),
        err(
            "update_reservation_flights",
            update(
                "economy",
                &json!([{"flight_number": "HAT034"}]),
                "credit_card_6082923",
            ),
        ),
        err(
            "update_reservation_flights",
            update(
                "economy",
                &json!([{"flight_number": "HAT001", "date": "2024-05-01"}]),
                "credit_card_6082923",
            ),
        ),
        err(
            "update_reservation_flights",
            update(
                "economy",
                &json!([{"flight_number": "HAT999", "date": "2024-05-28"}]),
                "credit_card_6082923",
            ),
        ),
        // Business prices for the whole itinerary, charged to a card.
        ok(
            "update_reservation_flights",
            update("business", &current, "credit_card_6082923"),
        ),
        // Back to basic economy: the negative difference is credited to the gift card.
        ok(
            "update_reservation_flights",
            update("basic_economy", &changed, "gift_card_5309492"),
        ),
        ok("get_user_details", json!({"user_id": MEI})),
        err(
            "update_reservation_flights",
            json!({"reservation_id": "R9QDGB", "cabin": "economy"}),
        ),
    ]);
}

#[test]
fn update_reservation_passengers_matches_reference() {
    let passengers = json!([
        {"first_name": "Ann", "last_name": "Lee", "dob": "1970-02-02"},
        {"first_name": "Bo", "last_name": "Lee", "dob": "1972-03-03"},
    ]);
    assert_matches_reference(&[
        ok(
            "update_reservation_passengers",
            json!({"reservation_id": "79G8A9", "passengers": passengers}),
        ),
        err(
            "update_reservation_passengers",
            json!({"reservation_id": "79G8A9", "passengers": [passengers[0]]}),
        ),
        err(
            "update_reservation_passengers",
            json!({"reservation_id": "NOPE00", "passengers": passengers}),
        ),
        err(
            "update_reservation_passengers",
            json!({"reservation_id": "79G8A9", "passengers": 2}),
        ),
        err(
            "update_reservation_passengers",
            json!({"passengers": passengers}),
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// The headline acceptance test: every task's gold actions end in the reference's DB.
// ---------------------------------------------------------------------------------------------

#[test]
fn gold_actions_of_all_50_tasks_reach_the_reference_db_hash() {
    let text = std::fs::read_to_string(airline_dir().join("tasks.json")).expect("read tasks.json");
    let tasks: Vec<Value> = serde_json::from_str(&text).expect("parse tasks.json");
    assert_eq!(tasks.len(), 50);
    let episodes: Vec<Vec<(String, Value)>> = tasks
        .iter()
        .map(|task| {
            let actions = task["evaluation_criteria"]["actions"].as_array().cloned();
            actions
                .unwrap_or_default()
                .iter()
                .map(|action| {
                    let name = action["name"].as_str().expect("action name").to_string();
                    (name, action["arguments"].clone())
                })
                .collect()
        })
        .collect();
    let references = run_reference(&episodes);
    for ((task, calls), reference) in tasks.iter().zip(&episodes).zip(&references) {
        assert_eq!(&run_ours(calls), reference, "task {}", task["id"]);
    }
    let replayed_writes = episodes
        .iter()
        .flatten()
        .filter(|(name, _)| airline::is_write_tool(name))
        .count();
    // The gold actions do change the DB (so equal hashes are not trivially the initial one).
    assert!(
        replayed_writes >= 40,
        "only {replayed_writes} write actions replayed"
    );
}

#[test]
fn untouched_db_hash_is_taus() {
    let reference = run_reference(&[Vec::new()]).remove(0);
    assert_eq!(db_hash(base_db()), reference.db_hash);
    assert!(reference.db_hash.starts_with("124e39a664b56402"));
}

#[test]
fn tool_schemas_list_the_fourteen_tools_without_state_key() {
    let schemas = airline::tool_schemas();
    let names: Vec<&str> = schemas.iter().map(|schema| schema.name.as_str()).collect();
    assert_eq!(names.len(), 14);
    for name in &names {
        let probe = airline::call_tool(&mut json!({}), name, &Map::new());
        assert_ne!(
            probe.err().map(|error| error.0),
            Some(format!("Tool '{name}' not found.")),
            "{name} is declared but not implemented"
        );
    }
    for schema in &schemas {
        let properties = schema.parameters["properties"]
            .as_object()
            .expect("properties");
        assert!(!properties.contains_key("state_key"), "{}", schema.name);
        let required = schema.parameters["required"].as_array().expect("required");
        assert_eq!(required.len(), properties.len(), "{}", schema.name);
    }
    let writes: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| airline::is_write_tool(name))
        .collect();
    assert_eq!(
        writes,
        [
            "book_reservation",
            "cancel_reservation",
            "send_certificate",
            "update_reservation_baggages",
            "update_reservation_flights",
            "update_reservation_passengers"
        ]
    );
}
