//! Data answers in flight: the memory budget they reserve against, the bound per client, and
//! the cut of answers whose client stopped taking them.
//!
//! Every data call (HTTP rows, preview and download; Flight `DoGet`) is admitted here before
//! its source is opened, and counts against `[server] max_answers_per_client` for its client
//! address. It reserves room in `[server] answer_memory_bytes`: an answer that always streams (a
//! download, a Flight stream) [`ANSWER_RESERVE_BYTES`] (what its buffers can hold at most:
//! readers are pulled a step at a time and steps are bounded in bytes, see [`crate::source`]);
//! rows and previews [`ANSWER_BASE_BYTES`] (room for a small answer encoded whole in memory),
//! grown to a streamed answer's room before the first byte if theirs turns out to stream.
//! Streamed answers together may hold at most three quarters of the budget, so that however many
//! long downloads and slow readers there are, small answers still find room. When there is no room a call waits up to `answer_wait_ms`, then gets 503 `overloaded`; a
//! client past its bound gets 429 `too_many_answers` at once. Both carry `Retry-After` and are
//! counted in `kaifang_overload_refusals_total`.
//!
//! An admitted answer's body is wrapped by [`AnswerSlot::answer`]: the reservation is held until
//! the body ends or is dropped, and an answer whose client asks for nothing more for
//! `stalled_answer_seconds` after it was handed a piece (an HTTP/2 stream whose window stays at
//! zero, a Flight client that stopped reading) is cut: its source, buffers and reservation are
//! dropped at once. A socket that takes no bytes for as long is closed by the connection itself
//! ([`crate::connection`]).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::Stream;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::error::{Error, Kind};
use crate::metrics::Metrics;
use crate::source::{Pieces, MAX_STEP_BYTES};

/// What one answer may hold at most: a read step ahead, one being decoded, its encoded piece,
/// the connection's send buffer, and the reader's own buffers. Measured at 3 to 4 MiB for a
/// stalled CSV answer (tests/e2e/overload.rs); reserved with a margin.
pub const ANSWER_RESERVE_BYTES: u64 = 8 * MAX_STEP_BYTES as u64;

/// What every answer reserves when it is admitted: a small answer from memory encoded whole (at
/// most a step's bytes) and its compressed copy.
pub const ANSWER_BASE_BYTES: u64 = 2 * MAX_STEP_BYTES as u64;

/// The share of the budget that streamed answers may hold between them, in quarters.
const STREAMED_QUARTERS: usize = 3;

/// The smallest budget: room for one streamed answer within the streamed answers' share.
pub const MIN_ANSWER_MEMORY_BYTES: u64 = 2 * ANSWER_RESERVE_BYTES;

/// The budget is counted in KiB, so that any budget fits a semaphore's permits.
const UNIT: u64 = 1024;

/// The answers in flight on this instance.
#[derive(Clone)]
pub struct Answers(Arc<Inner>);

struct Inner {
    budget: Arc<Semaphore>,
    /// The streamed answers' share of the budget: each takes its whole room from it, and what
    /// it holds past the base from `budget` as well.
    streamed: Arc<Semaphore>,
    /// The budget's size, in units.
    capacity: usize,
    per_client: DashMap<IpAddr, usize>,
    max_per_client: usize,
    wait: Duration,
    stall: Duration,
    in_flight: IntGauge,
    reserved: IntGauge,
    refusals: IntCounterVec,
    stalled: IntCounterVec,
}

impl Answers {
    pub fn new(server: &ServerConfig, metrics: &Metrics) -> Answers {
        let units = (server.answer_memory_bytes / UNIT).min(Semaphore::MAX_PERMITS as u64) as usize;
        Answers(Arc::new(Inner {
            budget: Arc::new(Semaphore::new(units)),
            streamed: Arc::new(Semaphore::new(units / 4 * STREAMED_QUARTERS)),
            capacity: units,
            per_client: DashMap::new(),
            max_per_client: server.max_answers_per_client,
            wait: Duration::from_millis(server.answer_wait_ms),
            stall: Duration::from_secs(server.stalled_answer_seconds),
            in_flight: metrics.answers_in_flight.clone(),
            reserved: metrics.answer_memory_reserved.clone(),
            refusals: metrics.overload_refusals.clone(),
            stalled: metrics.stalled_answers.clone(),
        }))
    }

