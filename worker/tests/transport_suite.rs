//! One behavioural suite for every [`Transport`]: the same cases run against the in-process
//! transport and against NATS JetStream on a real `nats-server` (from `ops/setup nats`; missing
//! binary fails the NATS cases loudly).
//!
//! Cases that depend on what only JetStream models run for NATS alone, each saying why:
//! lease expiry (in-process has no ack-wait: a slot that dies takes the process with it),
//! enqueue dedup (the trait promises dedup of results by subscribers, not of enqueues; the
//! in-process coordinator enqueues each key once), payload limits and server restarts.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use kiln_protocol::names::{OUTCOMES_STREAM, TASKS_STREAM};
use kiln_protocol::{ModelSpec, TaskSpec, Termination};
use kiln_worker::testing::NatsServer;
use kiln_worker::{
    InProcessTransport, NatsOptions, NatsTransport, TaskFailure, TaskResult, Transport,
    TransportErrorKind, failure_result,
};

/// Lease (ack-wait) of the NATS consumer in these tests: short, so expiry is observable.
const LEASE: Duration = Duration::from_millis(1000);
/// How long a test waits to conclude that nothing (more) is delivered: past one lease.
const QUIET: Duration = Duration::from_millis(1800);
/// Upper bound on waiting for something that must come.
const SOON: Duration = Duration::from_secs(10);

/// A transport under test and whatever keeps it alive (the server).
struct Subject {
    transport: Arc<dyn Transport>,
    _server: Option<NatsServer>,
}

async fn in_process() -> Subject {
    Subject {
        transport: Arc::new(InProcessTransport::new()),
        _server: None,
    }
}

fn test_options() -> NatsOptions {
    NatsOptions {
        lease: LEASE,
        max_deliver: 5,
        pull_wait: Duration::from_millis(500),
        ..NatsOptions::default()
    }
}

async fn nats() -> Subject {
    let server = NatsServer::start();
    let transport = NatsTransport::connect(&server.url(), test_options())
        .await
        .expect("connect to the test nats-server");
    Subject {
        transport: Arc::new(transport),
        _server: Some(server),
    }
}

fn task(run_id: &str, task_id: &str) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: run_id.to_string(),
        env: "test-env".to_string(),
        split: "test".to_string(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "h".to_string(),
        model: ModelSpec::Oracle,
        env_options: serde_json::Value::Null,
        seed: 0,
        timeout_s: 0,
    }
}

fn result(run_id: &str, task_id: &str, message: &str) -> TaskResult {
    let failure = TaskFailure::transient(Termination::EnvDone, message);
    failure_result(&task(run_id, task_id), &failure, "oracle", "w1", 0)
}

/// Pulls one task, failing the test if none comes within `SOON`.
async fn pull_soon(transport: &dyn Transport) -> Box<dyn kiln_worker::TaskLease> {
    tokio::time::timeout(SOON, transport.pull())
        .await
        .expect("a task within the deadline")
        .expect("pull succeeds")
        .expect("transport still open")
}

/// The id of a task delivered within `wait`, if any (a delivered task is acked).
async fn pull_within(transport: &dyn Transport, wait: Duration) -> Option<String> {
    let lease = tokio::time::timeout(wait, transport.pull()).await.ok()?;
    let lease = lease.expect("pull succeeds")?;
    let id = lease.task().task_id.clone();
    lease.ack().await.expect("ack");
    Some(id)
}

mod cases {
    use super::*;

    pub async fn acked_task_is_not_redelivered(subject: Subject) {
        let transport = subject.transport.as_ref();
        transport.enqueue(task("r1", "a")).await.unwrap();
        let lease = pull_soon(transport).await;
        assert_eq!(lease.task().task_id, "a");
        assert_eq!(lease.task().run_id, "r1");
        assert_eq!(lease.delivery(), 1);
        lease.ack().await.unwrap();
        assert_eq!(pull_within(transport, QUIET).await, None);
    }

    pub async fn nak_redelivers_with_delivery_two(subject: Subject) {
        let transport = subject.transport.as_ref();
        transport.enqueue(task("r1", "a")).await.unwrap();
        let first = pull_soon(transport).await;
        assert_eq!(first.delivery(), 1);
        first.nak(Duration::from_millis(50)).await.unwrap();
        let second = pull_soon(transport).await;
        assert_eq!(second.task().task_id, "a");
        assert_eq!(second.delivery(), 2);
        second.ack().await.unwrap();
        assert_eq!(pull_within(transport, QUIET).await, None);
    }

