//! Host name resolution for targets like `app.internal:8000`, through the system resolver as
//! nginx uses it at startup (`getaddrinfo`), a few names at a time, with a deadline.
//!
//! `getaddrinfo` cannot be cancelled, so each lookup runs on a detached thread and a lookup
//! still running at the deadline is reported as unresolvable; its thread ends on its own.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most lookups running at once.
const MAX_THREADS: usize = 16;

/// The addresses of a name, or why there are none.
pub type Resolved = Result<Vec<SocketAddr>, String>;

/// Resolve every `(name, port)`, in order, within `deadline` in total.
pub fn resolve_all(names: &[(String, u16)], deadline: Duration) -> Vec<Resolved> {
    let mut results: Vec<Option<Resolved>> = vec![None; names.len()];
    if names.is_empty() {
        return Vec::new();
    }
    let queue: Arc<Mutex<VecDeque<(usize, String, u16)>>> = Arc::new(Mutex::new(
        names
            .iter()
            .enumerate()
            .map(|(i, (n, p))| (i, n.clone(), *p))
            .collect(),
    ));
    let (tx, rx) = mpsc::channel();
    for _ in 0..names.len().min(MAX_THREADS) {
        let queue = Arc::clone(&queue);
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || worker(&queue, &tx));
        if spawned.is_err() {
            break;
        }
    }
    drop(tx);
    let end = Instant::now() + deadline;
    let mut left = names.len();
    while left > 0 {
        let wait = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((i, r)) => {
                results[i] = Some(r);
                left -= 1;
            }
            Err(_) => break,
        }
    }
    let waited = humantime::format_duration(deadline).to_string();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(format!("no answer from the resolver within {waited}"))))
        .collect()
}

fn worker(queue: &Mutex<VecDeque<(usize, String, u16)>>, tx: &mpsc::Sender<(usize, Resolved)>) {
    loop {
        let job = match queue.lock() {
            Ok(mut q) => q.pop_front(),
            Err(_) => None,
        };
        let Some((i, name, port)) = job else {
            return;
        };
        let result = (name.as_str(), port)
            .to_socket_addrs()
            .map(|it| {
                let mut v: Vec<SocketAddr> = it.collect();
                v.sort();
                v.dedup();
                v
            })
            .map_err(|e| e.to_string())
            .and_then(|v| {
                if v.is_empty() {
                    Err("the name has no addresses".to_string())
                } else {
                    Ok(v)
                }
            });
        if tx.send((i, result)).is_err() {
            return;
        }
    }
}
