//! How a scrape reaches the model without holding it up: the HTTP server's [`Requests`] (a
//! [`Scrape`]) queue each query, and the model's thread answers what is queued between two
//! batches of events ([`Queue::answer_pending`]), so the model never waits for a client and
//! never shares a lock with one. The model's thread only takes the figures (a
//! [`MetricsInput`], or what a profile needs); the work that does not need the model
//! (rendering the exposition, encoding and compressing a profile) runs on the server's
//! thread.
//!
//! Bounded both ways: a few queries wait at most (a scrape beyond them is told the agent is
//! busy), and a query waits for its answer until a deadline (then the scrape is told so and
//! a late answer is dropped).

use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError},
    time::Duration,
};

use crate::agent::{
    http::{Scrape, Unavailable},
    metrics::MetricsInput,
};

/// Queries waiting for the model's thread at most.
pub const QUEUED_QUERIES: usize = 8;

/// What a scrape asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Metrics,
    HeapProfile,
    AllocsProfile,
}

/// A finished profile, or the work to finish one away from the model's thread.
pub type ProfileWork = Box<dyn FnOnce() -> Result<Vec<u8>, Unavailable> + Send>;

/// What the model's thread answers.
pub enum Answer {
    Metrics(MetricsInput),
    /// Called on the server's thread: e.g. a report built on the model's thread, moved into a
    /// closure that encodes it (`report::export::pprof::render`).
    Profile(ProfileWork),
    Unavailable(Unavailable),
}

type Pending = (Query, Sender<Answer>);

/// The two ends: [`Requests`] for the server, [`Queue`] for the model's thread. A query not
/// answered within `deadline` fails with 503.
pub fn handoff(deadline: Duration) -> (Requests, Queue) {
    let (sender, receiver) = mpsc::sync_channel(QUEUED_QUERIES);
    (Requests { sender, deadline }, Queue { receiver })
}

/// The server's end.
pub struct Requests {
    sender: SyncSender<Pending>,
    deadline: Duration,
}

/// The model's thread's end.
pub struct Queue {
    receiver: Receiver<Pending>,
}

impl Queue {
    /// Answers every query waiting now, without waiting for more; returns how many. Call it
    /// between two batches of events, often enough (every 100 ms at least) that a scrape is
    /// answered promptly.
    pub fn answer_pending(&self, mut answer: impl FnMut(Query) -> Answer) -> usize {
        let mut answered = 0;
        while let Ok((query, reply)) = self.receiver.try_recv() {
            // The scrape may have given up (past its deadline): nothing to do then.
            let _ = reply.send(answer(query));
            answered += 1;
        }
        answered
    }
}

impl Requests {
    fn ask(&self, query: Query) -> Result<Answer, Unavailable> {
        let (reply, answer) = mpsc::channel();
        self.sender
            .try_send((query, reply))
            .map_err(|error| match error {
                TrySendError::Full(_) => Unavailable(format!(
                    "the agent is busy: {QUEUED_QUERIES} scrapes are waiting already"
                )),
                TrySendError::Disconnected(_) => Unavailable("the agent has stopped".into()),
            })?;
        match answer.recv_timeout(self.deadline) {
            Ok(Answer::Unavailable(why)) => Err(why),
            Ok(answer) => Ok(answer),
            Err(RecvTimeoutError::Timeout) => Err(Unavailable(format!(
                "the agent did not answer within {} s",
                self.deadline.as_secs_f64()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(Unavailable("the agent has stopped".into())),
        }
    }

    fn profile(&self, query: Query) -> Result<Vec<u8>, Unavailable> {
        match self.ask(query)? {
            Answer::Profile(work) => work(),
            _ => Err(Unavailable(format!(
                "the agent answered {query:?} with something else"
            ))),
        }
    }
}

impl Scrape for Requests {
    fn metrics(&self) -> Result<MetricsInput, Unavailable> {
        match self.ask(Query::Metrics)? {
            Answer::Metrics(input) => Ok(input),
            _ => Err(Unavailable(
                "the agent answered Metrics with something else".into(),
            )),
        }
    }

    fn heap_profile(&self) -> Result<Vec<u8>, Unavailable> {
        self.profile(Query::HeapProfile)
    }

    fn allocs_profile(&self) -> Result<Vec<u8>, Unavailable> {
        self.profile(Query::AllocsProfile)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        thread,
        time::Instant,
    };

    use super::*;

    /// A model's thread: answers what is queued every 10 ms until told to stop.
    fn model_thread(queue: Queue, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
        thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                answered += queue.answer_pending(|query| match query {
                    Query::Metrics => Answer::Metrics(MetricsInput {
                        events: 42,
                        ..MetricsInput::default()
                    }),
                    Query::HeapProfile => {
                        // Built on the model's thread, encoded on the server's.
                        let built = vec![1u8, 2, 3];
                        let model = thread::current().id();
                        Answer::Profile(Box::new(move || {
                            assert_ne!(thread::current().id(), model);
                            Ok(built)
                        }))
                    }
                    Query::AllocsProfile => {
                        Answer::Unavailable(Unavailable("no call stacks sampled".into()))
                    }
                });
                thread::sleep(Duration::from_millis(10));
            }
            answered
        })
    }

    #[test]
    fn queries_are_answered_by_the_models_thread() {
        let (requests, queue) = handoff(Duration::from_secs(5));
        let stop = Arc::new(AtomicBool::new(false));
        let model = model_thread(queue, Arc::clone(&stop));
        assert_eq!(requests.metrics().unwrap().events, 42);
        assert_eq!(requests.heap_profile().unwrap(), [1, 2, 3]);
        assert_eq!(
            requests.allocs_profile().unwrap_err(),
            Unavailable("no call stacks sampled".into())
        );
        // Many scrapers at once: each gets its own answer.
        let requests = Arc::new(requests);
        let scrapers: Vec<_> = (0..QUEUED_QUERIES)
            .map(|_| {
                let requests = Arc::clone(&requests);
                thread::spawn(move || requests.metrics().map(|input| input.events))
            })
            .collect();
        for scraper in scrapers {
            assert_eq!(scraper.join().unwrap(), Ok(42));
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(model.join().unwrap(), 3 + QUEUED_QUERIES);
    }

    #[test]
    fn a_model_that_does_not_answer_fails_the_scrape_at_the_deadline_and_then_when_full() {
        let (requests, queue) = handoff(Duration::from_millis(200));
        let started = Instant::now();
        let error = requests.metrics().unwrap_err();
        let waited = started.elapsed();
        assert!(error.0.contains("did not answer within 0.2 s"), "{error}");
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2));
        // The unanswered queries stay queued; past QUEUED_QUERIES, a scrape is refused at once.
        for _ in 1..QUEUED_QUERIES {
            requests.metrics().unwrap_err();
        }
        let started = Instant::now();
        let error = requests.metrics().unwrap_err();
        assert!(error.0.contains("busy"), "{error}");
        assert!(started.elapsed() < Duration::from_millis(100));
        // The model's thread comes back: late answers to given-up scrapes go nowhere.
        assert_eq!(
            queue.answer_pending(|_| Answer::Metrics(MetricsInput::default())),
            QUEUED_QUERIES
        );
        drop(queue);
        assert_eq!(requests.metrics().unwrap_err().0, "the agent has stopped");
    }
}
