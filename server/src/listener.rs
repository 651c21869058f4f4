//! A listener that bounds open connections. HTTP/1.1 allows one request in flight per connection,
//! so clients facing a slow server open more connections: bounding them bounds the work waiting for
//! CPU. A connection over the bound gets an immediate 503 with `Retry-After` and is closed.
//!
//! Accepting runs on a thread of its own: when every event-loop thread is busy scanning, new
//! connections are still accepted (or refused) at once, instead of waiting behind the busy
//! connections in the event loop's queue while the kernel's backlog overflows.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// At most `max` accepted connections are open at once; the rest are refused on the accept thread.
pub struct Bounded {
    local: SocketAddr,
    accepted: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Bounded {
    /// Move `inner` to an accept thread. The thread ends when this listener is dropped.
    pub fn new(inner: TcpListener, max: usize, retry_after_secs: u32) -> io::Result<Bounded> {
        let body =
            r#"{"error":{"code":"overloaded","message":"too many open connections; retry later"}}"#;
        let refusal = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {retry_after_secs}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        let local = inner.local_addr()?;
        let std_listener = inner.into_std()?;
        let open = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        // Enough to absorb a burst while the event loop picks connections up.
        let (tx, accepted) = mpsc::channel(256);
        let (o, r, max) = (open.clone(), refused.clone(), max.max(1));
        std::thread::Builder::new()
            .name("featherguard-accept".into())
            .spawn(move || accept_loop(std_listener, tx, o, r, max, refusal))?;
        Ok(Bounded {
            local,
            accepted,
            open,
            refused,
        })
    }

    /// Connections open now and connections refused so far (shared counters, for metrics).
    pub fn counters(&self) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
        (self.open.clone(), self.refused.clone())
    }
}

fn accept_loop(
    listener: std::net::TcpListener,
    tx: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    max: usize,
    refusal: Vec<u8>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "cannot start the accept thread"),
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "cannot listen"),
        };
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (stream, addr) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let admitted = open.fetch_add(1, Ordering::Relaxed) < max;
            // A full hand-over queue means the event loop cannot even pick connections up: refuse
            // rather than stop accepting (the kernel would then drop SYNs, and clients wait seconds).
            let refuse = if !admitted {
                Some(stream)
            } else {
                match tx.try_send((stream, addr)) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full((s, _))) => Some(s),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            if let Some(mut s) = refuse {
                open.fetch_sub(1, Ordering::Relaxed);
                refused.fetch_add(1, Ordering::Relaxed);
                // A fresh socket's send buffer takes these few hundred bytes without blocking.
                let _ = s.write_all(&refusal);
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    });
}

/// An accepted connection; leaving scope frees its place.
pub struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, addr)) = self.accepted.recv().await else {
                // The accept thread is gone: nothing will ever be accepted again.
                std::future::pending::<()>().await;
                continue;
            };
            let registered = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            match registered {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Counted {
                            stream,
                            open: self.open.clone(),
                        },
                        addr,
                    );
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot register a connection");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