    pub async fn termed_task_is_never_redelivered(subject: Subject) {
        let transport = subject.transport.as_ref();
        transport.enqueue(task("r1", "a")).await.unwrap();
        transport.enqueue(task("r1", "b")).await.unwrap();
        let first = pull_soon(transport).await;
        assert_eq!(first.task().task_id, "a");
        first.term("unknown task").await.unwrap();
        assert_eq!(pull_within(transport, SOON).await.as_deref(), Some("b"));
        assert_eq!(pull_within(transport, QUIET).await, None);
    }

    pub async fn heartbeats_keep_a_lease_past_the_ack_wait(subject: Subject) {
        let transport = subject.transport.clone();
        transport.enqueue(task("r1", "long")).await.unwrap();
        let lease = pull_soon(transport.as_ref()).await;
        // Another worker keeps pulling while the episode runs for 2.5 leases.
        let rival = {
            let transport = transport.clone();
            tokio::spawn(async move { pull_within(transport.as_ref(), LEASE * 3).await })
        };
        for _ in 0..10 {
            tokio::time::sleep(LEASE / 4).await;
            lease.heartbeat().await.unwrap();
        }
        lease.ack().await.unwrap();
        assert_eq!(rival.await.unwrap(), None, "the task was redelivered");
    }

    pub async fn results_published_before_subscribe_are_delivered(subject: Subject) {
        let transport = subject.transport.as_ref();
        let mut published = Vec::new();
        for id in ["a", "b", "c"] {
            let early = result("r1", id, "early");
            transport.publish(early.clone()).await.unwrap();
            published.push(early);
        }
        transport
            .publish(result("other", "x", "other run"))
            .await
            .unwrap();
        let mut results = transport.subscribe("r1").await.unwrap();
        let late = result("r1", "d", "late");
        transport.publish(late.clone()).await.unwrap();
        published.push(late);
        let mut seen = Vec::new();
        for _ in 0..published.len() {
            let next = tokio::time::timeout(SOON, results.recv())
                .await
                .expect("a result within the deadline")
                .expect("subscription open");
            seen.push(next);
        }
        assert_eq!(
            seen, published,
            "results of r1, intact and in publication order"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), results.recv())
                .await
                .is_err(),
            "nothing from another run"
        );
    }

    pub async fn concurrent_pullers_get_every_task_exactly_once(subject: Subject) {
        const TASKS: usize = 200;
        let transport = subject.transport.clone();
        for id in 0..TASKS {
            transport
                .enqueue(task("r1", &id.to_string()))
                .await
                .unwrap();
        }
        let taken = Arc::new(Mutex::new(Vec::new()));
        let mut pullers = Vec::new();
        for _ in 0..3 {
            let transport = transport.clone();
            let taken = taken.clone();
            pullers.push(tokio::spawn(async move {
                let mut mine = 0usize;
                while let Some(lease) = transport.pull().await.unwrap() {
                    let id = lease.task().task_id.clone();
                    lease.ack().await.unwrap();
                    mine += 1;
                    let done = {
                        let mut taken = taken.lock().unwrap();
                        taken.push(id);
                        taken.len() >= TASKS
                    };
                    if done {
                        transport.close().await;
                    }
                }
                mine
            }));
        }
        let mut per_puller = Vec::new();
        for puller in pullers {
            per_puller.push(
                tokio::time::timeout(Duration::from_secs(60), puller)
                    .await
                    .expect("pullers finish")
                    .unwrap(),
            );
        }
        let taken = taken.lock().unwrap().clone();
        assert_eq!(taken.len(), TASKS, "no task delivered twice");
        let distinct: BTreeSet<usize> = taken.iter().map(|id| id.parse().unwrap()).collect();
        assert_eq!(distinct, (0..TASKS).collect(), "every task delivered");
        assert_eq!(per_puller.iter().sum::<usize>(), TASKS);
    }

    pub async fn close_ends_pulls_and_refuses_enqueues(subject: Subject) {
        let transport = subject.transport.clone();
        let waiting = {
            let transport = transport.clone();
            tokio::spawn(async move { transport.pull().await.unwrap().is_none() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        transport.close().await;
        let ended = tokio::time::timeout(SOON, waiting)
            .await
            .expect("pull ends");
        assert!(ended.unwrap(), "a closed transport returns no task");
        let error = transport.enqueue(task("r1", "a")).await.unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Closed);
    }
}

/// Runs every shared case against one transport constructor.
macro_rules! transport_suite {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acked_task_is_not_redelivered() {
                cases::acked_task_is_not_redelivered($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nak_redelivers_with_delivery_two() {
                cases::nak_redelivers_with_delivery_two($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn termed_task_is_never_redelivered() {
                cases::termed_task_is_never_redelivered($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn heartbeats_keep_a_lease_past_the_ack_wait() {
                cases::heartbeats_keep_a_lease_past_the_ack_wait($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn results_published_before_subscribe_are_delivered() {
                cases::results_published_before_subscribe_are_delivered($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_pullers_get_every_task_exactly_once() {
                cases::concurrent_pullers_get_every_task_exactly_once($make().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn close_ends_pulls_and_refuses_enqueues() {
                cases::close_ends_pulls_and_refuses_enqueues($make().await).await;
            }
        }
    };
}

transport_suite!(in_process_transport, in_process);
transport_suite!(nats_transport, nats);

/// Cases only JetStream models (see the module doc for why each is NATS-only).
mod nats_only {
    use super::*;

    /// A worker that dies holding a lease: the task comes back once the ack-wait passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsettled_lease_is_redelivered_after_the_ack_wait() {
        let subject = nats().await;
        let transport = subject.transport.as_ref();
        transport.enqueue(task("r1", "a")).await.unwrap();
        let abandoned = pull_soon(transport).await;
        assert_eq!(abandoned.delivery(), 1);
        let started = std::time::Instant::now();
        let again = pull_soon(transport).await;
        assert!(
            started.elapsed() >= LEASE / 2,
            "redelivered before the lease expired"
        );
        assert_eq!(again.task().task_id, "a");
        assert_eq!(again.delivery(), 2);
        again.ack().await.unwrap();
        drop(abandoned);
        assert_eq!(pull_within(transport, QUIET).await, None);
    }

    /// The server drops a second enqueue of the same (run, task, attempt) within the window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_duplicate_enqueue_is_delivered_once() {
        let subject = nats().await;
        let transport = subject.transport.as_ref();
        transport.enqueue(task("r1", "a")).await.unwrap();
        transport.enqueue(task("r1", "a")).await.unwrap();
        let mut retry = task("r1", "a");
        retry.attempt = 1;
        transport.enqueue(retry).await.unwrap();
        let first = pull_soon(transport).await;
        assert_eq!(
            (first.task().task_id.as_str(), first.task().attempt),
            ("a", 0)
        );
        first.ack().await.unwrap();
        let second = pull_soon(transport).await;
        assert_eq!(
            (second.task().task_id.as_str(), second.task().attempt),
            ("a", 1)
        );
        second.ack().await.unwrap();
        assert_eq!(pull_within(transport, QUIET).await, None);
    }

    /// A republished result (after a redelivery) is dropped by the server within the window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_republished_result_is_stored_once() {
        let subject = nats().await;
        let transport = subject.transport.as_ref();
        transport.publish(result("r1", "a", "first")).await.unwrap();
        transport.publish(result("r1", "a", "again")).await.unwrap();
        transport.publish(result("r1", "b", "other")).await.unwrap();
        let mut results = transport.subscribe("r1").await.unwrap();
        let first = results.recv().await.unwrap();
        let second = tokio::time::timeout(SOON, results.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.outcome.task_id, "a");
        assert_eq!(first.outcome.error.as_deref(), Some("first"));
        assert_eq!(second.outcome.task_id, "b");
    }

    /// Results larger than the 1 MiB default pass under the test server's limit; larger than
    /// the server's limit fail as a codec error naming the subject.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_results_pass_up_to_the_server_max_payload() {
        let subject = nats().await;
        let transport = subject.transport.as_ref();
        let big = "x".repeat(2 * 1024 * 1024);
        transport.publish(result("r1", "big", &big)).await.unwrap();
        let mut results = transport.subscribe("r1").await.unwrap();
        let received = tokio::time::timeout(SOON, results.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            received.outcome.error.as_deref().map(str::len),
            Some(big.len())
        );

        let too_big = "x".repeat(kiln_worker::testing::TEST_MAX_PAYLOAD + 1);
        let error = transport
            .publish(result("r1", "huge", &too_big))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Codec);
        assert!(error.to_string().contains("kiln.outcomes.r1"), "{error}");
    }

    /// Queued tasks survive a server restart (file storage), and the client reconnects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_tasks_survive_a_server_restart() {
        let mut server = NatsServer::start();
        let transport = NatsTransport::connect(&server.url(), test_options())
            .await
            .unwrap();
        transport.enqueue(task("r1", "a")).await.unwrap();
        transport.enqueue(task("r1", "b")).await.unwrap();
        let first = pull_soon(&transport).await;
        first.ack().await.unwrap();
        server.restart();
        let mut remaining = None;
        for _ in 0..40 {
            if let Ok(Ok(Some(lease))) =
                tokio::time::timeout(Duration::from_secs(1), transport.pull()).await
            {
                remaining = Some(lease);
                break;
            }
        }
        let remaining = remaining.expect("the queued task after the restart");
        assert_eq!(remaining.task().task_id, "b");
        remaining.ack().await.unwrap();
        assert_eq!(pull_within(&transport, QUIET).await, None);
    }

    /// The coordinator and a worker connect separately: they share the queue through the one
    /// durable consumer, and the last connect's lease is the consumer's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn separate_connections_share_the_queue_and_the_last_connect_sets_the_lease() {
        let server = NatsServer::start();
        let coordinator = NatsTransport::connect(&server.url(), test_options())
            .await
            .unwrap();
        let longer = NatsOptions {
            lease: Duration::from_secs(30),
            ..test_options()
        };
        let worker = NatsTransport::connect(&server.url(), longer).await.unwrap();
        coordinator.enqueue(task("r1", "a")).await.unwrap();
        let lease = pull_soon(&worker).await;
        assert_eq!(lease.task().task_id, "a");
        lease.ack().await.unwrap();
        assert_eq!(pull_within(&coordinator, QUIET).await, None);

        let jetstream = async_nats::jetstream::new(worker.client().clone());
        let stream = jetstream.get_stream(TASKS_STREAM).await.unwrap();
        let consumers: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
        assert_eq!(consumers, ["kiln-workers"], "one shared consumer");
        let info = stream.consumer_info("kiln-workers").await.unwrap();
        assert_eq!(info.config.ack_wait, Duration::from_secs(30));
        assert_eq!(info.config.max_deliver, 5);
    }

    /// A client that attaches (`kiln run --nats`) leaves the consumer and the streams as the
    /// cluster configured them, even with other options.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attaching_keeps_the_clusters_lease_max_deliver_and_duplicate_window() {
        let server = NatsServer::start();
        let configured = NatsOptions {
            duplicate_window: Duration::from_secs(1),
            ..test_options()
        };
        let member = NatsTransport::connect(&server.url(), configured)
            .await
            .unwrap();
        let client = NatsTransport::attach(&server.url(), NatsOptions::default())
            .await
            .unwrap();
        member.enqueue(task("r1", "a")).await.unwrap();
        let lease = pull_soon(&member).await;
        lease.ack().await.unwrap();
        let jetstream = async_nats::jetstream::new(client.client().clone());
        let mut stream = jetstream.get_stream(TASKS_STREAM).await.unwrap();
        let info = stream.consumer_info("kiln-workers").await.unwrap();
        assert_eq!(info.config.ack_wait, LEASE);
        assert_eq!(info.config.max_deliver, 5);
        let stream_info = stream.info().await.unwrap();
        assert_eq!(stream_info.config.duplicate_window, Duration::from_secs(1));
    }

    /// The keys of a run's published results, read from message ids (headers only, so big
    /// trajectories stay on the server), for a coordinator that restarts after tasks finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn published_lists_the_keys_of_a_runs_results() {
        let subject = nats().await;
        let transport = subject.transport.as_ref();
        assert_eq!(transport.published("r1").await.unwrap(), BTreeSet::new());
        let mut retry = result("r1", "a", "again");
        retry.outcome.attempt = 1;
        let big = "x".repeat(2 * 1024 * 1024);
        for published in [
            result("r1", "a", "first"),
            retry,
            result("r1", "owner/repo-7", "a task id with a slash"),
            result("r1", "big", &big),
            result("r2", "other-run", "not r1's"),
        ] {
            transport.publish(published).await.unwrap();
        }
        let expected: BTreeSet<(String, u32)> =
            [("a", 0), ("a", 1), ("owner/repo-7", 0), ("big", 0)]
                .into_iter()
                .map(|(task, attempt)| (task.to_string(), attempt))
                .collect();
        assert_eq!(transport.published("r1").await.unwrap(), expected);
        assert_eq!(
            transport.published("r2").await.unwrap(),
            BTreeSet::from([("other-run".to_string(), 0)])
        );
        // The listing consumers are gone: nothing is left reading the results stream.
        let nats = subject._server.as_ref().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let stream = async_nats::jetstream::new(client)
            .get_stream(OUTCOMES_STREAM)
            .await
            .unwrap();
        let consumers: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
        assert!(consumers.is_empty(), "{consumers:?}");
    }

    /// A run id with a dot would land on another subject; it is refused by name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_ids_that_are_not_a_subject_token_are_refused() {
        let subject = nats().await;
        let error = subject
            .transport
            .enqueue(task("r.1", "a"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Codec);
        assert!(error.to_string().contains("r.1"), "{error}");
    }

    /// Connecting to a port with no server fails as a backend error naming the URL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connecting_to_no_server_names_the_url() {
        let mut server = NatsServer::start();
        let url = server.url();
        server.stop();
        let error = NatsTransport::connect(&url, test_options())
            .await
            .err()
            .expect("no server to connect to");
        assert_eq!(error.kind(), TransportErrorKind::Backend);
        assert!(error.to_string().contains(&url), "{error}");
    }
}