    /// Admits an answer for `client` on `protocol` (`http`, `flight`), with a streamed answer's
    /// room if it `streams` (see [`AnswerSlot::streamed`]), or refuses it: 429 when the client
    /// has its bound of answers in flight, 503 when the memory budget stays full.
    pub async fn admit(&self, client: IpAddr, protocol: &'static str, streams: bool) -> Result<AnswerSlot, Error> {
        let inner = &self.0;
        {
            let mut count = inner.per_client.entry(client).or_insert(0);
            if *count >= inner.max_per_client {
                drop(count);
                inner.refusals.with_label_values(&[protocol, "client_answers"]).inc();
                return Err(retry_later(Error::new(
                    Kind::TooManyRequests,
                    "too_many_answers",
                    format!(
                        "this address has {} answers in flight, the most it may; finish reading them first",
                        inner.max_per_client
                    ),
                )));
            }
            *count += 1;
        }
        // From here the client's count is given back by the slot, or below.
        let room = match streams {
            true => self.0.streamed_room(ANSWER_RESERVE_BYTES, protocol).await.map(|(share, room)| (room, Some(share))),
            false => self.reserve(ANSWER_BASE_BYTES, protocol).await.map(|room| (room, None)),
        };
        let (reservation, share) = match room {
            Ok(room) => room,
            Err(e) => {
                release_client(&inner.per_client, client);
                return Err(e);
            }
        };
        inner.in_flight.inc();
        let streamed = share.map(|share| (share, None));
        Ok(AnswerSlot { answers: self.0.clone(), client, protocol, _reservation: reservation, streamed })
    }

    /// The whole budget, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.0.capacity as u64 * UNIT
    }

    /// Reserves `bytes` of the budget (an answer's buffers, or a dataset being decoded into the
    /// cache), waiting up to `answer_wait_ms`; 503 `overloaded` past it, counted under `what`.
    /// More than the whole budget is refused at once.
    pub async fn reserve(&self, bytes: u64, what: &'static str) -> Result<Reservation, Error> {
        let inner = &self.0;
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        if units as usize > inner.capacity {
            return Err(Error::new(
                Kind::Unavailable,
                "exceeds_memory_budget",
                format!("{bytes} bytes is more than the whole memory budget"),
            ));
        }
        let deadline = Instant::now() + inner.wait;
        let permit = inner.acquire(&inner.budget, units, deadline, what).await?;
        inner.reserved.add(bytes as i64);
        Ok(Reservation { _permit: permit, bytes, reserved: inner.reserved.clone() })
    }
}

impl Inner {
    /// A streamed answer's place in the streamed answers' share, and `bytes` of the budget.
    async fn streamed_room(
        &self,
        bytes: u64,
        what: &'static str,
    ) -> Result<(OwnedSemaphorePermit, Reservation), Error> {
        let units = |bytes: u64| u32::try_from(bytes.div_ceil(UNIT)).expect("a few MiB");
        let deadline = Instant::now() + self.wait;
        let share = self.acquire(&self.streamed, units(ANSWER_RESERVE_BYTES), deadline, what).await?;
        let room = self.acquire(&self.budget, units(bytes), deadline, what).await?;
        self.reserved.add(bytes as i64);
        Ok((share, Reservation { _permit: room, bytes, reserved: self.reserved.clone() }))
    }

    /// `units` of `semaphore`, waiting until `deadline`; 503 `overloaded` past it, counted
    /// under `what`.
    async fn acquire(
        &self,
        semaphore: &Arc<Semaphore>,
        units: u32,
        deadline: Instant,
        what: &'static str,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let permit = match semaphore.clone().try_acquire_many_owned(units) {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout_at(deadline, semaphore.clone().acquire_many_owned(units))
                .await
                .ok()
                .and_then(Result::ok),
        };
        permit.ok_or_else(|| {
            self.refusals.with_label_values(&[what, "memory_budget"]).inc();
            retry_later(Error::new(
                Kind::Unavailable,
                "overloaded",
                "the gateway's memory budget for work in flight is full; retry shortly",
            ))
        })
    }
}

/// Bytes of the budget held by work in flight, given back when dropped.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    reserved: IntGauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.sub(self.bytes as i64);
    }
}

fn retry_later(mut error: Error) -> Error {
    error.headers.push(("retry-after", "1".into()));
    error
}

