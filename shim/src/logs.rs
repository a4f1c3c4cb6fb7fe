//! A function's log: the last lines its calls wrote to stderr (WASI commands) and the errors
//! of its failed calls, each with the call's id and time, in a ring of bounded size. It lives
//! in the serving process, so it outlives an engine restart (not its task's).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmengine_api::invoke::{LogLine, MAX_LOG_LINE};

pub struct Logs {
    lines: Mutex<VecDeque<LogLine>>,
    keep: usize,
}

impl Logs {
    pub fn new(keep: usize) -> Logs {
        Logs {
            lines: Mutex::new(VecDeque::new()),
            keep,
        }
    }

    /// Adds `text` line by line (a line longer than [`MAX_LOG_LINE`] is cut), dropping the
    /// oldest lines beyond the ring's size.
    pub fn push(&self, call_id: &str, text: &str) {
        if self.keep == 0 {
            return;
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut lines = self.lines.lock().unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut end = line.len().min(MAX_LOG_LINE);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            if lines.len() == self.keep {
                lines.pop_front();
            }
            lines.push_back(LogLine {
                time_ms,
                call_id: call_id.to_string(),
                text: line[..end].to_string(),
            });
        }
    }

    /// The last `n` lines (all with `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap();
        let skip = n.map_or(0, |n| lines.len().saturating_sub(n));
        lines.iter().skip(skip).cloned().collect()
    }

    /// The answer to a logs request.
    pub fn answer(&self, path: &str) -> (u16, &'static str, Vec<u8>) {
        let tail = self.tail(wasmengine_api::invoke::tail_param(path));
        (
            200,
            "application/json",
            serde_json::to_vec(&tail).expect("serialises"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_cut_to_size() {
        let logs = Logs::new(3);
        logs.push("a", "one\ntwo\n\n");
        logs.push(
            "b",
            &format!("three\n{}\nfive", "x".repeat(MAX_LOG_LINE + 10)),
        );
        let all = logs.tail(None);
        let texts: Vec<&str> = all.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.len(), 3);
        assert_eq!(texts[0], "three");
        assert_eq!(texts[1].len(), MAX_LOG_LINE);
        assert_eq!(texts[2], "five");
        assert!(all.iter().all(|l| l.call_id == "b"));
        assert_eq!(logs.tail(Some(1))[0].text, "five");
        assert_eq!(logs.tail(Some(10)).len(), 3);
        let none = Logs::new(0);
        none.push("c", "dropped");
        assert!(none.tail(None).is_empty());
    }
}
