//! The byte format on a worker's two pipes; `ferropool/_process_worker.py` is the
//! other side and must agree with every constant here.
//!
//! Each pipe carries a stream of entries: a fixed little-endian header, then a payload.
//! - parent to worker: `kind: u8, length: u64`, then a pickle. TASK carries
//!   `(fn, args, kwargs)`; STOP (empty) asks the worker to exit once it has answered
//!   everything before it.
//! - worker to parent: `status: u8, elapsed_us: u32, length: u64`, then a pickle. OK and
//!   ERR answer the tasks in the order they were sent (ERR carries the exception, which
//!   unpickles with its remote traceback as `__cause__`); INIT_FAILED carries the
//!   initializer's exception; BYE says the worker exits normally (after STOP or after
//!   `max_tasks_per_child` tasks). `elapsed_us` is how long the task took in the worker.
//!   RETURNED (empty) answers a task that the worker hands back unstarted: after a task
//!   that ran long, a worker does not start the tasks queued behind it in its pipe, so
//!   that they go to whichever worker frees up first, or can still be cancelled.

use std::ops::Range;

pub(crate) const TASK: u8 = 1;
pub(crate) const STOP: u8 = 2;
pub(crate) const TASK_HEADER: usize = 9;

pub(crate) const OK: u8 = 1;
pub(crate) const ERR: u8 = 2;
pub(crate) const INIT_FAILED: u8 = 3;
pub(crate) const BYE: u8 = 4;
pub(crate) const RETURNED: u8 = 5;
pub(crate) const RESULT_HEADER: usize = 13;

/// A TASK entry around `payload`, ready to be written.
pub(crate) fn task(payload: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(TASK_HEADER + payload.len());
    entry.push(TASK);
    entry.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    entry.extend_from_slice(payload);
    entry
}

pub(crate) fn stop() -> Vec<u8> {
    let mut entry = vec![STOP];
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry
}

/// One entry from a worker; `payload` indexes the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u8,
    pub(crate) elapsed_us: u32,
    pub(crate) payload: Range<usize>,
}

/// The stream from a worker broke the format: the worker cannot be trusted any more.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Garbled;

/// The complete entries at the start of `buf`, and where the first incomplete one
/// starts. `wanted` is set to the size the buffer must reach to complete it, when known.
pub(crate) fn parse_replies(
    buf: &[u8],
    replies: &mut Vec<Reply>,
    wanted: &mut usize,
) -> Result<usize, Garbled> {
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RESULT_HEADER) else {
            *wanted = at + RESULT_HEADER;
            return Ok(at);
        };
        let status = header[0];
        if !matches!(status, OK | ERR | INIT_FAILED | BYE | RETURNED) {
            return Err(Garbled);
        }
        let elapsed_us = u32::from_le_bytes(header[1..5].try_into().map_err(|_| Garbled)?);
        let length = u64::from_le_bytes(header[5..13].try_into().map_err(|_| Garbled)?);
        let length = usize::try_from(length).map_err(|_| Garbled)?;
        let start = at + RESULT_HEADER;
        let end = start.checked_add(length).ok_or(Garbled)?;
        if end > buf.len() {
            *wanted = end;
            return Ok(at);
        }
        replies.push(Reply {
            status,
            elapsed_us,
            payload: start..end,
        });
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u8, elapsed: u32, payload: &[u8]) -> Vec<u8> {
        let mut entry = vec![status];
        entry.extend_from_slice(&elapsed.to_le_bytes());
        entry.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        entry.extend_from_slice(payload);
        entry
    }

    #[test]
    fn a_task_entry_is_header_then_payload() {
        let entry = task(b"abc");
        assert_eq!(entry[0], TASK);
        assert_eq!(&entry[1..9], &3u64.to_le_bytes());
        assert_eq!(&entry[9..], b"abc");
        assert_eq!(stop(), [STOP, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn complete_replies_are_parsed_and_a_partial_one_waits() {
        let mut stream = reply(OK, 7, b"one");
        stream.extend(reply(ERR, 9, b"second"));
        let partial = reply(OK, 1, b"third");
        stream.extend(&partial[..partial.len() - 2]);
        let (mut replies, mut wanted) = (Vec::new(), 0);
        let consumed = parse_replies(&stream, &mut replies, &mut wanted).unwrap();
        assert_eq!(consumed, 16 + 19);
        assert_eq!(wanted, consumed + partial.len());
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].status, OK);
        assert_eq!(replies[0].elapsed_us, 7);
        assert_eq!(&stream[replies[1].payload.clone()], b"second");
    }

    #[test]
    fn a_short_header_waits_and_garbage_is_refused() {
        let (mut replies, mut wanted) = (Vec::new(), 0);
        assert_eq!(parse_replies(&[OK, 0, 0], &mut replies, &mut wanted), Ok(0));
        assert_eq!(wanted, RESULT_HEADER);
        assert_eq!(
            parse_replies(&reply(99, 0, b""), &mut replies, &mut wanted),
            Err(Garbled)
        );
        let mut huge = reply(OK, 0, b"");
        huge[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            parse_replies(&huge, &mut replies, &mut wanted),
            Err(Garbled)
        );
    }
}