fn release_client(per_client: &DashMap<IpAddr, usize>, client: IpAddr) {
    per_client.remove_if_mut(&client, |_, count| {
        *count -= 1;
        *count == 0
    });
}

/// An admitted answer's place in the budget, given back when dropped.
pub struct AnswerSlot {
    answers: Arc<Inner>,
    client: IpAddr,
    protocol: &'static str,
    _reservation: Reservation,
    /// A streamed answer's place in the streamed answers' share, and the room it took past the
    /// base if it grew to stream.
    streamed: Option<(OwnedSemaphorePermit, Option<Reservation>)>,
}

impl Drop for AnswerSlot {
    fn drop(&mut self) {
        release_client(&self.answers.per_client, self.client);
        self.answers.in_flight.dec();
    }
}

impl AnswerSlot {
    /// Grows the slot's room to what a streamed answer holds ([`ANSWER_RESERVE_BYTES`]), within
    /// the streamed answers' share of the budget: waits up to `answer_wait_ms` for it, then 503
    /// `overloaded`.
    pub async fn streamed(&mut self) -> Result<(), Error> {
        if self.streamed.is_some() {
            return Ok(());
        }
        let (share, room) = self.answers.streamed_room(ANSWER_RESERVE_BYTES - ANSWER_BASE_BYTES, self.protocol).await?;
        self.streamed = Some((share, Some(room)));
        Ok(())
    }

    /// The answer's body, holding this slot until it ends or is dropped, and cut if its client
    /// asks for nothing for `stalled_answer_seconds` after being handed a piece.
    pub fn answer<T: Send + 'static>(self, body: Pieces<T>) -> Pieces<T> {
        let stall = self.answers.stall;
        let counter = self.answers.stalled.with_label_values(&[self.protocol, "stream"]);
        let shared = Arc::new(Mutex::new(Watched {
            body: Some(body),
            slot: Some(self),
            handed_at: Some(Instant::now()),
            cut: false,
        }));
        let (ended, ending) = tokio::sync::oneshot::channel();
        tokio::spawn(watch(shared.clone(), stall, counter, ending));
        Box::pin(Answer { shared, _ended: ended })
    }
}

/// An answer's body and what the watch needs to know of it.
struct Watched<T> {
    body: Option<Pieces<T>>,
    slot: Option<AnswerSlot>,
    /// When the client was last handed a piece, while it has not asked for the next.
    handed_at: Option<Instant>,
    /// Cut for stalling; the client learns it if it ever asks again.
    cut: bool,
}

struct Answer<T> {
    shared: Arc<Mutex<Watched<T>>>,
    /// Dropped with the answer, which ends its watch.
    _ended: tokio::sync::oneshot::Sender<()>,
}

impl<T> Stream for Answer<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut watched = self.shared.lock().expect("answer lock");
        watched.handed_at = None;
        if std::mem::take(&mut watched.cut) {
            return Poll::Ready(Some(Err(stalled_error())));
        }
        let Some(body) = watched.body.as_mut() else { return Poll::Ready(None) };
        let polled = body.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(_)) => watched.handed_at = Some(Instant::now()),
            Poll::Ready(None) => {
                watched.body = None;
                watched.slot = None;
            }
            Poll::Pending => {}
        }
        polled
    }
}

fn stalled_error() -> Error {
    Error::new(Kind::Unavailable, "answer_stalled", "the answer was cut: the client took nothing for too long")
}

/// Cuts the answer if its client has been handed a piece and asked for nothing more for `stall`.
async fn watch<T>(
    shared: Arc<Mutex<Watched<T>>>,
    stall: Duration,
    counter: IntCounter,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        // A body being polled right now is not stalled.
        let handed_at = shared.try_lock().ok().and_then(|w| w.handed_at);
        let deadline = handed_at.unwrap_or_else(Instant::now) + stall;
        tokio::select! {
            _ = &mut ended => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        let Ok(mut watched) = shared.try_lock() else { continue };
        if watched.body.is_none() {
            return;
        }
        if watched.handed_at.is_some_and(|at| at.elapsed() >= stall) {
            let body = watched.body.take();
            let slot = watched.slot.take();
            watched.cut = true;
            drop(watched);
            // Dropping the body ends its source and writes its audit completion.
            drop(body);
            drop(slot);
            counter.inc();
            tracing::warn!(stalled_seconds = stall.as_secs(), "answer cut: its client took nothing");
            return;
        }
    }
}
